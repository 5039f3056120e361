"""Batch scoring to a file: ``apexmusic predict INPUT...`` and ``predict --embeddings STORE``.

- :func:`predict_inputs` scores audio through a :class:`Predictor`: resumable, rows written as
  they come, failures logged to ``<out>.failures.jsonl``. The Ray engine
  (``apexmusic.distributed.predict_inputs_ray``) runs the same :class:`PredictRun`.
- :func:`score_store` re-scores an embedding store without touching audio, shard by shard in
  large batches, under the model's pooling rule.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from apexmusic.devices import PRECISIONS
from apexmusic.errors import ConfigError
from apexmusic.predict.predictor import DEFAULT_MC_SAMPLES, Predictor
from apexmusic.predict.results import Prediction
from apexmusic.predict.writers import DIGITS, OutputWriter, open_writer
from apexmusic.sources import Song
from apexmusic.store import EmbeddingSpec, EmbeddingStore, Failure

log = logging.getLogger(__name__)

ProgressFn = Callable[[int], None]
SEGMENTS_PER_SONG = 8  # a typical song in 30 s segments, for sizing store-scoring batches


@dataclass
class PredictConfig:
    """Settings of one ``apexmusic predict`` run (CLI flags map one to one)."""

    weights: str | None = None  # encoder weights overriding the model's recorded source
    device: str = "auto"
    precision: str = "auto"  # the encoder's; fp32 reproduces the published pipeline bit for bit
    batch_size: int = 8  # songs per model call and per output flush
    mc_samples: int = DEFAULT_MC_SAMPLES
    resume: bool = False
    max_seconds: float | None = None
    full_precision: bool = False  # JSONL/CSV floats in full instead of DIGITS significant digits

    def __post_init__(self) -> None:
        if int(self.batch_size) < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if int(self.mc_samples) < 0:
            raise ConfigError(f"mc_samples must be 0 or more, got {self.mc_samples}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError(f"max_seconds must be positive, got {self.max_seconds}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise ConfigError(f"unknown device {self.device!r}; use auto, cpu or cuda[:N]")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def load_predictor(self, model_dir: str | Path) -> Predictor:
        """The Predictor for ``model_dir`` under these settings."""
        return Predictor.from_pretrained(
            model_dir,
            weights=self.weights,
            device=self.device,
            precision=self.precision,
            mc_samples=self.mc_samples,
            max_seconds=self.max_seconds,
        )


@dataclass
class PredictReport:
    n_done: int = 0
    n_failed: int = 0
    n_skipped: int = 0
    wall_seconds: float = 0.0
    out_file: str = ""
    failures_file: str = ""
    failures: list[Failure] = field(default_factory=list)
    model_id: str = ""
    n_out_of_domain: int = 0  # songs scored in this run with in_domain false
    n_domain_checked: int = 0  # songs scored in this run that the domain alarm judged
    not_served: tuple[str, ...] = ()  # tasks written as empty (too few labelled songs)


def failures_path(out_file: str | Path) -> Path:
    out_file = Path(out_file)
    return out_file.with_name(out_file.name + ".failures.jsonl")


class FailureLog:
    """``<out>.failures.jsonl``: one JSON line per failed input, flushed as it happens."""

    def __init__(self, path: Path, append: bool):
        self.path = path
        if not append and path.exists():
            path.unlink()

    def write(self, failure: Failure) -> None:
        failure.append_to(self.path)


@dataclass
class PredictRun:
    """One scoring run into an output file, whichever engine embeds the songs.

    ``todo`` are the songs an earlier run has not written; ``add`` buffers rows and writes them
    ``batch_size`` at a time, ``fail`` logs a failure; :func:`finish_predict_run` closes it.
    """

    writer: OutputWriter
    todo: list[Song]
    report: PredictReport
    fail_log: FailureLog
    batch_size: int
    started: float
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, predictions: Sequence[Prediction]) -> None:
        for p in predictions:
            self.rows.append(p.to_row())
            self.report.model_id = p.model_id
            self.report.not_served = tuple(t for t, v in p.scores.items() if v is None)
            if p.in_domain is not None:
                self.report.n_domain_checked += 1
                self.report.n_out_of_domain += not p.in_domain
        if len(self.rows) >= self.batch_size:
            self._flush()

    def fail(self, failure: Failure) -> None:
        self.fail_log.write(failure)
        self.report.failures.append(failure)

    def _flush(self) -> None:
        if self.rows:
            self.writer.write_rows(self.rows)
            self.report.n_done += len(self.rows)
            self.rows = []


def start_predict_run(
    songs: Sequence[Song],
    out_file: str | Path,
    config: PredictConfig,
    on_progress: ProgressFn | None = None,
    started: float | None = None,
) -> PredictRun:
    """Open ``out_file`` for a scoring run; songs an earlier run already wrote are skipped (and
    reported as progress). Without ``config.resume`` an existing file is a ConfigError."""
    writer = open_writer(out_file, resume=config.resume, digits=None if config.full_precision else DIGITS)
    done = writer.done_ids()
    todo = [s for s in songs if s.id not in done]
    report = PredictReport(
        n_skipped=len(songs) - len(todo), out_file=str(out_file), failures_file=str(failures_path(out_file))
    )
    if on_progress and report.n_skipped:
        on_progress(report.n_skipped)
    fail_log = FailureLog(failures_path(out_file), append=config.resume)
    started = time.perf_counter() if started is None else started
    return PredictRun(writer, todo, report, fail_log, int(config.batch_size), started)


def finish_predict_run(run: PredictRun) -> PredictReport:
    """Write the rows still buffered, close the output and complete the report."""
    try:
        run._flush()
    finally:
        run.writer.close()
    run.report.n_failed = len(run.report.failures)
    run.report.wall_seconds = time.perf_counter() - run.started
    return run.report


def predict_inputs(
    songs: Sequence[Song],
    model_dir: str | Path,
    out_file: str | Path,
    config: PredictConfig | None = None,
    on_progress: ProgressFn | None = None,
    predictor: Predictor | None = None,
) -> PredictReport:
    """Score ``songs`` into ``out_file``; failures go to ``<out_file>.failures.jsonl``.

    With ``config.resume`` ids already in ``out_file`` are skipped and new rows appended;
    without it an existing ``out_file`` is a ConfigError (never silently overwritten).
    """
    config = config or PredictConfig()
    run = start_predict_run(songs, out_file, config, on_progress)
    try:
        if run.todo:
            predictor = predictor or config.load_predictor(model_dir)
            for result in predictor.iter_predict(run.todo, config.batch_size, on_progress=on_progress):
                if isinstance(result, Failure):
                    run.fail(result)
                else:
                    run.add([result])
    finally:
        report = finish_predict_run(run)
    return report


# ---- scoring an embedding store (apexmusic predict --embeddings STORE) ----------------------


@dataclass
class StoreScoreReport:
    n_rows: int
    wall_seconds: float
    out_file: str
    model_id: str = ""
    n_out_of_domain: int = 0
    n_domain_checked: int = 0
    not_served: tuple[str, ...] = ()


def score_store(
    store_dir: str | Path,
    model_dir: str | Path,
    out_file: str | Path,
    batch_size: int = 65536,
    on_progress: ProgressFn | None = None,
    model: Any | None = None,
    full_precision: bool = False,
) -> StoreScoreReport:
    """Write ``id, path``, the model's scores and their trust fields for every song of an
    embedding store: the same columns as :meth:`Prediction.to_row` without the MC-dropout
    spread (``<task>`` null when not served, ``<task>_lo``/``_hi``, ``interval_level``,
    ``in_domain``, ``domain_distance``, ``model_id``, ``simulated_training_data``).

    The store's spec must be compatible with the model's (the one rule, see
    :func:`~apexmusic.store.check_compatible`). Songs are scored under the model's pooling
    rule: a segment-mode model reads and scores every song's segments. Reads the store shard
    by shard in ``batch_size`` rows (bounded memory) and never opens audio. The output is
    rewritten whole (written to a temporary file, then renamed). JSONL and CSV floats have
    ``DIGITS`` significant digits unless ``full_precision``.
    """
    from apexmusic.model import ScoringModel, score_songs

    started = time.perf_counter()
    out_file = Path(out_file)
    suffix = out_file.suffix.lower()
    store = EmbeddingStore.open(store_dir)
    spec = store.spec()
    from apexmusic.model import ModelDir

    model = model or ScoringModel.from_pretrained(model_dir)
    model.check_vectors(spec, "the store's vectors")
    trust = ModelDir(model_dir).trust(model_id=model.model_id)
    report = StoreScoreReport(0, 0.0, str(out_file), model_id=str(model.model_id))
    tmp = out_file.with_name(f".{out_file.name}.{uuid.uuid4().hex[:8]}.tmp")
    digits = None if full_precision else DIGITS
    writer = open_writer(tmp, resume=False, overwrite=True, fmt=suffix, digits=digits)
    by_segment = model.pooling == "segment"
    if by_segment:  # a song brings several segment vectors: keep a batch's memory near song mode's
        batch_size = max(1, batch_size // SEGMENTS_PER_SONG)
    try:
        for ids, paths, layers, segments, weights in _iter_store_batches(store, batch_size, spec, by_segment):
            scores = score_songs(model, layers, segments, weights).songs
            columns: dict[str, Any] = {"id": ids, "path": paths}
            columns.update(trust_columns(model, trust, scores, layers, report))
            writer.write_columns(columns)
            report.n_rows += len(ids)
            if on_progress:
                on_progress(len(ids))
        writer.close()
        if not tmp.exists():
            tmp.write_bytes(b"")
        os.replace(tmp, out_file)
    finally:
        if tmp.exists():
            tmp.unlink()
    report.wall_seconds = time.perf_counter() - started
    return report


def trust_columns(
    model: Any, trust: Any, scores: np.ndarray, layers: np.ndarray, report: StoreScoreReport | None = None
) -> dict[str, Any]:
    """Score columns for a batch of songs with their trust fields (see :func:`score_store`);
    a not-served task is an all-null column. ``report`` counts the songs out of domain."""
    import pyarrow as pa

    from apexmusic.model.provenance import is_simulated

    n = len(scores)
    served = trust.served() if trust is not None else tuple(model.tasks)
    columns: dict[str, Any] = {}
    for i, task in enumerate(model.tasks):
        value = np.asarray(scores[:, i], dtype=np.float64)
        columns[task] = value if task in served else pa.nulls(n, pa.float64())
        if trust is not None:
            has = task in served and task in trust.intervals.half_width
            lo, hi = trust.intervals.bounds(task, value) if has else (None, None)
            columns[f"{task}_lo"] = lo if lo is not None else pa.nulls(n, pa.float64())
            columns[f"{task}_hi"] = hi if hi is not None else pa.nulls(n, pa.float64())
    if trust is not None:
        columns["interval_level"] = np.full(n, trust.intervals.level)
        flags = distance = None
        if trust.domain is not None:
            from apexmusic.trust import head_inputs

            distance = trust.domain.distance(head_inputs(model, layers))
            flags = trust.domain.in_domain(distance)
        columns["in_domain"] = pa.array(flags, pa.bool_()) if flags is not None else pa.nulls(n, pa.bool_())
        columns["domain_distance"] = distance if distance is not None else pa.nulls(n, pa.float64())
        if report is not None and flags is not None:
            report.n_domain_checked += n
            report.n_out_of_domain += int((~flags).sum())
    columns["model_id"] = pa.array([str(model.model_id)] * n, pa.string())
    simulated = is_simulated(getattr(model, "provenance", None))
    columns["simulated_training_data"] = pa.array([simulated] * n, pa.bool_())
    if report is not None:
        report.not_served = tuple(t for t in model.tasks if t not in served)
    return columns


def _iter_store_batches(
    store: EmbeddingStore, batch_size: int, spec: EmbeddingSpec, with_segments: bool
) -> Iterator[tuple[Any, Any, np.ndarray, list[np.ndarray] | None, list[np.ndarray] | None]]:
    """``(ids, paths, layers [B, L, D], segments, segment weights)`` per batch of store rows;
    the segments only when asked for (a segment-mode model)."""
    if not store.shards():
        raise ConfigError(f"{store.root} holds no embeddings")
    n_layers, dim = spec.shape
    columns = ["id", "path", "layers"] + (["segments", "segment_weights"] if with_segments else [])
    for batch in store.iter_batches(columns, batch_size):  # StoreError names a damaged shard
        layers = _rows(batch.column(2), n_layers, dim)
        segments = weights = None
        if with_segments:
            weights = [np.asarray(w, np.float32) for w in batch.column(4).to_pylist()]
            flat = _rows(batch.column(3), n_layers, dim)  # all segments of the batch, in order
            segments = np.split(flat, np.cumsum([len(w) for w in weights])[:-1])
        yield batch.column(0), batch.column(1), layers, segments, weights  # ids, paths stay Arrow


def _rows(column: Any, n_layers: int, dim: int) -> np.ndarray:
    """A list<float> column of flattened ``[.., n_layers, dim]`` vectors as ``[rows, L, D]``."""
    flat = column.flatten().to_numpy(zero_copy_only=False)
    rows = flat.astype(np.float32, copy=False).reshape(-1, n_layers, dim)
    return rows if rows.flags.writeable else rows.copy()  # torch wants to own its buffers

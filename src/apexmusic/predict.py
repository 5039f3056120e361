"""Score songs with a trained model: a Python API, batch scoring to files, and store scoring.

Three entry points:

- :class:`Predictor` — ``Predictor.from_pretrained(model_dir)`` loads the scoring model once
  and the encoder its ``encoder_spec`` names; ``.predict(paths_or_arrays)`` returns one
  :class:`Prediction` per input (scores, uncertainty, per-segment timeline, optional tags).
- :func:`predict_inputs` — the ``apexmusic predict INPUT...`` batch job: resumable, writes
  JSONL / CSV / Parquet rows as it goes, and logs failures to ``<out>.failures.jsonl``.
- :func:`score_store` — ``apexmusic predict --embeddings STORE``: re-scores an existing
  embedding store without touching audio, shard by shard in large batches.

Uncertainty is the standard deviation over ``mc_samples`` stochastic forward passes with the
model's dropout layers active (MC dropout, Gal & Ghahramani 2016), as computed by
``ScoringModel.predict_layers(..., mc_samples=K)`` in one seeded call per song, so a song
always gets the same numbers whatever else is in its batch. The reported scores themselves
are the deterministic (dropout off) outputs, so they do not change with ``mc_samples``.
Because the outputs are bounded (sigmoid), inputs extremely far from the training data can
saturate every pass and shrink the spread again; ``novelty`` (the RMS z-score of the input
embedding under the model's own training standardisation, about 1 in range) flags those
independently.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from apexmusic.errors import ApexError, ConfigError
from apexmusic.sources import Song
from apexmusic.store import EmbeddingStore, Failure, SongEmbedding
from apexmusic.tasks import TASKS

log = logging.getLogger(__name__)

DEFAULT_MC_SAMPLES = 16
COMPARATOR_FILE = "comparator.json"
OUTPUT_FORMATS = (".jsonl", ".csv", ".parquet")
N_TOP_TAGS = 3
_SMALL_BATCH = 512  # rows; below this the head runs single-threaded (see _head_threads)

ArrayInput = tuple[np.ndarray, int]
PredictInput = str | os.PathLike | Song | ArrayInput


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass
class Segment:
    """One stretch of the song and the model's scores for it alone."""

    start_s: float
    end_s: float
    scores: dict[str, float]


@dataclass
class Prediction:
    """Scores for one song, in the tasks' natural ranges (0-100 popularity, 1-5 aesthetics)."""

    id: str
    path: str
    scores: dict[str, float]
    uncertainty: dict[str, float]  # task -> MC-dropout standard deviation (0 when mc_samples=0)
    timeline: list[Segment]
    duration_s: float
    model_id: str
    tags: list[tuple[str, float]] | None = None  # top encoder tags and probabilities
    novelty: float | None = None  # RMS z-score of the input vs the training data (~1 in range)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested form (the service's response body)."""
        out = asdict(self)
        out["tags"] = [{"tag": t, "prob": p} for t, p in self.tags] if self.tags else None
        return out

    def to_row(self) -> dict[str, Any]:
        """One flat output row: id, path, scores, ``<task>_std``, model_id, duration_s, tags."""
        row: dict[str, Any] = {"id": self.id, "path": self.path}
        row.update(self.scores)
        row.update({f"{task}_std": std for task, std in self.uncertainty.items()})
        row["model_id"] = self.model_id
        row["duration_s"] = self.duration_s
        if self.novelty is not None:
            row["novelty"] = self.novelty
        if self.tags:
            row["tags"] = format_tags(self.tags)
        return row


@dataclass
class Comparison:
    """How likely listeners are to prefer song A over song B."""

    prob_a: float
    method: str  # "comparator" (arena-trained) or "fallback" (see compare_scores)
    a: Prediction
    b: Prediction

    def to_dict(self) -> dict[str, Any]:
        return {
            "prob_a": self.prob_a,
            "prob_b": 1.0 - self.prob_a,
            "method": self.method,
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
        }


def format_tags(tags: Sequence[tuple[str, float]]) -> str:
    return ";".join(f"{name}={prob:.3f}" for name, prob in tags)


# ---------------------------------------------------------------------------------------------
# Predictor
# ---------------------------------------------------------------------------------------------


class Predictor:
    """A loaded model plus the encoder that made its training data; scores songs in memory."""

    def __init__(
        self,
        model: Any,
        embedder: Any,
        mc_samples: int = DEFAULT_MC_SAMPLES,
        comparator: Any | None = None,
        max_seconds: float | None = None,
    ):
        import threading

        self.model = model
        self.embedder = embedder
        self.mc_samples = int(mc_samples)
        self.comparator = comparator
        self.max_seconds = max_seconds
        self.card_markdown = ""  # the model folder's README.md (from_pretrained reads it)
        self.tasks: tuple[str, ...] = tuple(model.tasks)
        self.model_id: str = str(model.model_id)
        # MC dropout switches the model's train/eval mode; one forward pass at a time.
        self._model_lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        weights: str | None = None,
        device: str = "auto",
        mc_samples: int = DEFAULT_MC_SAMPLES,
        max_seconds: float | None = None,
    ) -> Predictor:
        """Load ``model_dir`` and the encoder named by its ``encoder_spec``.

        ``weights`` overrides the encoder weights recorded in the spec (for example a local
        MERT folder when the spec names a hub id). ``max_seconds`` rejects longer songs.
        """
        from apexmusic.model import ScoringModel

        model = ScoringModel.from_pretrained(model_dir, device=device)
        embedder = build_embedder(model.encoder_spec, weights=weights, device=device, max_seconds=max_seconds)
        comparator = load_comparator(model_dir)
        predictor = cls(
            model, embedder, mc_samples=mc_samples, comparator=comparator, max_seconds=max_seconds
        )
        readme = Path(model_dir) / "README.md"
        predictor.card_markdown = readme.read_text(encoding="utf-8") if readme.is_file() else ""
        return predictor

    def with_max_seconds(self, max_seconds: float | None) -> Predictor:
        """A view of this predictor (same model, encoder and lock) with another length limit."""
        import copy
        import dataclasses

        view = copy.copy(self)
        view.max_seconds = max_seconds
        view.embedder = copy.copy(self.embedder)
        view.embedder.segment_config = dataclasses.replace(
            self.embedder.segment_config, max_seconds=max_seconds
        )
        return view

    # ---- public API ------------------------------------------------------------------------
    def predict(self, items: PredictInput | Sequence[PredictInput], batch_size: int = 8) -> list[Prediction]:
        """Score paths, ``Song``s or ``(audio, sample_rate)`` arrays; raises on the first failure."""
        if _is_single(items):
            items = [items]  # type: ignore[list-item]
        results = []
        for result in self.iter_predict(items, batch_size=batch_size):  # type: ignore[arg-type]
            if isinstance(result, Failure):
                raise _error_from_failure(result)
            results.append(result)
        return results

    def iter_predict(
        self,
        items: Iterable[PredictInput],
        batch_size: int = 8,
        on_progress: Callable[[int], None] | None = None,
    ) -> Iterator[Prediction | Failure]:
        """Yield a Prediction or a Failure per input; errors never stop the run.

        Embeddings are collected ``batch_size`` songs at a time so the model runs once per
        batch (song vectors and all their segments together).
        """
        pending: list[SongEmbedding] = []
        for index, item in enumerate(items):
            song = _as_song(item, index)
            try:
                pending.append(self.embed(item, song))
            except Exception as exc:  # noqa: BLE001 - one bad song never stops a batch
                if isinstance(exc, ApexError):
                    log.warning("%s: %s", song.path or song.id, exc)
                    kind = exc.kind
                else:  # an unexpected decoder/encoder crash: keep the traceback in the log
                    log.exception("%s: unexpected error", song.path or song.id)
                    kind = "error"
                yield Failure(song.id, song.path, kind, str(exc))
                if on_progress:
                    on_progress(1)
                continue
            if len(pending) >= batch_size:
                yield from self.score_embeddings(pending)
                if on_progress:
                    on_progress(len(pending))
                pending = []
        if pending:
            yield from self.score_embeddings(pending)
            if on_progress:
                on_progress(len(pending))

    def compare(self, a: PredictInput, b: PredictInput) -> Comparison:
        pa, pb = self.predict([a, b])
        prob, method = compare_scores(pa.scores, pb.scores, self.comparator)
        return Comparison(prob, method, pa, pb)

    def card(self) -> dict[str, Any]:
        """The model card and what this predictor runs (served at ``GET /v1/model``)."""
        return {
            "model_id": self.model_id,
            "tasks": list(self.tasks),
            "ranges": {t: [TASKS[t].low, TASKS[t].high] for t in self.tasks},
            "encoder_spec": _jsonable(self.model.encoder_spec),
            "mc_samples": self.mc_samples,
            "comparator": "arena" if self.comparator is not None else "fallback",
            "card": _jsonable(getattr(self.model, "card", {})),
            "card_markdown": self.card_markdown,
        }

    # ---- steps -----------------------------------------------------------------------------
    def embed(self, item: PredictInput, song: Song) -> SongEmbedding:
        if isinstance(item, tuple):
            audio, sr = item
            emb = self.embedder.embed_array(np.asarray(audio), int(sr), id=song.id, path=song.path)
        else:
            emb = self.embedder.embed_path(song)
        check_duration(emb.duration_s, self.max_seconds)
        return emb

    def score_embeddings(self, songs: Sequence[SongEmbedding]) -> list[Prediction]:
        """Song scores, MC-dropout uncertainty and per-segment timelines for embedded songs."""
        song_layers = np.stack([s.layers for s in songs]).astype(np.float32, copy=False)
        seg_layers = [s.segments for s in songs]
        all_layers = np.concatenate([song_layers, *seg_layers]).astype(np.float32, copy=False)
        with self._model_lock, _head_threads(all_layers.shape[0]):
            novelty = self._novelty(song_layers)
            point = self.model.predict_layers(all_layers, mc_samples=0)
            spread = self._mc_spread(song_layers)
        n = len(songs)
        offsets = np.cumsum([n] + [len(x) for x in seg_layers])
        results = []
        for i, song in enumerate(songs):
            scores = {t: float(point[t][i]) for t in self.tasks}
            std = {t: float(spread[i, k]) for k, t in enumerate(self.tasks)}
            seg_scores = {t: point[t][offsets[i] : offsets[i + 1]] for t in self.tasks}
            results.append(
                Prediction(
                    id=song.id,
                    path=song.path,
                    scores=scores,
                    uncertainty=std,
                    timeline=self._timeline(song, seg_scores),
                    duration_s=float(song.duration_s),
                    model_id=self.model_id,
                    tags=self._top_tags(song),
                    novelty=None if novelty is None else round(float(novelty[i]), 4),
                )
            )
        return results

    def _mc_spread(self, song_layers: np.ndarray) -> np.ndarray:
        """MC-dropout std per song and task, ``[N, T]``. One seeded call per song, so a song's
        uncertainty never depends on which other songs share its batch."""
        spread = np.zeros((len(song_layers), len(self.tasks)), np.float64)
        if self.mc_samples <= 0:
            return spread
        for i in range(len(song_layers)):
            out = self.model.predict_layers(song_layers[i : i + 1], mc_samples=self.mc_samples)
            spread[i] = [float(out[f"{t}_std"][0]) for t in self.tasks]
        return spread

    def _novelty(self, layers: np.ndarray) -> np.ndarray | None:
        """RMS of the standardised model input: ~1 for songs like the training data."""
        import torch

        net = getattr(self.model, "net", None)
        if net is None or not getattr(self.model.config, "standardize", False):
            return None
        with torch.no_grad():
            x = net.prepare(torch.from_numpy(layers).to(self.model.device))
        return x.reshape(len(layers), -1).pow(2).mean(1).sqrt().cpu().numpy()

    def _timeline(self, song: SongEmbedding, seg_scores: dict[str, np.ndarray]) -> list[Segment]:
        seconds = float(self.embedder.segment_config.segment_seconds)
        hop = float(self.embedder.segment_config.hop_seconds or seconds)
        timeline = []
        for j in range(song.n_segments):
            start = j * hop
            end = min(start + seconds, float(song.duration_s))
            timeline.append(
                Segment(
                    round(start, 3),
                    round(max(end, start), 3),
                    {t: float(v[j]) for t, v in seg_scores.items()},
                )
            )
        return timeline

    def _top_tags(self, song: SongEmbedding) -> list[tuple[str, float]] | None:
        probs = song.extras.get("tags") if song.extras else None
        labels = _tag_labels(self.embedder.encoder)
        if probs is None or labels is None:
            return None
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim == 2:  # per segment: weight by valid seconds like the song vector
            w = np.asarray(song.segment_weights, dtype=np.float64)
            probs = (probs * w[:, None]).sum(0) / max(w.sum(), 1e-9)
        top = np.argsort(-probs)[:N_TOP_TAGS]
        return [(str(labels[i]), round(float(probs[i]), 4)) for i in top if i < len(labels)]


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads and restore the previous count after."""
    import torch

    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _head_threads(n_rows: int) -> Iterator[None]:
    """Run the (tiny) scoring head single-threaded for small batches.

    A few rows through a few small matmuls gain nothing from intra-op threads, but on a busy
    CPU (a server scoring uploads, or a shared CI box) OpenMP threads waiting on each other
    made one MC-dropout call ~30x slower (1.2 s vs 35 ms measured). Large batches
    (store scoring) keep the configured thread count.
    """
    if n_rows > _SMALL_BATCH:
        yield
        return
    with torch_threads(1):
        yield


def build_embedder(
    spec: dict[str, Any], weights: str | None = None, device: str = "auto", max_seconds: float | None = None
) -> Any:
    """The ``SongEmbedder`` that reproduces a model's training embeddings from its encoder_spec."""
    from apexmusic.embed import EmbedConfig, SongEmbedder

    if not spec or not (spec.get("name") or spec.get("encoder")):
        raise ConfigError("the model has no encoder_spec naming its encoder")
    name = spec.get("name") or spec.get("encoder")
    hop = spec.get("hop_seconds")
    config = EmbedConfig(
        encoder=name,
        weights=weights or _loadable_weights(spec.get("weights")),
        segment_seconds=float(spec.get("segment_seconds") or 30.0),
        hop_seconds=float(hop) if hop else None,
        device=device,
        compat=spec.get("compat"),
        max_seconds=max_seconds,
        workers=0,
    )
    embedder = SongEmbedder.from_config(config)
    encoder = embedder.encoder
    expected = (int(spec.get("n_layers", encoder.n_layers)), int(spec.get("dim", encoder.dim)))
    if expected != (encoder.n_layers, encoder.dim):
        raise ConfigError(
            f"encoder {name} gives {encoder.n_layers}x{encoder.dim} vectors but the model "
            f"was trained on {expected[0]}x{expected[1]}"
        )
    if not weights and _normalise(spec.get("weights")) != _normalise(encoder.weights_id):
        log.warning(
            "model was trained on %s weights %r; running with %r",
            name,
            spec.get("weights"),
            encoder.weights_id,
        )
    return embedder


def _loadable_weights(weights_id: str | None) -> str | None:
    """The ``weights`` argument that reloads the encoder a spec recorded (None: its default).

    Ids of packaged weights (``name==version:file@sha256:...``) are not locations: the
    encoder's default loads them again, and the mismatch check after loading catches drift.
    """
    if weights_id in (None, "", "none"):
        return None
    if ":" in weights_id and not Path(weights_id).exists():
        return None
    return weights_id


def load_comparator(model_dir: str | Path) -> Any | None:
    path = Path(model_dir) / COMPARATOR_FILE
    if not path.is_file():
        return None
    from apexmusic.arena import PreferenceComparator

    try:
        return PreferenceComparator.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def compare_scores(
    scores_a: dict[str, float], scores_b: dict[str, float], comparator: Any | None = None
) -> tuple[float, str]:
    """P(listeners prefer A) and which method gave it.

    With an arena-trained ``PreferenceComparator`` (``comparator.json`` in the model folder)
    its logistic regression on score differences answers (method ``"comparator"``). Otherwise
    the documented, uncalibrated fallback: each task's difference is divided by a quarter of
    the task's range (25 points for popularity, 1 point for aesthetics) and the logistic of
    the mean of those standardised differences is returned (method ``"fallback"``).
    """
    if comparator is not None:
        return float(comparator.prob_a_wins(scores_a, scores_b)), "comparator"
    tasks = [t for t in scores_a if t in scores_b and t in TASKS]
    if not tasks:
        raise ConfigError("no common tasks to compare")
    z = np.mean([(scores_a[t] - scores_b[t]) / (TASKS[t].span / 4.0) for t in tasks])
    return float(1.0 / (1.0 + math.exp(-float(z)))), "fallback"


def _tag_labels(encoder: Any) -> Sequence[str] | None:
    labels = getattr(encoder, "labels", None)
    if isinstance(labels, dict):
        labels = labels.get("tags")
    return list(labels) if labels is not None else None


def _is_single(items: Any) -> bool:
    if isinstance(items, (str, os.PathLike, Song)):
        return True
    return (
        isinstance(items, tuple)
        and len(items) == 2
        and isinstance(items[0], np.ndarray)
        and np.isscalar(items[1])
    )


def _as_song(item: PredictInput, index: int) -> Song:
    if isinstance(item, Song):
        return item
    if isinstance(item, tuple):
        return Song(f"array-{index}", "")
    path = Path(item)
    return Song(path.stem, str(path))


def _error_from_failure(failure: Failure) -> ApexError:
    from apexmusic import errors

    for cls in (
        errors.AudioDecodeError,
        errors.AudioContentError,
        errors.InputError,
        errors.ModelLoadError,
        errors.ConfigError,
    ):
        if cls.kind == failure.kind:
            return cls(f"{failure.path or failure.id}: {failure.message}")
    return ApexError(f"{failure.path or failure.id}: {failure.message}")


def check_duration(duration_s: float, max_seconds: float | None) -> None:
    """Raise AudioContentError for a song longer than ``max_seconds`` (None: no limit)."""
    if max_seconds is not None and duration_s > max_seconds + 1e-6:
        from apexmusic.errors import AudioContentError

        raise AudioContentError(f"{duration_s:.1f} s of audio is longer than the {max_seconds:g} s limit")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# ---------------------------------------------------------------------------------------------
# Batch scoring of INPUTs to a file (apexmusic predict INPUT...)
# ---------------------------------------------------------------------------------------------


@dataclass
class PredictConfig:
    weights: str | None = None
    device: str = "auto"
    batch_size: int = 8  # songs per model call and per output flush
    mc_samples: int = DEFAULT_MC_SAMPLES
    resume: bool = False
    max_seconds: float | None = None


@dataclass
class PredictReport:
    n_done: int = 0
    n_failed: int = 0
    n_skipped: int = 0
    wall_seconds: float = 0.0
    out_file: str = ""
    failures_file: str = ""
    failures: list[Failure] = field(default_factory=list)


def failures_path(out_file: str | Path) -> Path:
    out_file = Path(out_file)
    return out_file.with_name(out_file.name + ".failures.jsonl")


def start_predict_run(
    songs: Sequence[Song], out_file: str | Path, resume: bool, on_progress: Callable[[int], None] | None
) -> tuple[RowWriter, list[Song], PredictReport]:
    """Open ``out_file`` for a scoring run: its writer, the songs still to score, and a report that
    counts (and reports as progress) the songs an earlier run already wrote."""
    writer = open_writer(out_file, resume=resume)
    done = writer.done_ids()
    todo = [s for s in songs if s.id not in done]
    report = PredictReport(
        n_skipped=len(songs) - len(todo), out_file=str(out_file), failures_file=str(failures_path(out_file))
    )
    if on_progress and report.n_skipped:
        on_progress(report.n_skipped)
    return writer, todo, report


def predict_inputs(
    songs: Sequence[Song],
    model_dir: str | Path,
    out_file: str | Path,
    config: PredictConfig | None = None,
    on_progress: Callable[[int], None] | None = None,
    predictor: Predictor | None = None,
) -> PredictReport:
    """Score ``songs`` into ``out_file``; failures go to ``<out_file>.failures.jsonl``.

    With ``config.resume`` ids already in ``out_file`` are skipped and new rows appended;
    without it an existing ``out_file`` is a ConfigError (never silently overwritten).
    """
    config = config or PredictConfig()
    started = time.perf_counter()
    writer, todo, report = start_predict_run(songs, out_file, config.resume, on_progress)
    if not todo:
        writer.close()
        report.wall_seconds = time.perf_counter() - started
        return report
    if predictor is None:
        predictor = Predictor.from_pretrained(
            model_dir,
            weights=config.weights,
            device=config.device,
            mc_samples=config.mc_samples,
            max_seconds=config.max_seconds,
        )
    fail_log = FailureLog(failures_path(out_file), append=config.resume)
    rows: list[dict[str, Any]] = []
    try:
        for result in predictor.iter_predict(todo, batch_size=config.batch_size, on_progress=on_progress):
            if isinstance(result, Failure):
                fail_log.write(result)
                report.failures.append(result)
                continue
            rows.append(result.to_row())
            if len(rows) >= config.batch_size:
                writer.write_rows(rows)
                report.n_done += len(rows)
                rows = []
        if rows:
            writer.write_rows(rows)
            report.n_done += len(rows)
    finally:
        writer.close()
    report.n_failed = len(report.failures)
    report.wall_seconds = time.perf_counter() - started
    return report


class FailureLog:
    """``<out>.failures.jsonl``: one JSON line per failed input, flushed as it happens."""

    def __init__(self, path: Path, append: bool):
        self.path = path
        if not append and path.exists():
            path.unlink()

    def write(self, failure: Failure) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(failure.to_json() + "\n")


# ---------------------------------------------------------------------------------------------
# Scoring an embedding store (apexmusic predict --embeddings STORE)
# ---------------------------------------------------------------------------------------------

# encoder_spec key -> store manifest key; every pair must agree for the scores to mean anything.
_SPEC_TO_MANIFEST = {
    "name": "encoder",
    "weights": "weights",
    "n_layers": "n_layers",
    "dim": "dim",
    "segment_seconds": "segment_seconds",
    "hop_seconds": "hop_seconds",
    "compat": "compat",
}


def check_store_matches(spec: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Raise ConfigError when a store was embedded differently from the model's training data."""
    diffs = []
    for spec_key, man_key in _SPEC_TO_MANIFEST.items():
        a, b = spec.get(spec_key), manifest.get(man_key)
        if spec_key == "hop_seconds":  # no hop means back-to-back segments
            a = a or spec.get("segment_seconds")
            b = b or manifest.get("segment_seconds")
        if _normalise(a) != _normalise(b):
            diffs.append(f"{spec_key}: model {a!r} vs store {b!r}")
    if diffs:
        raise ConfigError(
            "the store was not embedded like the model's training data (" + "; ".join(diffs) + ")"
        )


def _normalise(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if value in ("", "none", "None"):
        return None
    return value


@dataclass
class StoreScoreReport:
    n_rows: int
    wall_seconds: float
    out_file: str


def score_store(
    store_dir: str | Path,
    model_dir: str | Path,
    out_file: str | Path,
    batch_size: int = 65536,
    on_progress: Callable[[int], None] | None = None,
    model: Any | None = None,
) -> StoreScoreReport:
    """Write ``id, path`` and the model's scores for every song of an embedding store.

    Reads the store shard by shard in ``batch_size`` rows (bounded memory) and never opens
    audio. The output is rewritten whole (written to a temporary file, then renamed).
    """
    from apexmusic.model import ScoringModel

    started = time.perf_counter()
    store = EmbeddingStore.open(store_dir)
    manifest = store.manifest()
    model = model or ScoringModel.from_pretrained(model_dir)
    check_store_matches(model.encoder_spec, manifest)
    n_layers, dim = int(manifest["n_layers"]), int(manifest["dim"])
    tasks = tuple(model.tasks)
    out_file = Path(out_file)
    tmp = out_file.with_name(f".{out_file.name}.{uuid.uuid4().hex[:8]}.tmp")
    writer = _stream_writer(tmp, out_file.suffix.lower())
    n_rows = 0
    try:
        for ids, paths, layers in _iter_store_batches(store, batch_size, n_layers, dim):
            scores = model.predict_layers(layers, mc_samples=0)
            columns: dict[str, Any] = {"id": ids, "path": paths}
            columns.update({t: np.asarray(scores[t], dtype=np.float64) for t in tasks})
            writer.write_columns(columns)
            n_rows += len(ids)
            if on_progress:
                on_progress(len(ids))
        writer.close()
        os.replace(tmp, out_file)
    finally:
        if tmp.exists():
            tmp.unlink()
    return StoreScoreReport(n_rows, time.perf_counter() - started, str(out_file))


def _iter_store_batches(store: EmbeddingStore, batch_size: int, n_layers: int, dim: int):
    if not store.shards():
        raise ConfigError(f"{store.root} holds no embeddings")
    for batch in store.iter_batches(["id", "path", "layers"], batch_size):  # StoreError: a bad shard
        flat = batch.column(2).flatten().to_numpy(zero_copy_only=False)
        layers = flat.astype(np.float32, copy=False).reshape(batch.num_rows, n_layers, dim)
        if not layers.flags.writeable:  # arrow buffers are read-only; torch wants to own them
            layers = layers.copy()
        yield batch.column(0), batch.column(1), layers  # Arrow string arrays stay Arrow


# ---------------------------------------------------------------------------------------------
# Output files: JSONL / CSV / Parquet, resumable and append-safe
# ---------------------------------------------------------------------------------------------


def open_writer(out_file: str | Path, resume: bool) -> RowWriter:
    out_file = Path(out_file)
    suffix = out_file.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ConfigError(f"--out must end in one of {', '.join(OUTPUT_FORMATS)}: {out_file}")
    if not out_file.parent.exists():
        out_file.parent.mkdir(parents=True, exist_ok=True)
    exists = out_file.exists() or (suffix == ".parquet" and _parts_dir(out_file).exists())
    if exists and not resume:
        raise ConfigError(f"{out_file} already exists; pass --resume to continue it or remove it")
    cls = {".jsonl": JsonlWriter, ".csv": CsvWriter, ".parquet": ParquetWriter}[suffix]
    return cls(out_file)


class RowWriter:
    """Appends rows; ``done_ids`` lists the ids a previous (maybe interrupted) run wrote."""

    def __init__(self, path: Path):
        self.path = path

    def done_ids(self) -> set[str]:
        raise NotImplementedError

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JsonlWriter(RowWriter):
    def __init__(self, path: Path):
        super().__init__(path)
        _drop_partial_last_line(path)

    def done_ids(self) -> set[str]:
        if not self.path.exists():
            return set()
        ids = set()
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    ids.add(str(json.loads(line)["id"]))
                except (ValueError, KeyError, TypeError):
                    log.warning("%s: skipping an unreadable line", self.path)
        return ids

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        _append_durably(self.path, "".join(json.dumps(r) + "\n" for r in rows))


class CsvWriter(RowWriter):
    def __init__(self, path: Path):
        super().__init__(path)
        _drop_partial_last_line(path)
        self.header: list[str] | None = None
        if path.exists() and path.stat().st_size:
            with path.open(newline="", encoding="utf-8") as f:
                self.header = next(csv.reader(f), None)

    def done_ids(self) -> set[str]:
        if not self.path.exists():
            return set()
        with self.path.open(newline="", encoding="utf-8") as f:
            return {row["id"] for row in csv.DictReader(f) if row.get("id")}

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        new_file = self.header is None
        if new_file:
            self.header = list(dict.fromkeys(k for r in rows for k in r))
        w = csv.DictWriter(buf, fieldnames=self.header, extrasaction="ignore", lineterminator="\n")
        if new_file:
            w.writeheader()
        w.writerows(rows)
        _append_durably(self.path, buf.getvalue())


class ParquetWriter(RowWriter):
    """Parquet cannot be appended to: rows go to atomic part files beside the output, which
    ``close`` merges (with any earlier output) into the final file. A crash leaves whole parts
    that ``--resume`` picks up."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.parts = _parts_dir(path)

    def _sources(self) -> list[Path]:
        parts = sorted(self.parts.glob("part-*.parquet")) if self.parts.exists() else []
        return ([self.path] if self.path.exists() else []) + parts

    def done_ids(self) -> set[str]:
        import pyarrow.parquet as pq

        ids: set[str] = set()
        for src in self._sources():
            ids.update(pq.read_table(src, columns=["id"]).column("id").to_pylist())
        return ids

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.parts.mkdir(exist_ok=True)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:6]}.parquet"
        tmp = self.parts / f".{name}.tmp"
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, self.parts / name)

    def close(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        sources = self._sources()
        if not self.parts.exists():
            return
        tables = [pq.read_table(s) for s in sources]
        if tables:
            merged = pa.concat_tables(tables, promote_options="default")
            tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
            pq.write_table(merged, tmp)
            os.replace(tmp, self.path)
        for part in self.parts.glob("*"):
            part.unlink()
        self.parts.rmdir()


def _parts_dir(path: Path) -> Path:
    return path.with_name(f".{path.name}.parts")


def _drop_partial_last_line(path: Path) -> None:
    """A killed run can leave half a line at the end; cut it so appends start clean."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        cut = f.read().rfind(b"\n") + 1
        f.truncate(cut)
        log.warning("%s: dropped an incomplete last line left by an interrupted run", path)


def _append_durably(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


class _StreamWriter:
    """Column batches to one new file (score_store), fast for millions of rows."""

    def __init__(self, path: Path, suffix: str):
        self.path, self.suffix = path, suffix
        self._pq = None
        self._csv = None
        self._fh = None

    def write_columns(self, columns: dict[str, Any]) -> None:
        import pyarrow as pa

        table = pa.table(columns)
        if self.suffix == ".parquet":
            import pyarrow.parquet as pq

            self._pq = self._pq or pq.ParquetWriter(self.path, table.schema)
            self._pq.write_table(table)
        elif self.suffix == ".csv":
            import pyarrow.csv as pacsv

            self._csv = self._csv or pacsv.CSVWriter(self.path, table.schema)
            self._csv.write_table(table)
        else:
            self._fh = self._fh or self.path.open("wb")
            self._fh.write(_jsonl_lines(columns))

    def close(self) -> None:
        for handle in (self._pq, self._csv, self._fh):
            if handle is not None:
                handle.close()
        if self._pq is None and self._csv is None and self._fh is None:
            self.path.write_text("")


def _stream_writer(path: Path, suffix: str) -> _StreamWriter:
    if suffix not in OUTPUT_FORMATS:
        raise ConfigError(f"--out must end in one of {', '.join(OUTPUT_FORMATS)}: {path}")
    return _StreamWriter(path, suffix)


def _jsonl_lines(columns: dict[str, Any]) -> bytes:
    """JSON lines for a column batch, built column-wise with Arrow kernels (millions of rows/s).

    Floats use Arrow's shortest round-trip formatting; strings are JSON-escaped (rows holding
    control characters fall back to ``json.dumps``).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    parts: list[Any] = []
    for i, (name, col) in enumerate(columns.items()):
        parts.append(("{" if i == 0 else ", ") + json.dumps(name) + ": ")
        if isinstance(col, np.ndarray) and col.dtype.kind == "f":
            parts.append(pc.cast(pa.array(col.astype(np.float64)), pa.string()))
        else:
            parts.append(_json_string_array(col))
    parts.append("}\n")
    lines = pc.binary_join_element_wise(*parts, "")  # one string per row, newline included
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    return lines.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]


def _json_string_array(values: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = values if isinstance(values, pa.Array) else pa.array([str(v) for v in values], pa.string())
    if pc.any(pc.match_substring_regex(arr, '["\\\\\\x00-\\x1f]')).as_py():
        if pc.any(pc.match_substring_regex(arr, "[\\x00-\\x1f]")).as_py():
            return pa.array([json.dumps(v, ensure_ascii=False) for v in arr.to_pylist()], pa.string())
        arr = pc.replace_substring(pc.replace_substring(arr, "\\", "\\\\"), '"', '\\"')
    return pc.binary_join_element_wise('"', arr, '"', "")

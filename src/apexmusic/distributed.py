"""The embedding and scoring engines on Ray Data, for catalogues that outgrow one machine.

The pipeline (one Ray Data dataset, streamed end to end):

1. **songs** -- ``from_items`` over the songs still to do (``--resume`` drops the ids already
   in the store first, exactly like the local engine);
2. **decode** -- CPU tasks (``flat_map``) decode, mix to mono, resample and segment each song
   with the local engine's own decoder (``apexmusic.embed.decode_song``), one row per segment
   plus one closing row per song (its segment count, duration and SHA-256) or one failure row
   carrying the same error kind and message the local engine would log;
3. **encode** -- a pool of actors (``map_batches`` with a callable class), each loading the
   encoder once; ``num_gpus`` per actor when the cluster has GPUs. Full segments and shorter
   last segments are encoded in separate batches, as the local engine does;
4. **assemble and write** -- the driver collects segment vectors per song, combines them with
   the local engine's ``song_embedding`` (weights = valid seconds) and writes Parquet shards
   through ``EmbeddingStore.write`` with the manifest from ``embed.store_manifest``, and the
   failures through ``EmbeddingStore.record_failure``: the very same store as the local engine.

Re-assembling on the driver (instead of a Ray ``groupby``) keeps the pipeline streaming: a
``groupby`` is an all-to-all barrier that would hold every vector until the last song is
encoded, so an interrupted job would leave nothing to resume from. Segment vectors are small
(13 x 768 floats for MERT-95M), the audio never reaches the driver.

Fault tolerance comes from Ray Data: tasks whose worker dies are retried and actors are
restarted with their in-flight batch resubmitted. The driver keys every segment vector by
(song, segment index), so a retried task that re-emits rows cannot duplicate a song, and each
song is written exactly once.
"""

from __future__ import annotations

import io
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apexmusic.audio import SegmentConfig
from apexmusic.embed import (
    EmbedConfig,
    EmbedProgress,
    EmbedReport,
    SongParts,
    StoreSink,
    build_encoder,
    default_batch_size,
    encode_batch,
    store_manifest,
)
from apexmusic.encoders import Encoder
from apexmusic.errors import ConfigError
from apexmusic.sources import Song
from apexmusic.store import EmbeddingSpec, EmbeddingStore, Failure, SongEmbedding

log = logging.getLogger(__name__)

ENV_ADDRESS = "RAY_ADDRESS"
EncoderFactory = Callable[[], Encoder]


# ---------------------------------------------------------------------------------------------
# Connecting and sizing
# ---------------------------------------------------------------------------------------------


@dataclass
class RaySettings:
    """Where to run and how many encoder actors with which resources."""

    address: str | None = None  # None: $RAY_ADDRESS, else a local instance sized to the machine
    num_cpus: int | None = None  # size of a local instance (None: all cores)
    num_gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else 0
    concurrency: int | None = None  # encoder actors (None: one per GPU share, or cores // 4 on CPU)
    decode_cpus: float = 1.0  # logical CPUs per decode task
    decode_songs_per_task: int = 8  # songs per decode task (retry granularity)
    max_retries: int = 3  # re-runs of a task whose worker died; then its songs fail, the run goes on


@dataclass
class _Plan:
    """Resources of each stage, resolved against the connected cluster."""

    actors: int
    gpus_per_actor: float
    cpus_per_actor: float
    threads_per_actor: int
    decode_cpus: float
    total_cpus: float
    # Batches queued on one actor. 2 lets a GPU actor receive its next batch while it computes;
    # but when an actor dies, every batch queued on it is charged a retry, so CPU actors (whose
    # inputs are local anyway) take one at a time and a crash costs exactly one batch.
    tasks_in_flight: int = 1


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` (or ``$RAY_ADDRESS``), or start a quiet local instance.

    Returns True when this call started Ray (the caller then shuts it down). An already
    initialised Ray (a notebook, a test session) is used as it is.
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get(ENV_ADDRESS) or None
    common = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": False}
    try:
        if address:
            ray.init(address=address, **common)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot start or reach Ray at {address or 'a local instance'}: {exc}") from exc
    _quiet_ray_data()
    return True


def _quiet_ray_data() -> None:
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    if not logging.getLogger("apexmusic").isEnabledFor(logging.INFO):
        # Ray Data logs every execution at INFO on its own handler; follow our verbosity (-v)
        logging.getLogger("ray.data").setLevel(logging.ERROR)


def plan_resources(settings: RaySettings) -> _Plan:
    """Actors and per-actor resources for the connected cluster (no over-subscription).

    On CPU-only clusters the decode tasks keep ``decode_cpus`` for themselves so the pool can
    never starve them (an actor pool that holds every CPU deadlocks the pipeline).
    """
    import ray

    resources = ray.cluster_resources()
    total_cpus = float(resources.get("CPU", 1.0))
    total_gpus = float(resources.get("GPU", 0.0))
    gpus = settings.num_gpus_per_actor
    if gpus is None:
        gpus = 1.0 if total_gpus >= 1 else 0.0
    if gpus > total_gpus + 1e-9:
        raise ConfigError(f"{gpus:g} GPUs per actor requested but the cluster has {total_gpus:g}")
    if settings.concurrency is not None and settings.concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {settings.concurrency}")
    decode_cpus = min(settings.decode_cpus, max(total_cpus / 2, 0.25))
    if gpus > 0:
        actors = settings.concurrency or max(1, int(total_gpus // gpus))
        cpus = min(1.0, max(0.25, (total_cpus - decode_cpus) / actors))
        return _Plan(actors, gpus, cpus, max(1, int(cpus)), decode_cpus, total_cpus, tasks_in_flight=2)
    actors = settings.concurrency or max(1, int(total_cpus // 4))
    node_cpus = max(
        (n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=total_cpus
    )
    threads = max(1, min(int(node_cpus), int(total_cpus // actors)))
    cpus = min(float(threads), (total_cpus - decode_cpus) / actors)
    if cpus <= 0:
        raise ConfigError(f"{actors} encoder actors do not fit on {total_cpus:g} CPUs")
    return _Plan(actors, 0.0, cpus, threads, decode_cpus, total_cpus)


# ---------------------------------------------------------------------------------------------
# Stage 2: decoding tasks
# ---------------------------------------------------------------------------------------------

_ROW_DEFAULTS: dict[str, Any] = {
    "idx": -1,
    "kind": "",
    "k": -1,
    "valid": 0,
    "audio": b"",
    "duration": 0.0,
    "sha": "",
    "fail_kind": "",
    "message": "",
}


def _row(**values: Any) -> dict[str, Any]:
    return {**_ROW_DEFAULTS, **values}


class _DecodeSong:
    """``flat_map`` function: one song row in, segment rows plus an end or failure row out."""

    def __init__(self, sample_rate: int, segment: SegmentConfig):
        self.sample_rate = sample_rate
        self.segment = segment

    def __call__(self, song: dict[str, Any]) -> Iterator[dict[str, Any]]:
        from apexmusic.embed import decode_song

        idx, path = int(song["idx"]), str(song["path"])
        with _local_copy(path) as (local, error):
            if error is not None:
                yield _row(idx=idx, kind="fail", fail_kind=error[0], message=error[1])
                return
            for message in decode_song(idx, local, None, self.sample_rate, self.segment):
                yield _message_row(message)


def _message_row(message: tuple) -> dict[str, Any]:
    kind, idx = message[0], int(message[1])
    if kind == "seg":
        _, _, k, audio, valid = message
        return _row(
            idx=idx,
            kind="seg",
            k=int(k),
            valid=int(valid),
            audio=np.ascontiguousarray(audio, dtype=np.float32).tobytes(),
        )
    if kind == "end":
        _, _, n_segments, duration, sha = message
        return _row(idx=idx, kind="end", k=int(n_segments), duration=float(duration), sha=str(sha))
    _, _, fail_kind, text = message
    return _row(idx=idx, kind="fail", fail_kind=str(fail_kind), message=str(text))


class _local_copy:
    """Yields a local path for ``path``; URIs (s3://, gs://, ...) are fetched to a temp file."""

    def __init__(self, path: str):
        self.path = path
        self.tmp: str | None = None

    def __enter__(self) -> tuple[str, tuple[str, str] | None]:
        if "://" not in self.path:
            return self.path, None
        try:
            self.tmp = _fetch_uri(self.path)
        except Exception as exc:  # a missing object costs one song, as a missing file does
            return self.path, ("input", f"cannot read {self.path}: {' '.join(str(exc).split())[:200]}")
        return self.tmp, None

    def __exit__(self, *exc: Any) -> None:
        if self.tmp:
            os.unlink(self.tmp)


def _fetch_uri(uri: str) -> str:
    """Copy an object-store or file:// URI to a local temporary file (pyarrow filesystems)."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    suffix = Path(path).suffix
    fd, tmp = tempfile.mkstemp(prefix="apexmusic-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as out, fs.open_input_stream(path) as src:
            while chunk := src.read(1 << 22):
                out.write(chunk)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


# ---------------------------------------------------------------------------------------------
# Stage 3: encoder actors
# ---------------------------------------------------------------------------------------------


class _EncodeSegments:
    """``map_batches`` callable class: the encoder is loaded once per actor.

    Segment rows become vector rows; end and failure rows pass through. A batch the encoder
    rejects is retried row by row so one bad segment fails one song (as in the local engine).
    """

    def __init__(self, make_encoder: EncoderFactory, threads: int, full_samples: int):
        import torch
        from threadpoolctl import threadpool_limits

        # Ray pins OMP/BLAS to the actor's logical CPUs (1 for a fractional share); give the
        # encoder the threads its plan allows, for torch and for numpy's BLAS alike
        torch.set_num_threads(threads)
        threadpool_limits(threads)
        self.encoder = make_encoder()
        self.full_samples = full_samples

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {
            key: []
            for key in (
                "idx",
                "kind",
                "k",
                "valid",
                "vector",
                "extras",
                "duration",
                "sha",
                "fail_kind",
                "message",
            )
        }
        segs: dict[bool, list[int]] = {True: [], False: []}
        for i, kind in enumerate(batch["kind"]):
            if kind == "seg":
                segs[int(batch["valid"][i]) >= self.full_samples].append(i)
            else:
                self._emit(out, batch, i)
        for rows in segs.values():
            if rows:
                self._encode_rows(out, batch, rows)
        return out

    def _encode_rows(self, out: dict[str, list], batch: dict[str, np.ndarray], rows: list[int]) -> None:
        audio = [np.frombuffer(batch["audio"][i], dtype=np.float32) for i in rows]
        valid = [int(batch["valid"][i]) for i in rows]
        try:
            vectors, extras = encode_batch(self.encoder, audio, valid)
        except Exception as exc:
            if len(rows) == 1:
                message = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                self._emit(out, batch, rows[0], kind="fail", fail_kind="encode", message=message)
                return
            log.warning("a batch of %d failed in the encoder (%s); retrying one by one", len(rows), exc)
            for i in rows:
                self._encode_rows(out, batch, [i])
            return
        for j, i in enumerate(rows):
            if not np.isfinite(vectors[j]).all():
                self._emit(
                    out,
                    batch,
                    i,
                    kind="fail",
                    fail_kind="content",
                    message="the encoder produced non-finite values for this audio",
                )
                continue
            self._emit(
                out,
                batch,
                i,
                vector=vectors[j].tobytes(),
                extras=_pack({name: values[j] for name, values in extras.items()}),
            )

    @staticmethod
    def _emit(out: dict[str, list], batch: dict[str, np.ndarray], i: int, **override: Any) -> None:
        values = {"vector": b"", "extras": b""} | override
        for key in out:
            out[key].append(values[key] if key in values else batch[key][i])


def _pack(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays to ``.npz`` bytes (no pickle); empty bytes when there are none."""
    if not arrays:
        return b""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v, np.float32) for k, v in arrays.items()})
    return buffer.getvalue()


def _unpack(data: bytes) -> dict[str, np.ndarray]:
    if not data:
        return {}
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


# ---------------------------------------------------------------------------------------------
# Stage 4: assembling songs on the driver
# ---------------------------------------------------------------------------------------------


class _Assembler:
    """Turns the encoder's row stream into SongEmbeddings and Failures, each song once."""

    def __init__(self, songs: Sequence[Song], n_layers: int, dim: int, sample_rate: int, compat: str | None):
        self.songs = songs
        self.shape = (n_layers, dim)
        self.sample_rate = sample_rate
        self.compat = compat
        self.pending: dict[int, SongParts] = {i: SongParts() for i in range(len(songs))}

    def add(self, batch: dict[str, np.ndarray]) -> Iterator[SongEmbedding | Failure]:
        for i, kind in enumerate(batch["kind"]):
            idx = int(batch["idx"][i])
            state = self.pending.get(idx)
            if state is None:
                continue  # already written or failed (a retried task repeating itself)
            if kind == "fail":
                del self.pending[idx]
                song = self.songs[idx]
                yield Failure(song.id, song.path, str(batch["fail_kind"][i]), str(batch["message"][i]))
                continue
            if kind == "seg":
                k = int(batch["k"][i])
                state.vectors[k] = np.frombuffer(batch["vector"][i], dtype=np.float32).reshape(self.shape)
                state.valid[k] = int(batch["valid"][i])
                state.extras[k] = _unpack(batch["extras"][i])
            else:
                state.n_segments = int(batch["k"][i])
                state.duration_s = float(batch["duration"][i])
                state.sha256 = str(batch["sha"][i])
            if state.complete():
                del self.pending[idx]
                yield self._song(idx, state)

    def _song(self, idx: int, state: SongParts) -> SongEmbedding:
        from apexmusic.embed import song_embedding

        order = sorted(state.vectors)
        vectors = np.stack([state.vectors[k] for k in order])
        valid = np.asarray([state.valid[k] for k in order])
        extras = {name: np.stack([state.extras[k][name] for k in order]) for name in state.extras[order[0]]}
        return song_embedding(
            self.songs[idx],
            state.sha256,
            state.duration_s,
            vectors,
            valid,
            extras,
            self.sample_rate,
            self.compat,
        )

    def lost(self, retries: int) -> Iterator[Failure]:
        """Failures for songs whose rows never came back: the worker running their task died on
        every try (a decoder or encoder crash on hostile input, an OOM kill). A task carries a
        block of rows, so songs sharing the block with the culprit are listed too; ``--resume``
        retries them. The rest of the run went on without them."""
        for idx in sorted(self.pending):
            song = self.songs[idx]
            message = (
                f"a worker process died {retries + 1} times on the block of rows holding this "
                "song (decoding or encoding); --resume retries it"
            )
            yield Failure(song.id, song.path, "worker", message)
        self.pending.clear()


# ---------------------------------------------------------------------------------------------
# The pipeline, shared by embed and predict
# ---------------------------------------------------------------------------------------------


@dataclass
class _EncoderInfo:
    """What the driver needs to know about the encoder, measured where the actors run."""

    manifest: dict[str, Any]
    batch_size: int
    sample_rate: int
    n_layers: int
    dim: int


def _probe_encoder(make_encoder: EncoderFactory, config: EmbedConfig) -> _EncoderInfo:
    encoder = make_encoder()
    return _EncoderInfo(
        store_manifest(encoder, config),
        default_batch_size(encoder, config.batch_size),
        int(encoder.sample_rate),
        int(encoder.n_layers),
        int(encoder.dim),
    )


def probe_encoder(make_encoder: EncoderFactory, config: EmbedConfig, plan: _Plan) -> _EncoderInfo:
    """Load the encoder once in a worker with the actors' resources (precision and device
    resolve there, so the manifest says what the actors really run)."""
    import ray

    remote = ray.remote(_probe_encoder).options(num_cpus=plan.cpus_per_actor, num_gpus=plan.gpus_per_actor)
    return ray.get(remote.remote(make_encoder, config))


def run_pipeline(
    songs: Sequence[Song],
    make_encoder: EncoderFactory,
    info: _EncoderInfo,
    segment: SegmentConfig,
    compat: str | None,
    plan: _Plan,
    settings: RaySettings,
) -> Iterator[SongEmbedding | Failure]:
    """Stream every song through decode -> encode and yield each one exactly once."""

    if not songs:
        return
    items = [{"idx": i, "path": s.path} for i, s in enumerate(songs)]
    # enough decode tasks to keep every CPU busy, few enough that scheduling stays cheap
    per_task = math.ceil(len(items) / settings.decode_songs_per_task)
    n_blocks = max(1, min(len(items), max(per_task, int(2 * plan.total_cpus))))
    full_samples = segment.segment_samples(info.sample_rate)
    with warnings.catch_warnings():
        # Ray 2.60 deprecates passing task/actor retry limits as remote args but offers no
        # named parameter for them yet
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        ds = _dataset(items, n_blocks, make_encoder, info, full_samples, segment, plan, settings)
    # A block whose task exhausted its retries is dropped instead of failing the whole job;
    # its songs come back as failures below (per-song errors never raise, they are rows).
    ds.context.max_errored_blocks = -1
    assembler = _Assembler(songs, info.n_layers, info.dim, info.sample_rate, compat)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        yield from assembler.add(batch)
    yield from assembler.lost(settings.max_retries)


def _dataset(
    items: list[dict[str, Any]],
    n_blocks: int,
    make_encoder: EncoderFactory,
    info: _EncoderInfo,
    full_samples: int,
    segment: SegmentConfig,
    plan: _Plan,
    settings: RaySettings,
) -> Any:
    """songs -> decode tasks (flat_map) -> encoder actor pool (map_batches), lazily."""
    import ray

    return (
        ray.data.from_items(items, override_num_blocks=n_blocks)
        .flat_map(
            _DecodeSong(info.sample_rate, segment),
            num_cpus=plan.decode_cpus,
            max_retries=settings.max_retries,
        )
        .map_batches(
            _EncodeSegments,
            fn_constructor_args=(make_encoder, plan.threads_per_actor, full_samples),
            batch_size=info.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(
                size=plan.actors, max_tasks_in_flight_per_actor=plan.tasks_in_flight
            ),
            num_cpus=plan.cpus_per_actor,
            num_gpus=plan.gpus_per_actor or None,
            max_task_retries=settings.max_retries,  # actors themselves restart without limit
        )
    )


# ---------------------------------------------------------------------------------------------
# apexmusic embed --engine ray
# ---------------------------------------------------------------------------------------------


def embed_inputs_ray(
    songs: list[Song],
    out_dir: str | Path,
    config: EmbedConfig | None = None,
    on_progress: Callable[[EmbedProgress], None] | None = None,
    ray_address: str | None = None,
    num_cpus: int | None = None,
    num_gpus_per_actor: float | None = None,
    concurrency: int | None = None,
    encoder_factory: EncoderFactory | None = None,
    max_retries: int = 3,
) -> EmbedReport:
    """``embed_inputs`` on Ray Data: the same store, manifest, failure log and vectors.

    ``encoder_factory`` (a picklable zero-argument callable) replaces ``build_encoder(config)``
    for encoders outside the registry; the manifest then describes what it builds.
    """
    config = config or EmbedConfig()
    config.validate()
    settings = RaySettings(ray_address, num_cpus, num_gpus_per_actor, concurrency, max_retries=max_retries)
    start = time.monotonic()  # the report's wall time includes starting or reaching Ray
    started_ray = connect(settings.address, settings.num_cpus)
    try:
        return _embed(songs, out_dir, config, on_progress, settings, encoder_factory, start)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


class _ConfigEncoder:
    """A picklable factory: ``build_encoder(config)`` in whichever process calls it."""

    def __init__(self, config: EmbedConfig):
        self.config = config

    def __call__(self) -> Encoder:
        return build_encoder(self.config)


def _embed(
    songs: list[Song],
    out_dir: str | Path,
    config: EmbedConfig,
    on_progress: Callable[[EmbedProgress], None] | None,
    settings: RaySettings,
    encoder_factory: EncoderFactory | None,
    start: float,
) -> EmbedReport:
    make_encoder = encoder_factory or _ConfigEncoder(config)
    plan = plan_resources(settings)
    info = probe_encoder(make_encoder, config, plan)
    store = EmbeddingStore.create(out_dir, info.manifest, resume=config.resume)
    done = store.done_ids() if config.resume else set()
    todo = [s for s in songs if s.id not in done]
    n_skipped = len(songs) - len(todo)
    if n_skipped:
        log.info("resume: %d of %d songs are already in %s", n_skipped, len(songs), out_dir)
    sink = StoreSink(store, config.shard_songs, len(todo), n_skipped, on_progress, start=start)
    sink.progress("")
    try:
        for result in run_pipeline(
            todo, make_encoder, info, config.segment_config(), config.compat, plan, settings
        ):
            if isinstance(result, Failure):
                sink.fail(result)
            else:
                sink.add(result)
    finally:
        sink.flush()
    report = sink.report(out_dir)
    store.update_manifest(
        last_run={
            "engine": "ray",
            "songs_done": report.n_done,
            "songs_failed": report.n_failed,
            "songs_skipped": report.n_skipped,
            "songs_cached": 0,
            "audio_seconds": round(report.audio_seconds, 3),
            "wall_seconds": round(report.wall_seconds, 3),
            "actors": plan.actors,
            "gpus_per_actor": plan.gpus_per_actor,
            "batch_size": info.batch_size,
            "device": config.device,
            "precision": config.precision,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    return report


# ---------------------------------------------------------------------------------------------
# apexmusic predict --engine ray
# ---------------------------------------------------------------------------------------------


class _SpecEncoder:
    """A picklable factory: the encoder ``predict.build_embedder`` builds for a model's spec
    (checked against it by the one compatibility rule on every worker)."""

    def __init__(self, spec: EmbeddingSpec, weights: str | None, device: str, max_seconds: float | None):
        self.args = (spec, weights, device, max_seconds)

    def __call__(self) -> Encoder:
        from apexmusic.predict import build_embedder

        spec, weights, device, max_seconds = self.args
        return build_embedder(spec, weights=weights, device=device, max_seconds=max_seconds).encoder


def predict_inputs_ray(
    songs: Sequence[Song],
    model_dir: str | Path,
    out_file: str | Path,
    config: Any = None,
    on_progress: Callable[[int], None] | None = None,
    ray_address: str | None = None,
    num_cpus: int | None = None,
    num_gpus_per_actor: float | None = None,
    concurrency: int | None = None,
) -> Any:
    """``predict.predict_inputs`` on Ray Data: the same rows, resume and failure file.

    Songs are embedded by the Ray pipeline; the (small) scoring model runs on the driver
    through ``Predictor.score_embeddings``, so scores and rows are the local ones.
    """
    from apexmusic.predict import PredictConfig

    config = config or PredictConfig()
    settings = RaySettings(ray_address, num_cpus, num_gpus_per_actor, concurrency)
    start = time.perf_counter()
    started_ray = connect(settings.address, settings.num_cpus)
    try:
        return _predict(songs, model_dir, out_file, config, on_progress, settings, start)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def _predict(songs, model_dir, out_file, config, on_progress, settings: RaySettings, started: float):
    from apexmusic.predict import finish_predict_run, start_predict_run

    run = start_predict_run(songs, out_file, config, on_progress, started=started)
    try:
        _predict_run(run, model_dir, config, on_progress, settings)
    finally:
        report = finish_predict_run(run)
    return report


def _predict_run(run: Any, model_dir, config, on_progress, settings: RaySettings) -> None:
    from apexmusic.errors import ApexError
    from apexmusic.predict import check_duration

    predictor = config.load_predictor(model_dir)
    embedder = predictor.embedder
    make_encoder = _SpecEncoder(
        predictor.model.encoder_spec, config.weights, config.device, config.max_seconds
    )
    plan = plan_resources(settings)
    info = _EncoderInfo(
        {},
        embedder.batch_size,
        int(embedder.encoder.sample_rate),
        int(embedder.encoder.n_layers),
        int(embedder.encoder.dim),
    )
    pending: list[SongEmbedding] = []

    def fail(failure: Failure) -> None:
        run.fail(failure)
        if on_progress:
            on_progress(1)

    def score() -> None:
        run.add(predictor.score_embeddings(pending))  # the model's pooling rule, as predict_inputs
        if on_progress:
            on_progress(len(pending))
        pending.clear()

    for result in run_pipeline(
        run.todo, make_encoder, info, embedder.segment_config, embedder.compat, plan, settings
    ):
        if isinstance(result, Failure):
            fail(result)
            continue
        try:
            check_duration(result.duration_s, config.max_seconds)  # as Predictor.embed does
        except ApexError as exc:
            fail(Failure(result.id, result.path, exc.kind, str(exc)))
            continue
        pending.append(result)
        if len(pending) >= config.batch_size:
            score()
    if pending:
        score()


__all__ = [
    "ENV_ADDRESS",
    "RaySettings",
    "connect",
    "embed_inputs_ray",
    "plan_resources",
    "predict_inputs_ray",
    "probe_encoder",
    "run_pipeline",
]

"""The embedding and scoring engines on Ray Data, for catalogues that outgrow one machine.

This module connects to (or starts) Ray, sizes the stages to the cluster and runs them; the
embedding stages themselves are :mod:`apexmusic.embed.ray_stages`, built from the local
engine's decoder, encoder batching and song assembler, and every song lands in the very same
store through the local engine's :class:`~apexmusic.embed.StoreSink`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apexmusic.embed import (
    EmbedConfig,
    EmbedProgress,
    EmbedReport,
    EncoderFactory,
    StoreSink,
    open_run,
    record_run,
)
from apexmusic.embed.ray_stages import EncoderInfo, probe_encoder, run_pipeline
from apexmusic.encoders import Encoder
from apexmusic.errors import ConfigError
from apexmusic.sources import Song
from apexmusic.store import EmbeddingSpec, Failure, SongEmbedding

log = logging.getLogger(__name__)

ENV_ADDRESS = "RAY_ADDRESS"


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

    def __post_init__(self) -> None:
        for name in ("num_cpus", "concurrency"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.num_gpus_per_actor is not None and not self.num_gpus_per_actor >= 0:
            raise ConfigError(f"num_gpus_per_actor must be >= 0, got {self.num_gpus_per_actor}")
        if not self.decode_cpus > 0 or self.decode_songs_per_task < 1 or self.max_retries < 0:
            raise ConfigError("decode_cpus > 0, decode_songs_per_task >= 1 and max_retries >= 0 are required")


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


@contextmanager
def ray_connected(settings: RaySettings) -> Iterator[None]:
    """Ray for the duration of the block; shut down afterwards only if this call started it."""
    started = connect(settings.address, settings.num_cpus)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()


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
    encoder_factory: Callable[[], Encoder] | None = None,
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
    with ray_connected(settings):
        return _embed(songs, out_dir, config, on_progress, settings, encoder_factory, start)


def _embed(
    songs: list[Song],
    out_dir: str | Path,
    config: EmbedConfig,
    on_progress: Callable[[EmbedProgress], None] | None,
    settings: RaySettings,
    encoder_factory: Callable[[], Encoder] | None,
    start: float,
) -> EmbedReport:
    make_encoder = encoder_factory or EncoderFactory(config)
    resources = plan_resources(settings)
    info = probe_encoder(make_encoder, config, resources)
    plan = open_run(songs, out_dir, info.spec, config.resume)
    try:
        sink = StoreSink(
            plan, config.shard_songs, on_progress, start=start, flush_seconds=config.flush_seconds
        )
        sink.progress("")
        try:
            for result in run_pipeline(
                plan.todo, make_encoder, info, config.segment_config(), config.compat, resources, settings
            ):
                sink.put(result)
        except KeyboardInterrupt as exc:
            sink.flush()
            raise sink.interrupted(exc) from None
        finally:
            sink.flush()
        report = sink.report(out_dir)
        record_run(
            plan.store,
            report,
            config,
            "ray",
            info.batch_size,
            actors=resources.actors,
            gpus_per_actor=resources.gpus_per_actor,
        )
    finally:
        plan.store.close()
    return report


# ---------------------------------------------------------------------------------------------
# apexmusic predict --engine ray
# ---------------------------------------------------------------------------------------------


class _SpecEncoder:
    """A picklable factory: the encoder ``predict.build_embedder`` builds for a model's spec
    (checked against it by the one compatibility rule on every worker)."""

    def __init__(
        self,
        spec: EmbeddingSpec,
        weights: str | None,
        device: str,
        max_seconds: float | None,
        precision: str = "auto",
    ):
        self.args = (spec, weights, device, max_seconds, precision)

    def __call__(self) -> Encoder:
        from apexmusic.predict import build_embedder

        spec, weights, device, max_seconds, precision = self.args
        embedder = build_embedder(
            spec, weights=weights, device=device, max_seconds=max_seconds, precision=precision
        )
        return embedder.encoder


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
    with ray_connected(settings):
        return _predict(songs, model_dir, out_file, config, on_progress, settings, start)


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
        predictor.model.encoder_spec, config.weights, config.device, config.max_seconds, config.precision
    )
    plan = plan_resources(settings)
    info = EncoderInfo(
        None,
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
    "ray_connected",
    "run_pipeline",
]

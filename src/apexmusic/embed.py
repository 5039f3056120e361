"""Batched embedding extraction: songs in, an embedding store out.

How ``embed_inputs`` runs (the local engine):

1. Songs already in the store are skipped under ``resume``; the rest are checked for
   duplicate content: files whose sizes collide are hashed up front, and a file whose
   SHA-256 was already claimed by another song is not decoded again -- that song gets a copy
   of the first one's vectors (``EmbedReport.n_cached``).
2. Decoder worker processes (``workers``; 0 decodes in-process) stream each song's segments
   through their own pipe; a pump thread forwards them into one bounded queue, so decoding
   overlaps the encoder and memory stays bounded by the queue (a few batches of segments)
   whatever the song lengths. A decoder that crashes or hangs is replaced; its song fails.
3. The main process gathers segments *across songs* into batches of ``batch_size``, full
   segments and last (shorter) segments in separate batches so a batch is trimmed to its
   longest row, and runs the encoder on each batch.
4. When all of a song's segments are encoded, its song-level vector is the mean of its
   segment vectors weighted by valid seconds (a plain mean in reference compat) and the
   song joins the write buffer, which becomes one atomic Parquet shard every
   ``shard_songs`` songs (and every two minutes), so an interrupted run loses at most the
   buffer (which is still written on Ctrl-C) and ``--resume`` redoes exactly the songs not
   in a shard.
5. A song that fails anywhere (decode, content, encoder, a decoder process that crashed or
   hung) becomes one ``failures.jsonl`` line; the other songs carry on.

``SongEmbedder`` does the same for one song in memory (no store), for prediction and serving.
Reference compatibility (``compat="reference"``): 30 s segments, the last zero-padded and
counted as full (``SegmentConfig(pad_last=True)``), fp32, plain mean over segments; the
encoder gets ``compat="reference"`` and pools what the published pipeline pools.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from apexmusic.audio import Segment, SegmentConfig, file_sha256, iter_segments, segment_array
from apexmusic.devices import PRECISIONS
from apexmusic.encoders import Encoder, load_encoder
from apexmusic.errors import ApexError, ConfigError
from apexmusic.sources import Song
from apexmusic.store import EmbeddingStore, Failure, SongEmbedding

log = logging.getLogger(__name__)

REFERENCE = "reference"
DEFAULT_MAX_SECONDS = 3600.0
FLUSH_SECONDS = 120.0


@dataclass
class EmbedConfig:
    """Settings of one extraction run (CLI flags map one to one)."""

    encoder: str = "handcrafted"
    weights: str | None = None
    segment_seconds: float = 30.0
    hop_seconds: float | None = None
    batch_size: int | None = None  # None: the encoder's default_batch_size, else 8
    device: str = "auto"
    precision: str = "auto"
    compat: str | None = None  # "reference": the published pipeline, bit for bit in spirit
    workers: int | None = None  # decoder processes; None: cores - 1 (at most 8); 0: in-process
    resume: bool = False
    max_seconds: float | None = DEFAULT_MAX_SECONDS  # longer songs fail with a content error
    shard_songs: int = 256  # songs per Parquet shard
    decode_timeout_s: float = 900.0  # a decoder stuck this long on one song is killed
    encoder_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.compat not in (None, REFERENCE):
            raise ConfigError(f"compat must be 'reference' or unset, got {self.compat!r}")
        if self.compat == REFERENCE:
            if self.segment_seconds != 30.0 or self.hop_seconds not in (None, 30.0):
                raise ConfigError("--compat reference uses 30 s segments without overlap")
            if self.precision not in ("auto", "fp32"):
                raise ConfigError("--compat reference runs in fp32")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.shard_songs < 1:
            raise ConfigError(f"shard_songs must be >= 1, got {self.shard_songs}")
        self.segment_config()  # validates lengths

    def segment_config(self) -> SegmentConfig:
        return SegmentConfig(
            segment_seconds=self.segment_seconds,
            hop_seconds=self.hop_seconds,
            pad_last=self.compat == REFERENCE,
            max_seconds=self.max_seconds,
        )

    def n_workers(self, encode_in_workers: bool = False) -> int:
        if self.workers is not None:
            return self.workers
        if encode_in_workers:  # the main process only assembles: every core decodes and encodes
            return max(1, min(32, os.cpu_count() or 2))
        return max(1, min(8, (os.cpu_count() or 2) - 1))  # one decodes ~450x real time


@dataclass
class EmbedProgress:
    """Passed to ``on_progress`` after every finished, failed or cached song."""

    done: int
    failed: int
    skipped: int
    total: int  # songs this run has to do (after skipping)
    audio_seconds: float
    wall_seconds: float
    last_id: str = ""


@dataclass
class EmbedReport:
    n_done: int
    n_failed: int
    n_skipped: int
    audio_seconds: float
    wall_seconds: float
    failures: list[Failure]
    n_cached: int = 0  # done songs whose vectors were copied from a song with identical content
    out_dir: str = ""

    @property
    def audio_hours_per_second(self) -> float:
        return self.audio_seconds / 3600.0 / max(self.wall_seconds, 1e-9)


# ---------------------------------------------------------------------------------------------
# Building blocks shared with the Ray engine and the predictor
# ---------------------------------------------------------------------------------------------


def build_encoder(config: EmbedConfig) -> Encoder:
    """Load the encoder a config names (reference compat forces fp32 and tells the encoder)."""
    config.validate()
    options = dict(config.encoder_options)
    precision = config.precision
    if config.compat == REFERENCE:
        options["compat"] = REFERENCE
        precision = "fp32"
    return load_encoder(
        config.encoder, weights=config.weights, device=config.device, precision=precision, **options
    )


def store_manifest(encoder: Encoder, config: EmbedConfig) -> dict[str, Any]:
    """The store manifest for vectors made by ``encoder`` under ``config``."""
    from apexmusic import __version__

    segment = config.segment_config()
    return {
        "encoder": encoder.name,
        "weights": encoder.weights_id,
        "n_layers": int(encoder.n_layers),
        "dim": int(encoder.dim),
        "sample_rate": int(encoder.sample_rate),
        "segment_seconds": float(segment.segment_seconds),
        "hop_seconds": float(segment.hop_seconds or segment.segment_seconds),
        "compat": config.compat,
        "encoder_settings": encoder.describe(),
        "pad_last": segment.pad_last,
        "segment_weighting": "uniform" if config.compat == REFERENCE else "valid_seconds",
        "code_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def combine_segments(
    vectors: np.ndarray, valid: np.ndarray, sample_rate: int, compat: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Song-level ``[L, D]`` from segment vectors ``[S, L, D]``; returns (layers, weights).

    Weights are each segment's valid seconds (the reference pipeline: 1 each, a plain mean).
    """
    if compat == REFERENCE:
        weights = np.ones(len(vectors), np.float64)
    else:
        weights = np.asarray(valid, np.float64) / float(sample_rate)
    layers = np.tensordot(weights, vectors.astype(np.float64), axes=(0, 0)) / weights.sum()
    return layers.astype(np.float32), weights.astype(np.float32)


def default_batch_size(encoder: Encoder, config_batch: int | None = None) -> int:
    return int(config_batch or getattr(encoder, "default_batch_size", 8))


def encode_batch(
    encoder: Encoder, audio: Sequence[np.ndarray], valid: Sequence[int]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Encode segments of possibly different lengths: zero-pad to the longest, pass lengths."""
    width = max(a.shape[0] for a in audio)
    batch = np.zeros((len(audio), width), np.float32)
    for row, a in zip(batch, audio, strict=True):
        row[: a.shape[0]] = a
    lengths = np.asarray(valid, np.int64)
    vectors = np.asarray(encoder.encode(batch, lengths), dtype=np.float32)
    extras_fn = getattr(encoder, "extras", None)
    extras = {
        k: np.asarray(v, np.float32) for k, v in (extras_fn(batch, lengths) if extras_fn else {}).items()
    }
    return vectors, extras


def song_embedding(
    song: Song,
    sha: str,
    duration: float,
    vectors: np.ndarray,
    valid: np.ndarray,
    extras: dict[str, np.ndarray],
    sample_rate: int,
    compat: str | None,
) -> SongEmbedding:
    """A song's store row from its segment vectors: song-level layers (and extras) are the
    segment values averaged with weights = valid seconds (a plain mean in reference compat).
    The local and the Ray engine both assemble songs here."""
    layers, weights = combine_segments(vectors, valid, sample_rate, compat)
    song_extras = {
        k: (weights[:, None] * v.reshape(len(v), -1)).sum(0) / weights.sum() for k, v in extras.items()
    }
    return SongEmbedding(
        id=song.id,
        path=song.path,
        sha256=sha,
        duration_s=float(duration),
        layers=layers,
        segments=vectors,
        segment_weights=weights,
        extras=song_extras,
    )


# ---------------------------------------------------------------------------------------------
# In-memory embedding of one song
# ---------------------------------------------------------------------------------------------


class SongEmbedder:
    """Embed one song at a time in memory (no store): used by ``predict`` and the service."""

    def __init__(
        self,
        encoder: Encoder,
        segment_config: SegmentConfig | None = None,
        compat: str | None = None,
        batch_size: int | None = None,
    ):
        segment_config = segment_config or SegmentConfig()
        if compat == REFERENCE and not segment_config.pad_last:
            segment_config = SegmentConfig(**{**asdict(segment_config), "pad_last": True})
        self.encoder = encoder
        self.segment_config = segment_config
        self.compat = compat
        self.batch_size = default_batch_size(encoder, batch_size)

    @classmethod
    def from_config(cls, config: EmbedConfig) -> SongEmbedder:
        return cls(build_encoder(config), config.segment_config(), config.compat, config.batch_size)

    def embed_path(self, song: Song) -> SongEmbedding:
        """Decode, segment and encode one file (streaming). Raises ApexError subclasses."""
        sha = file_sha256(song.path)
        stream = iter_segments(song.path, self.encoder.sample_rate, self.segment_config)
        vectors, valid, extras = self._encode_stream(stream)
        return song_embedding(
            song, sha, stream.duration_s, vectors, valid, extras, self.encoder.sample_rate, self.compat
        )

    def embed_array(self, audio: np.ndarray, sr: int, id: str = "array", path: str = "") -> SongEmbedding:
        """Embed in-memory audio (``[T]``, ``[T, C]`` or ``[C, T]``, see ``segment_array``)."""
        audio = np.asarray(audio)
        sha = hashlib.sha256(np.ascontiguousarray(audio).tobytes()).hexdigest()
        segments = segment_array(audio, sr, self.encoder.sample_rate, self.segment_config)
        vectors, valid, extras = self._encode_stream(iter(segments))
        duration = audio.shape[0 if audio.ndim == 1 or audio.shape[0] > audio.shape[1] else 1] / sr
        return song_embedding(
            Song(id, path), sha, duration, vectors, valid, extras, self.encoder.sample_rate, self.compat
        )

    def _encode_stream(self, segments: Iterator[Segment]) -> tuple[np.ndarray, np.ndarray, dict]:
        vectors: list[np.ndarray] = []
        valid: list[int] = []
        extras: dict[str, list[np.ndarray]] = defaultdict(list)
        pending: list[Segment] = []

        def flush() -> None:
            out, ex = encode_batch(
                self.encoder, [s.audio[: s.valid] for s in pending], [s.valid for s in pending]
            )
            vectors.extend(out)
            valid.extend(s.valid for s in pending)
            for k, v in ex.items():
                extras[k].extend(v)
            pending.clear()

        for segment in segments:
            pending.append(segment)
            if len(pending) >= self.batch_size:
                flush()
        if pending:
            flush()
        stacked = np.stack(vectors)
        _check_finite(stacked)
        return stacked, np.asarray(valid), {k: np.stack(v) for k, v in extras.items()}


def _check_finite(vectors: np.ndarray) -> None:
    from apexmusic.errors import AudioContentError

    if not np.isfinite(vectors).all():
        raise AudioContentError("the encoder produced non-finite values for this audio")


# ---------------------------------------------------------------------------------------------
# Decoding workers
# ---------------------------------------------------------------------------------------------


def decode_song(
    idx: int, path: str, sha: str | None, sample_rate: int, segment: SegmentConfig
) -> Iterator[tuple]:
    """Messages for one song: ("seg", idx, k, audio, valid)... then ("end", ...) or ("fail", ...)."""
    try:
        sha = sha or file_sha256(path)
        stream = iter_segments(path, sample_rate, segment)
        k = -1
        for k, seg in enumerate(stream):
            yield (
                "seg",
                idx,
                k,
                seg.audio[: seg.valid] if seg.valid < seg.audio.size else seg.audio,
                seg.valid,
            )
        yield ("end", idx, k + 1, stream.duration_s, sha)
    except ApexError as exc:
        yield ("fail", idx, exc.kind, str(exc))
    except MemoryError:
        yield ("fail", idx, "content", "out of memory while decoding")
    except Exception as exc:  # a decoder bug must cost one song, not the run
        yield ("fail", idx, "decode", f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")


def _encode_song(messages: Iterator[tuple], encoder: Encoder) -> Iterator[tuple]:
    """Turn a song's ("seg", ...) messages into ("vec", idx, k, vectors [L, D], valid, extras)."""
    for message in messages:
        if message[0] != "seg":
            yield message
            continue
        _, idx, k, audio, valid = message
        try:
            vectors, extras = encode_batch(encoder, [audio], [valid])
        except Exception as exc:  # an encoder error costs this song only
            yield ("fail", idx, "encode", f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
            return
        yield ("vec", idx, k, vectors[0], valid, {name: v[0] for name, v in extras.items()})


@dataclass
class _EncoderFactory:
    """Picklable recipe for the run's encoder, built inside each decoder process."""

    config: EmbedConfig

    def __call__(self) -> Encoder:
        return build_encoder(self.config)


def _worker_main(
    conn, sample_rate: int, segment: SegmentConfig, log_level: int, encoder_factory: Any = None
) -> None:
    """Decoder process: receive (idx, path, sha) tasks on ``conn`` until None; send messages back.

    Each worker has its own pipe, so a worker that crashes mid-message can corrupt or lock
    nothing shared (a shared ``multiprocessing.Queue`` would be left locked or half-written).
    """
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    encoder = encoder_factory() if encoder_factory is not None else None
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        idx, path, sha = task
        messages = decode_song(idx, path, sha, sample_rate, segment)
        if encoder is not None:
            messages = _encode_song(messages, encoder)
        try:
            for message in messages:
                conn.send(message)  # blocks while the main process is behind: back-pressure
        except (BrokenPipeError, OSError):
            return


@dataclass
class _Worker:
    proc: Any
    conn: Any
    task: tuple[int, float] | None = None  # (song idx, start time) while decoding


class _WorkerPool:
    """Decoder processes, one pipe each, drained by a pump thread into one bounded queue.

    The pump thread hands out tasks, forwards messages, and replaces a process that dies or
    hangs (its song becomes a ``fail`` message). Memory is bounded by ``queue_size`` messages
    plus one in flight per worker.
    """

    def __init__(
        self,
        n: int,
        sample_rate: int,
        segment: SegmentConfig,
        queue_size: int,
        timeout_s: float,
        encoder_factory: Any = None,
    ):
        import multiprocessing as mp
        import threading

        self.ctx = mp.get_context("spawn")  # never fork a process that may hold torch threads
        level = logging.getLogger("apexmusic").getEffectiveLevel()
        self.args = (sample_rate, segment, level, encoder_factory)
        self.timeout_s = timeout_s
        self.inbox: queue.Queue = queue.Queue(maxsize=queue_size)
        self.pending: list[tuple[int, str, str | None]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.idle_deaths = 0
        self.workers = [self._spawn() for _ in range(n)]
        self.thread = threading.Thread(target=self._pump, name="apexmusic-decoders", daemon=True)
        self.thread.start()

    def _spawn(self) -> _Worker:
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(target=_worker_main, args=(child, *self.args), daemon=True)
        proc.start()
        child.close()  # only the worker holds its end: its death reads as EOF here
        return _Worker(proc, parent)

    def submit(self, tasks: list[tuple[int, str, str | None]]) -> None:
        with self.lock:
            self.pending.extend(reversed(tasks))

    def messages(self, is_finished: Callable[[], bool]) -> Iterator[tuple]:
        while not is_finished():
            try:
                message = self.inbox.get(timeout=0.2)
            except queue.Empty:
                yield ("idle",)
                continue
            if message[0] == "fatal":
                raise ConfigError(message[1])
            yield message

    # ---- pump thread ----------------------------------------------------------------------
    def _pump(self) -> None:
        try:
            self._pump_loop()
        except Exception as exc:  # never leave the main thread waiting on a dead pump
            log.exception("decoder pump failed")
            self._put(("fatal", f"decoder pump failed: {type(exc).__name__}: {exc}"))

    def _pump_loop(self) -> None:
        from multiprocessing.connection import wait

        while not self.stop.is_set():
            self._dispatch()
            by_conn = {w.conn: w for w in self.workers}
            for conn in wait(list(by_conn), timeout=0.2):
                worker = by_conn[conn]
                try:
                    message = conn.recv()
                except (EOFError, OSError, ValueError):  # died (maybe mid-message)
                    self._replace(worker, f"decoder process died (exit code {self._exit_code(worker)})")
                    continue
                if message[0] in ("end", "fail"):
                    worker.task = None
                self._put(message)
            self._check_health()

    def _dispatch(self) -> None:
        for worker in self.workers:
            if worker.task is not None:
                continue
            with self.lock:
                if not self.pending:
                    return
                task = self.pending.pop()
            worker.task = (task[0], time.monotonic())
            try:
                worker.conn.send(task)
            except (BrokenPipeError, OSError):
                self._replace(worker, "decoder process died before starting")

    def _check_health(self) -> None:
        now = time.monotonic()
        for worker in list(self.workers):
            if worker.task is not None and now - worker.task[1] > self.timeout_s:
                worker.proc.kill()
                worker.proc.join(5)
                self._replace(worker, f"decoding took over {self.timeout_s:.0f} s; decoder stopped")
            elif not worker.proc.is_alive() and not worker.conn.poll():
                self._replace(worker, f"decoder process died (exit code {self._exit_code(worker)})")

    @staticmethod
    def _exit_code(worker: _Worker) -> int | None:
        worker.proc.join(1)
        return worker.proc.exitcode

    def _replace(self, worker: _Worker, reason: str) -> None:
        if worker.proc.is_alive():
            worker.proc.kill()
            worker.proc.join(5)
        worker.conn.close()
        if worker.task is not None:
            self._put(("fail", worker.task[0], "decode", reason))
        else:
            self.idle_deaths += 1
            if self.idle_deaths > 2 * len(self.workers):
                self._put(
                    ("fatal", f"decoder processes keep dying before any work ({reason}); try --workers 0")
                )
                self.stop.set()
                return
        log.warning("%s; starting a new decoder process", reason)
        self.workers[self.workers.index(worker)] = self._spawn()

    def _put(self, message: tuple) -> None:
        while not self.stop.is_set():
            try:
                self.inbox.put(message, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for worker in self.workers:
            try:
                worker.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 5
        for worker in self.workers:
            worker.proc.join(max(0.0, deadline - time.monotonic()))
            if worker.proc.is_alive():
                worker.proc.kill()
                worker.proc.join(1)
            worker.conn.close()


def _spawn_can_start() -> bool:
    """Spawned processes re-run ``__main__`` from its file; a script read from stdin has none."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or os.path.exists(main_file)


def _in_process_messages(
    tasks: list[tuple[int, str, str | None]], sample_rate: int, segment: SegmentConfig
) -> Iterator[tuple]:
    for idx, path, sha in tasks:
        yield from decode_song(idx, path, sha, sample_rate, segment)


# ---------------------------------------------------------------------------------------------
# The local engine
# ---------------------------------------------------------------------------------------------


@dataclass
class SongParts:
    """One song's segment vectors as they arrive, in any order, until all of them are in
    (the local engine's decoders and the Ray engine's actors both deliver them this way)."""

    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    valid: dict[int, int] = field(default_factory=dict)
    extras: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    n_segments: int | None = None
    duration_s: float = 0.0
    sha256: str = ""

    def complete(self) -> bool:
        return self.n_segments is not None and len(self.vectors) == self.n_segments


@dataclass(kw_only=True)
class _SongState(SongParts):
    song: Song


class StoreSink:
    """Where finished songs go, for the local and the Ray engine alike: buffered into atomic store
    shards (every ``shard_songs`` songs, or after ``FLUSH_SECONDS``), failures appended to
    ``failures.jsonl``, progress reported after each song."""

    def __init__(
        self,
        store: EmbeddingStore,
        shard_songs: int,
        total: int,
        n_skipped: int,
        on_progress: Callable[[EmbedProgress], None] | None,
        start: float | None = None,
    ):
        self.store = store
        self.shard_songs = shard_songs
        self.total = total
        self.n_skipped = n_skipped
        self.on_progress = on_progress
        self.start = time.monotonic() if start is None else start
        self.buffer: list[SongEmbedding] = []
        self.failures: list[Failure] = []
        self.n_done = self.n_cached = 0
        self.audio_seconds = 0.0
        self.last_flush = time.monotonic()

    def add(self, embedding: SongEmbedding, cached: bool = False) -> None:
        self.buffer.append(embedding)
        self.n_done += 1
        self.n_cached += cached
        self.audio_seconds += embedding.duration_s
        if len(self.buffer) >= self.shard_songs:
            self.flush()
        else:
            self.flush_if_due()
        self.progress(embedding.id)

    def fail(self, failure: Failure) -> None:
        self.store.record_failure(failure)
        self.failures.append(failure)
        log.info("failed %s: %s: %s", failure.id, failure.kind, failure.message)
        self.progress(failure.id)

    def flush_if_due(self) -> None:
        """Write what is buffered once FLUSH_SECONDS have passed, so an interrupted slow job
        loses at most that much work."""
        if self.buffer and time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.store.write(self.buffer)
            self.buffer = []
        self.last_flush = time.monotonic()

    def progress(self, last_id: str) -> None:
        if self.on_progress is not None:
            self.on_progress(
                EmbedProgress(
                    self.n_done,
                    len(self.failures),
                    self.n_skipped,
                    self.total,
                    self.audio_seconds,
                    time.monotonic() - self.start,
                    last_id,
                )
            )

    def report(self, out_dir: str | Path) -> EmbedReport:
        return EmbedReport(
            self.n_done,
            len(self.failures),
            self.n_skipped,
            self.audio_seconds,
            time.monotonic() - self.start,
            self.failures,
            self.n_cached,
            str(out_dir),
        )


class _Run:
    """One ``embed_inputs`` call: batching across songs, assembling, writing, reporting."""

    def __init__(
        self,
        songs: list[Song],
        store: EmbeddingStore,
        encoder: Encoder,
        config: EmbedConfig,
        n_skipped: int,
        on_progress: Callable[[EmbedProgress], None] | None,
    ):
        self.songs = songs
        self.store = store
        self.encoder = encoder
        self.config = config
        self.segment = config.segment_config()
        self.full_samples = self.segment.segment_samples(encoder.sample_rate)
        self.batch_size = default_batch_size(encoder, config.batch_size)
        self.sink = StoreSink(store, config.shard_songs, len(songs), n_skipped, on_progress)
        self.states: dict[int, _SongState] = {}
        self.batches: dict[bool, list[tuple[int, int, np.ndarray, int]]] = {True: [], False: []}
        self.copies: dict[int, list[int]] = defaultdict(list)  # primary idx -> duplicate idxs
        self.resolved = 0
        self.workers_used = 0

    # ---- main loop ------------------------------------------------------------------------
    def run(self) -> None:
        tasks = self._plan()
        self.sink.progress("")
        if not tasks:
            return
        in_workers = bool(getattr(self.encoder, "encode_in_decoder", False))
        n_workers = min(self.config.n_workers(in_workers), len(tasks))
        if self.config.workers is None and len(tasks) == 1:
            n_workers = 0  # one song: a worker's start-up (~1 s) would cost more than it overlaps
        if n_workers and not _spawn_can_start():
            log.info("decoding in-process: worker processes cannot re-import __main__ (a script on stdin)")
            n_workers = 0
        self.workers_used = n_workers
        try:
            if n_workers == 0:
                self._consume(_in_process_messages(tasks, self.encoder.sample_rate, self.segment))
                return
            queue_size = max(4, 2 * self.batch_size + 2 * n_workers)
            factory = _EncoderFactory(self.config) if in_workers else None
            if in_workers:
                log.info(
                    "%d processes decode and encode (%s is light enough to run beside its decoder)",
                    n_workers,
                    self.encoder.name,
                )
            pool = _WorkerPool(
                n_workers,
                self.encoder.sample_rate,
                self.segment,
                queue_size,
                self.config.decode_timeout_s,
                factory,
            )
            try:
                pool.submit(tasks)
                self._consume(pool.messages(lambda: self.resolved >= len(self.songs)))
            finally:
                pool.close()
        finally:  # also on Ctrl-C: finished songs reach a shard, so --resume skips them
            self.sink.flush()

    def _plan(self) -> list[tuple[int, str, str | None]]:
        """Decode tasks, one per distinct content; duplicates wait for their primary's vectors."""
        hashes = _hash_size_collisions([s.path for s in self.songs])
        owner: dict[str, int] = {}
        tasks = []
        for idx, song in enumerate(self.songs):
            sha = hashes.get(idx)
            if sha is not None and sha in owner:
                self.copies[owner[sha]].append(idx)
                continue
            if sha is not None:
                owner[sha] = idx
            self.states[idx] = _SongState(song=song)
            tasks.append((idx, song.path, sha))
        if self.copies:
            log.info(
                "%d songs share content with another input; decoding each content once",
                sum(map(len, self.copies.values())),
            )
        return tasks

    def _consume(self, messages: Iterator[tuple]) -> None:
        for message in messages:
            kind = message[0]
            if kind == "seg":
                self._add_segment(*message[1:])
            elif kind == "vec":
                self._add_vectors(*message[1:])
            elif kind == "end":
                self._end_song(*message[1:])
            elif kind == "fail":
                self._fail(message[1], message[2], message[3])
            elif kind == "idle":
                self._run_batches(partial=True)
            self.sink.flush_if_due()
        self._run_batches(partial=True)

    # ---- segments and batches ---------------------------------------------------------------
    def _add_segment(self, idx: int, k: int, audio: np.ndarray, valid: int) -> None:
        if idx not in self.states:
            return  # the song already failed
        full = audio.shape[0] == self.full_samples
        bucket = self.batches[full]
        bucket.append((idx, k, audio, valid))
        if len(bucket) >= self.batch_size:
            self._run_batch(full)

    def _add_vectors(self, idx: int, k: int, vectors: np.ndarray, valid: int, extras: dict) -> None:
        """A segment a decoder process already encoded (encoders with ``encode_in_decoder``)."""
        state = self.states.get(idx)
        if state is None:
            return
        if not np.isfinite(vectors).all():
            self._fail(idx, "content", "the encoder produced non-finite values for this audio")
            return
        state.vectors[k], state.valid[k], state.extras[k] = vectors, valid, extras
        self._maybe_finish(idx)

    def _run_batches(self, partial: bool) -> None:
        for full in (True, False):
            if self.batches[full] and (partial or len(self.batches[full]) >= self.batch_size):
                self._run_batch(full)

    def _run_batch(self, full: bool) -> None:
        items = [it for it in self.batches[full] if it[0] in self.states]
        self.batches[full] = []
        if not items:
            return
        try:
            vectors, extras = encode_batch(self.encoder, [it[2] for it in items], [it[3] for it in items])
        except Exception as exc:  # isolate the segment that breaks the encoder
            if len(items) == 1:
                self._fail(items[0][0], "encode", f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
                return
            log.warning("a batch of %d failed in the encoder (%s); retrying one by one", len(items), exc)
            for item in items:
                self.batches[full] = [item]
                self._run_batch(full)
            return
        touched = []
        for row, (idx, k, _audio, valid) in enumerate(items):
            state = self.states.get(idx)
            if state is None:
                continue
            if not np.isfinite(vectors[row]).all():
                self._fail(idx, "content", "the encoder produced non-finite values for this audio")
                continue
            state.vectors[k] = vectors[row]
            state.valid[k] = valid
            state.extras[k] = {name: values[row] for name, values in extras.items()}
            touched.append(idx)
        for idx in dict.fromkeys(touched):
            self._maybe_finish(idx)

    # ---- songs -------------------------------------------------------------------------
    def _end_song(self, idx: int, n_segments: int, duration_s: float, sha: str) -> None:
        state = self.states.get(idx)
        if state is None:
            return
        state.n_segments, state.duration_s, state.sha256 = n_segments, duration_s, sha
        self._maybe_finish(idx)

    def _maybe_finish(self, idx: int) -> None:
        state = self.states.get(idx)
        if state is None or not state.complete():
            return
        del self.states[idx]
        order = sorted(state.vectors)
        vectors = np.stack([state.vectors[k] for k in order])
        valid = np.asarray([state.valid[k] for k in order])
        extras = {name: np.stack([state.extras[k][name] for k in order]) for name in state.extras[order[0]]}
        embedding = song_embedding(
            state.song,
            state.sha256,
            state.duration_s,
            vectors,
            valid,
            extras,
            self.encoder.sample_rate,
            self.config.compat,
        )
        self._done(embedding, cached=False)
        for dup in self.copies.pop(idx, []):
            song = self.songs[dup]
            self._done(
                SongEmbedding(
                    song.id,
                    song.path,
                    embedding.sha256,
                    embedding.duration_s,
                    embedding.layers,
                    embedding.segments,
                    embedding.segment_weights,
                    dict(embedding.extras),
                ),
                cached=True,
            )

    def _done(self, embedding: SongEmbedding, cached: bool) -> None:
        self.resolved += 1
        self.sink.add(embedding, cached)

    def _fail(self, idx: int, kind: str, message: str) -> None:
        state = self.states.pop(idx, None)
        if state is None:
            return
        self._record_failure(state.song, kind, message)
        for dup in self.copies.pop(idx, []):
            self._record_failure(self.songs[dup], kind, f"same content as {state.song.id}: {message}")

    def _record_failure(self, song: Song, kind: str, message: str) -> None:
        self.resolved += 1
        self.sink.fail(Failure(song.id, song.path, kind, message))


def _hash_size_collisions(paths: Sequence[str]) -> dict[int, str]:
    """SHA-256 of the files whose byte size equals another input's (only they can be duplicates)."""
    by_size: dict[int, list[int]] = defaultdict(list)
    for idx, path in enumerate(paths):
        try:
            size = os.stat(path).st_size
        except OSError:
            continue
        if size > 0:
            by_size[size].append(idx)
    hashes: dict[int, str] = {}
    for group in by_size.values():
        if len(group) < 2:
            continue
        for idx in group:
            try:
                hashes[idx] = file_sha256(paths[idx])
            except (ApexError, OSError):
                continue
    return hashes


def embed_inputs(
    songs: list[Song],
    out_dir: str | Path,
    config: EmbedConfig | None = None,
    on_progress: Callable[[EmbedProgress], None] | None = None,
) -> EmbedReport:
    """Embed ``songs`` into the store at ``out_dir`` (created, or continued under ``config.resume``).

    Per-song problems never raise: they become ``failures.jsonl`` lines and ``report.failures``.
    Raises ConfigError / StoreError / ModelLoadError for problems with the run itself.
    """
    config = config or EmbedConfig()
    config.validate()
    encoder = build_encoder(config)
    store = EmbeddingStore.create(out_dir, store_manifest(encoder, config), resume=config.resume)
    done = store.done_ids() if config.resume else set()
    todo = [s for s in songs if s.id not in done]
    n_skipped = len(songs) - len(todo)
    if n_skipped:
        log.info("resume: %d of %d songs are already in %s", n_skipped, len(songs), out_dir)
    run = _Run(todo, store, encoder, config, n_skipped, on_progress)
    run.run()
    report = run.sink.report(out_dir)
    store.update_manifest(
        last_run={
            "songs_done": report.n_done,
            "songs_failed": report.n_failed,
            "songs_skipped": report.n_skipped,
            "songs_cached": report.n_cached,
            "audio_seconds": round(report.audio_seconds, 3),
            "wall_seconds": round(report.wall_seconds, 3),
            "workers": run.workers_used,
            "batch_size": run.batch_size,
            "device": config.device,
            "precision": config.precision,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    return report

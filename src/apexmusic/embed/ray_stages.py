"""The Ray engine's embedding stages: the local engine's decoder, encoder and assembler on
Ray Data (``apexmusic.distributed`` connects, sizes and runs them).

1. **songs** -- ``from_items`` over the songs still to do;
2. **decode** -- CPU tasks (``flat_map``) run :func:`~apexmusic.embed.messages.decode_song`
   on each song: its SegmentAudio messages, then SongEnd, or SongFailed;
3. **encode** -- a pool of actors (``map_batches`` with a callable class), each loading the
   encoder once, runs :func:`~apexmusic.embed.messages.encode_segments` on full segments and
   shorter last segments in separate batches, as the local engine does;
4. **assemble** -- the driver feeds the messages to the local engine's
   :class:`~apexmusic.embed.assembly.SongAssembler`.

Ray Data moves rows, not objects: messages become rows when they enter the dataset and
become messages again when they leave it (:func:`message_row`, :func:`row_message`), and
nowhere else. Re-assembling on the driver (instead of a Ray ``groupby``) keeps the pipeline
streaming: a ``groupby`` is an all-to-all barrier that would hold every vector until the last
song is encoded, so an interrupted job would leave nothing to resume from. Segment vectors are
small (13 x 768 floats for MERT-95M); the audio never reaches the driver.

Fault tolerance comes from Ray Data: tasks whose worker dies are retried and actors are
restarted with their in-flight batch resubmitted. The assembler keys every segment vector by
(song, segment index), so a retried task that re-emits rows cannot duplicate a song.
"""

from __future__ import annotations

import io
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apexmusic.audio import SegmentConfig
from apexmusic.embed.assembly import SongAssembler
from apexmusic.embed.config import EmbedConfig, spec_for
from apexmusic.embed.messages import (
    DecodeTask,
    Message,
    SegmentAudio,
    SegmentVectors,
    SongEnd,
    SongFailed,
    decode_song,
    encode_segments,
)
from apexmusic.encoders import Encoder
from apexmusic.sources import Song
from apexmusic.store import EmbeddingSpec, Failure, SongEmbedding

log = logging.getLogger(__name__)

EncoderFactory = Callable[[], Encoder]

# ---------------------------------------------------------------------------------------------
# Messages <-> rows, at the dataset boundary only
# ---------------------------------------------------------------------------------------------

_ROW_DEFAULTS: dict[str, Any] = {
    "idx": -1,
    "kind": "",
    "k": -1,
    "valid": 0,
    "data": b"",  # float32 audio (kind "audio") or vectors (kind "vectors")
    "extras": b"",
    "duration": 0.0,
    "sha": "",
    "fail_kind": "",
    "message": "",
}


def message_row(message: Message) -> dict[str, Any]:
    """One dataset row for a message."""
    if isinstance(message, SegmentAudio):
        values = {"kind": "audio", "k": message.k, "valid": message.valid, "data": _floats(message.audio)}
    elif isinstance(message, SegmentVectors):
        values = {
            "kind": "vectors",
            "k": message.k,
            "valid": message.valid,
            "data": _floats(message.vectors),
            "extras": _pack(message.extras),
        }
    elif isinstance(message, SongEnd):
        values = {
            "kind": "end",
            "k": message.n_segments,
            "duration": message.duration_s,
            "sha": message.sha256,
        }
    else:
        values = {"kind": "fail", "fail_kind": message.kind, "message": message.message}
    return {**_ROW_DEFAULTS, "idx": int(message.idx), **values}


def row_message(row: Mapping[str, Any], shape: tuple[int, int] | None = None) -> Message:
    """The message a dataset row carries (``shape``: ``[n_layers, dim]`` of vector rows)."""
    idx, kind = int(row["idx"]), str(row["kind"])
    if kind == "audio":
        return SegmentAudio(idx, int(row["k"]), np.frombuffer(row["data"], np.float32), int(row["valid"]))
    if kind == "vectors":
        vectors = np.frombuffer(row["data"], np.float32)
        vectors = vectors.reshape(shape) if shape else vectors
        return SegmentVectors(idx, int(row["k"]), vectors, int(row["valid"]), _unpack(row["extras"]))
    if kind == "end":
        return SongEnd(idx, int(row["k"]), float(row["duration"]), str(row["sha"]))
    return SongFailed(idx, str(row["fail_kind"]), str(row["message"]))


def _batch_rows(batch: Mapping[str, np.ndarray]) -> Iterator[dict[str, Any]]:
    for i in range(len(batch["idx"])):
        yield {key: batch[key][i] for key in _ROW_DEFAULTS}


def _floats(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype=np.float32).tobytes()


def _pack(arrays: Mapping[str, np.ndarray]) -> bytes:
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
# Stage 2: decoding tasks
# ---------------------------------------------------------------------------------------------


class DecodeSongs:
    """``flat_map`` function: one song row in, its message rows out."""

    def __init__(self, sample_rate: int, segment: SegmentConfig):
        self.sample_rate = sample_rate
        self.segment = segment

    def __call__(self, song: dict[str, Any]) -> Iterator[dict[str, Any]]:
        idx, path = int(song["idx"]), str(song["path"])
        with _local_copy(path) as (local, error):
            if error is not None:
                yield message_row(SongFailed(idx, "input", error))
                return
            for message in decode_song(DecodeTask(idx, local), self.sample_rate, self.segment):
                yield message_row(message)


class _local_copy:
    """Yields a local path for ``path``; URIs (s3://, gs://, ...) are fetched to a temp file."""

    def __init__(self, path: str):
        self.path = path
        self.tmp: str | None = None

    def __enter__(self) -> tuple[str, str | None]:
        if "://" not in self.path:
            return self.path, None
        try:
            self.tmp = _fetch_uri(self.path)
        except Exception as exc:  # a missing object costs one song, as a missing file does
            return self.path, f"cannot read {self.path}: {' '.join(str(exc).split())[:200]}"
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


class EncodeSegments:
    """``map_batches`` callable class: the encoder is loaded once per actor.

    Audio rows become vector rows (or failure rows); end and failure rows pass through.
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
        out: list[Message] = []
        segments: dict[bool, list[SegmentAudio]] = {True: [], False: []}
        for row in _batch_rows(batch):
            message = row_message(row)
            if isinstance(message, SegmentAudio):
                segments[message.valid >= self.full_samples].append(message)
            else:
                out.append(message)
        for group in segments.values():
            out.extend(encode_segments(self.encoder, group))
        rows = [message_row(m) for m in out]
        return {key: [row[key] for row in rows] for key in _ROW_DEFAULTS}


# ---------------------------------------------------------------------------------------------
# The pipeline, shared by embed and predict
# ---------------------------------------------------------------------------------------------


@dataclass
class EncoderInfo:
    """What the driver needs to know about the encoder, measured where the actors run."""

    spec: EmbeddingSpec | None  # None when no store is written (scoring)
    batch_size: int
    sample_rate: int
    n_layers: int
    dim: int


def _probe_encoder(make_encoder: EncoderFactory, config: EmbedConfig) -> EncoderInfo:
    encoder = make_encoder()
    return EncoderInfo(
        spec_for(encoder, config),
        config.batch_size_for(encoder),
        int(encoder.sample_rate),
        int(encoder.n_layers),
        int(encoder.dim),
    )


def probe_encoder(make_encoder: EncoderFactory, config: EmbedConfig, plan: Any) -> EncoderInfo:
    """Load the encoder once in a worker with the actors' resources (precision and device
    resolve there, so the spec says what the actors really run)."""
    import ray

    remote = ray.remote(_probe_encoder).options(num_cpus=plan.cpus_per_actor, num_gpus=plan.gpus_per_actor)
    return ray.get(remote.remote(make_encoder, config))


def run_pipeline(
    songs: Sequence[Song],
    make_encoder: EncoderFactory,
    info: EncoderInfo,
    segment: SegmentConfig,
    compat: str | None,
    plan: Any,
    settings: Any,
) -> Iterator[SongEmbedding | Failure]:
    """Stream every song through decode -> encode and yield each one exactly once.

    ``plan`` and ``settings`` are ``apexmusic.distributed``'s resource plan and RaySettings.
    """
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
    assembler = SongAssembler(songs, info.sample_rate, compat)
    shape = (info.n_layers, info.dim)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        yield from assembler.add_all(row_message(row, shape) for row in _batch_rows(batch))
    # Songs whose rows never came back: the worker running their task died on every try (a
    # decoder or encoder crash on hostile input, an OOM kill). A task carries a block of rows,
    # so songs sharing the block with the culprit are listed too; --resume retries them.
    yield from assembler.fail_open(
        "worker",
        f"a worker process died {settings.max_retries + 1} times on the block of rows holding "
        "this song (decoding or encoding); --resume retries it",
    )


def _dataset(
    items: list[dict[str, Any]],
    n_blocks: int,
    make_encoder: EncoderFactory,
    info: EncoderInfo,
    full_samples: int,
    segment: SegmentConfig,
    plan: Any,
    settings: Any,
) -> Any:
    """songs -> decode tasks (flat_map) -> encoder actor pool (map_batches), lazily."""
    import ray

    return (
        ray.data.from_items(items, override_num_blocks=n_blocks)
        .flat_map(
            DecodeSongs(info.sample_rate, segment),
            num_cpus=plan.decode_cpus,
            max_retries=settings.max_retries,
        )
        .map_batches(
            EncodeSegments,
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


__all__ = [
    "DecodeSongs",
    "EncodeSegments",
    "EncoderInfo",
    "message_row",
    "probe_encoder",
    "row_message",
    "run_pipeline",
]

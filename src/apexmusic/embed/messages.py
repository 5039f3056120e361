"""The typed messages between the decoder and encoder stages, and the stage functions that
produce them. Both engines speak them: the local engine passes them through pipes and a
queue, the Ray engine converts them to rows at its dataset boundary only.

A song's messages: any number of :class:`SegmentAudio` (or :class:`SegmentVectors` once
encoded), in segment order, then one :class:`SongEnd`; or, at any point, one
:class:`SongFailed` after which nothing more of that song counts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from apexmusic.audio import SegmentConfig, file_sha256, iter_segments
from apexmusic.encoders import Encoder
from apexmusic.errors import ApexError

log = logging.getLogger(__name__)

NON_FINITE = "the encoder produced non-finite values for this audio"


@dataclass(frozen=True)
class DecodeTask:
    """Decode song ``idx`` at ``path`` (``sha``: its SHA-256 when already known)."""

    idx: int
    path: str
    sha: str | None = None


@dataclass
class SegmentAudio:
    """One decoded segment of song ``idx``: ``audio`` float32 trimmed to its ``valid`` samples
    (a padded last segment in reference compat keeps its zeros)."""

    idx: int
    k: int
    audio: np.ndarray
    valid: int


@dataclass
class SegmentVectors:
    """One encoded segment: ``vectors`` float32 ``[n_layers, dim]`` and per-segment extras."""

    idx: int
    k: int
    vectors: np.ndarray
    valid: int
    extras: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class SongEnd:
    """All of song ``idx``'s segments were sent."""

    idx: int
    n_segments: int
    duration_s: float
    sha256: str


@dataclass
class SongFailed:
    """Song ``idx`` failed: ``kind`` is an ApexError kind (``decode``, ``content``, ...)."""

    idx: int
    kind: str
    message: str


Message = Union[SegmentAudio, SegmentVectors, SongEnd, SongFailed]  # noqa: UP007 (a runtime alias)


def short_error(exc: BaseException) -> str:
    """``Type: message`` on one line, at most 200 characters of message."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def decode_song(task: DecodeTask, sample_rate: int, segment: SegmentConfig) -> Iterator[Message]:
    """Decode one song: its SegmentAudio messages, then SongEnd; or SongFailed. Never raises."""
    idx, path, sha = task.idx, task.path, task.sha
    try:
        sha = sha or file_sha256(path)
        stream = iter_segments(path, sample_rate, segment)
        k = -1
        for k, seg in enumerate(stream):
            audio = seg.audio[: seg.valid] if seg.valid < seg.audio.size else seg.audio
            yield SegmentAudio(idx, k, audio, seg.valid)
        yield SongEnd(idx, k + 1, stream.duration_s, sha)
    except ApexError as exc:
        yield SongFailed(idx, exc.kind, str(exc))
    except MemoryError:
        yield SongFailed(idx, "content", "out of memory while decoding")
    except Exception as exc:  # a decoder bug must cost one song, not the run
        yield SongFailed(idx, "decode", short_error(exc))


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
    extras = {k: np.asarray(v, np.float32) for k, v in encoder.extras(batch, lengths).items()}
    return vectors, extras


def encode_segments(encoder: Encoder, segments: Sequence[SegmentAudio]) -> list[SegmentVectors | SongFailed]:
    """Encode a batch of segments (of any songs) into one message each.

    A batch the encoder rejects is retried segment by segment, so a segment that breaks the
    encoder fails its own song only; non-finite vectors fail their song as content errors.
    """
    if not segments:
        return []
    try:
        vectors, extras = encode_batch(encoder, [s.audio for s in segments], [s.valid for s in segments])
    except Exception as exc:
        if len(segments) == 1:
            return [SongFailed(segments[0].idx, "encode", short_error(exc))]
        log.warning("a batch of %d failed in the encoder (%s); retrying one by one", len(segments), exc)
        return [out for s in segments for out in encode_segments(encoder, [s])]
    out: list[SegmentVectors | SongFailed] = []
    for row, s in enumerate(segments):
        if not np.isfinite(vectors[row]).all():
            out.append(SongFailed(s.idx, "content", NON_FINITE))
        else:
            out.append(
                SegmentVectors(s.idx, s.k, vectors[row], s.valid, {n: v[row] for n, v in extras.items()})
            )
    return out


def encode_song(messages: Iterator[Message], encoder: Encoder) -> Iterator[Message]:
    """Encode a song's segments as they are decoded (for encoders run inside the decoder)."""
    for message in messages:
        if not isinstance(message, SegmentAudio):
            yield message
            continue
        (result,) = encode_segments(encoder, [message])
        yield result
        if isinstance(result, SongFailed):
            return

"""Songs from their encoded segments: the one assembly path of the local and the Ray engine.

Segment vectors arrive in any order, interleaved across songs, possibly repeated (a retried
Ray task re-emits its rows); :class:`SongAssembler` keys them by (song, segment), so each song
comes out exactly once: as a SongEmbedding when its SongEnd and all its vectors are in, or as
a Failure on its first SongFailed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from apexmusic.embed.messages import Message, SegmentVectors, SongEnd, SongFailed
from apexmusic.embed.pooling import song_embedding
from apexmusic.sources import Song
from apexmusic.store import Failure, SongEmbedding


@dataclass
class SongParts:
    """One song's segment vectors as they arrive, in any order, until all of them are in."""

    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    valid: dict[int, int] = field(default_factory=dict)
    extras: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    n_segments: int | None = None
    duration_s: float = 0.0
    sha256: str = ""

    def add(self, message: SegmentVectors | SongEnd) -> None:
        if isinstance(message, SegmentVectors):
            self.vectors[message.k] = message.vectors
            self.valid[message.k] = message.valid
            self.extras[message.k] = message.extras
        else:
            self.n_segments, self.duration_s, self.sha256 = (
                message.n_segments,
                message.duration_s,
                message.sha256,
            )

    def complete(self) -> bool:
        return self.n_segments is not None and len(self.vectors) == self.n_segments

    def embedding(self, song: Song, sample_rate: int, compat: str | None) -> SongEmbedding:
        order = sorted(self.vectors)
        vectors = np.stack([self.vectors[k] for k in order])
        valid = np.asarray([self.valid[k] for k in order])
        extras = {name: np.stack([self.extras[k][name] for k in order]) for name in self.extras[order[0]]}
        return song_embedding(song, self.sha256, self.duration_s, vectors, valid, extras, sample_rate, compat)


class SongAssembler:
    """Encoded messages in, each song out exactly once (SongEmbedding or Failure)."""

    def __init__(
        self,
        songs: Sequence[Song],
        sample_rate: int,
        compat: str | None,
        indices: Iterable[int] | None = None,
    ):
        self.songs = songs
        self.sample_rate = sample_rate
        self.compat = compat
        self.parts: dict[int, SongParts] = {
            i: SongParts() for i in (range(len(songs)) if indices is None else indices)
        }

    def __len__(self) -> int:
        """Songs still open."""
        return len(self.parts)

    def is_open(self, idx: int) -> bool:
        return idx in self.parts

    def add(self, message: Message) -> SongEmbedding | Failure | None:
        """Take one message; returns the song it finished (or failed), else None."""
        parts = self.parts.get(message.idx)
        if parts is None:
            return None  # already finished or failed (a retried task repeating itself)
        if isinstance(message, SongFailed):
            return self.fail(message.idx, message.kind, message.message)
        if not isinstance(message, (SegmentVectors, SongEnd)):
            raise TypeError(f"the assembler takes encoded messages, not {type(message).__name__}")
        parts.add(message)
        if not parts.complete():
            return None
        del self.parts[message.idx]
        return parts.embedding(self.songs[message.idx], self.sample_rate, self.compat)

    def add_all(self, messages: Iterable[Message]) -> Iterator[SongEmbedding | Failure]:
        for message in messages:
            result = self.add(message)
            if result is not None:
                yield result

    def fail(self, idx: int, kind: str, message: str) -> Failure | None:
        """Close song ``idx`` as failed (None when it was no longer open)."""
        if self.parts.pop(idx, None) is None:
            return None
        song = self.songs[idx]
        return Failure(song.id, song.path, kind, message)

    def fail_open(self, kind: str, message: str) -> list[Failure]:
        """Close every song still open as failed (their messages never came back)."""
        failures = [self.fail(idx, kind, message) for idx in sorted(self.parts)]
        return [f for f in failures if f is not None]

"""Embedding one song in memory (no store), for prediction and the service."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator

import numpy as np

from apexmusic.audio import Segment, SegmentConfig, file_sha256, iter_segments, segment_array
from apexmusic.embed.config import EmbedConfig, build_encoder
from apexmusic.embed.messages import encode_batch
from apexmusic.embed.pooling import check_finite, song_embedding
from apexmusic.encoders import Encoder
from apexmusic.sources import Song
from apexmusic.store import SongEmbedding
from apexmusic.store.spec import REFERENCE


class SongEmbedder:
    """Embed one song at a time in memory: the same segments, encoder and pooling as a store."""

    def __init__(
        self,
        encoder: Encoder,
        segment_config: SegmentConfig | None = None,
        compat: str | None = None,
        batch_size: int | None = None,
    ):
        segment_config = segment_config or SegmentConfig()
        if compat == REFERENCE:
            segment_config = segment_config.for_reference()
        self.encoder = encoder
        self.segment_config = segment_config
        self.compat = compat
        self.batch_size = int(batch_size or encoder.default_batch_size)

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
        check_finite(stacked)
        return stacked, np.asarray(valid), {k: np.stack(v) for k, v in extras.items()}

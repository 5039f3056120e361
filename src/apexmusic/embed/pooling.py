"""Segment vectors to song vectors: the one pooling rule of the embedding side.

A song's per-layer vector (and each extra, e.g. tag probabilities) is the mean of its segment
vectors weighted by each segment's valid seconds, so a short last segment counts for what it
holds. The reference pipeline (``compat="reference"``) takes a plain mean instead.
"""

from __future__ import annotations

import numpy as np

from apexmusic.errors import AudioContentError
from apexmusic.sources import Song
from apexmusic.store import SongEmbedding
from apexmusic.store.spec import REFERENCE


def segment_weights(valid: np.ndarray, sample_rate: int, compat: str | None = None) -> np.ndarray:
    """Each segment's weight in its song's mean: valid seconds, or 1 each in reference compat."""
    if compat == REFERENCE:
        return np.ones(len(valid), np.float64)
    return np.asarray(valid, np.float64) / float(sample_rate)


def combine_segments(
    vectors: np.ndarray, valid: np.ndarray, sample_rate: int, compat: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Song-level ``[L, D]`` from segment vectors ``[S, L, D]``; returns (layers, weights)."""
    weights = segment_weights(valid, sample_rate, compat)
    layers = np.tensordot(weights, vectors.astype(np.float64), axes=(0, 0)) / weights.sum()
    return layers.astype(np.float32), weights.astype(np.float32)


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
    """A song's store row from its segment vectors ``[S, L, D]`` and per-segment extras."""
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


def check_finite(vectors: np.ndarray) -> None:
    if not np.isfinite(vectors).all():
        raise AudioContentError("the encoder produced non-finite values for this audio")

"""The inference pooling rule: how a model turns a song's vectors into the song's scores.

A model trained in ``song`` mode scores the song vector. A model trained in ``segment`` mode
scores every segment and takes the mean of those scores weighted by the segments' weights
(their valid seconds, or 1 each under the reference pipeline), exactly as training and
validation pooled them. ``evaluate``, ``predict`` (from audio and from a store), ``serve`` and
the Ray engine all score songs through :func:`score_songs`; training's validation pools its
segment rows with :func:`weighted_song_mean`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from apexmusic.errors import ConfigError
from apexmusic.model.scoring import ScoringModel
from apexmusic.store import StoreData


@dataclass
class SongScores:
    """Scores of a batch of songs: ``songs`` ``[N, T]`` and, when asked for or used, each
    song's segment scores ``[S_i, T]`` (columns in ``model.tasks`` order)."""

    songs: np.ndarray
    segments: list[np.ndarray] | None = None


def weighted_song_mean(
    rows: np.ndarray, song_of: np.ndarray, weights: np.ndarray, n_songs: int
) -> np.ndarray:
    """Per-song mean of ``rows`` ``[R, ...]`` weighted by ``weights`` ``[R]`` -> ``[n_songs, ...]``."""
    rows = np.asarray(rows, np.float64)
    weights = np.asarray(weights, np.float64)
    sums = np.zeros((n_songs, *rows.shape[1:]))
    np.add.at(sums, np.asarray(song_of), rows * weights.reshape(-1, *([1] * (rows.ndim - 1))))
    totals = np.bincount(song_of, weights=weights, minlength=n_songs)
    return sums / np.maximum(totals, 1e-12).reshape(-1, *([1] * (rows.ndim - 1)))


def score_songs(
    model: ScoringModel,
    layers: np.ndarray | None,
    segments: Sequence[np.ndarray] | None = None,
    segment_weights: Sequence[np.ndarray] | None = None,
    with_segments: bool = False,
    batch_size: int = 4096,
) -> SongScores:
    """Song scores under the model's pooling rule, in one batched pass.

    ``layers`` ``[N, L, D]`` are the song vectors, ``segments[i]`` ``[S_i, L, D]`` and
    ``segment_weights[i]`` ``[S_i]`` each song's segment vectors and weights. A segment-mode
    model needs the segments; ``with_segments`` also returns per-segment scores.
    """
    by_segment = model.pooling == "segment"
    need_segments = by_segment or with_segments
    if need_segments and (segments is None or segment_weights is None):
        raise ConfigError(
            "this model scores songs by their segments (trained in segment mode): "
            "the per-segment vectors are needed"
        )
    parts = [] if by_segment else [np.asarray(layers)]
    counts = [len(s) for s in segments] if need_segments else []  # type: ignore[union-attr]
    if need_segments:
        parts.extend(np.asarray(s) for s in segments)  # type: ignore[union-attr]
    n_songs = len(counts) if by_segment else len(parts[0])
    n_tasks = len(model.tasks)
    if n_songs == 0:
        return SongScores(np.zeros((0, n_tasks)), [] if with_segments else None)
    x = parts[0] if len(parts) == 1 else np.concatenate(parts)
    out = model.predict_layers(x.astype(np.float32, copy=False), batch_size=batch_size)
    scores = np.stack([out[t] for t in model.tasks], 1)
    seg_scores = scores[len(scores) - sum(counts) :]
    if by_segment:
        song_of = np.repeat(np.arange(n_songs), counts)
        weights = np.concatenate([np.asarray(w, np.float64) for w in segment_weights])  # type: ignore[union-attr]
        songs = weighted_song_mean(seg_scores, song_of, weights, n_songs)
    else:
        songs = scores[:n_songs].astype(np.float64)
    per_song = list(np.split(seg_scores, np.cumsum(counts)[:-1])) if with_segments else None
    return SongScores(songs, per_song)


def score_store_data(model: ScoringModel, data: StoreData, batch_size: int = 8192) -> np.ndarray:
    """Song scores ``[N, T]`` of loaded store data, after checking the store's spec against the
    model's (a segment-mode model needs the data loaded with its segments)."""
    model.check_vectors(data.spec, "the store's vectors")
    return score_songs(model, data.layers, data.segments, data.segment_weights, batch_size=batch_size).songs


def mc_song_spread(
    model: ScoringModel,
    layers: np.ndarray,
    segments: Sequence[np.ndarray] | None,
    segment_weights: Sequence[np.ndarray] | None,
    mc_samples: int,
) -> np.ndarray:
    """MC-dropout standard deviation of each song's score ``[N, T]``, under the pooling rule.

    One seeded call per song, so a song's uncertainty never depends on which other songs
    share its batch. A segment-mode model pools each dropout draw over the song's segments.
    """
    n_songs = len(segments) if model.pooling == "segment" and segments is not None else len(layers)
    spread = np.zeros((n_songs, len(model.tasks)), np.float64)
    if mc_samples <= 0:
        return spread
    for i in range(n_songs):
        if model.pooling == "segment":
            draws = model.mc_draws(segments[i], mc_samples)  # type: ignore[index]
            w = np.asarray(segment_weights[i], np.float64)  # type: ignore[index]
            pooled = np.tensordot(draws.astype(np.float64), w / max(w.sum(), 1e-12), axes=(1, 0))
        else:
            pooled = model.mc_draws(layers[i : i + 1], mc_samples)[:, 0].astype(np.float64)
        spread[i] = pooled.std(0, ddof=1 if mc_samples > 1 else 0)
    return spread

"""Simulated embedding stores whose labels are known functions of the vectors (training tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from apexmusic.store import EmbeddingSpec, EmbeddingStore, SongEmbedding
from apexmusic.tasks import ALL_TASKS


def simulate(n: int = 600, n_layers: int = 3, dim: int = 32, seed: int = 0, n_segments: int = 3):
    """Songs with segment vectors and seven labels that depend (non-linearly) on layer 1.

    Returns ``(songs, targets [n, 7], creators, created_at)``.
    """
    rng = np.random.default_rng(seed)
    segments = rng.standard_normal((n, n_segments, n_layers, dim)).astype(np.float32)
    layers = segments.mean(1)
    w = rng.standard_normal((dim, 7)) / np.sqrt(dim)
    z = layers[:, min(1, n_layers - 1)] @ w * np.sqrt(n_segments)  # ~unit variance factors
    z[:, 3] = z[:, 3] + 0.5 * z[:, 2] ** 2
    sig = 1 / (1 + np.exp(-1.5 * z))
    targets = np.empty((n, 7))
    targets[:, :2] = 100 * sig[:, :2]
    targets[:, 2:] = 1 + 4 * sig[:, 2:]
    songs = [
        SongEmbedding(
            id=f"song{i:04d}",
            path=f"/audio/song{i:04d}.wav",
            sha256=f"{i:064x}",  # distinct songs, distinct audio
            duration_s=90.0,
            layers=layers[i],
            segments=segments[i],
            segment_weights=np.full(n_segments, 30.0, np.float32),
        )
        for i in range(n)
    ]
    creators = np.array([f"user{i % 40}" for i in range(n)], dtype=object)
    created_at = 1.7e9 + rng.uniform(0, 3e7, n)
    return songs, targets, creators, created_at


def write_store(root: Path, songs, n_layers: int, dim: int) -> Path:
    spec = EmbeddingSpec(encoder="sim", weights="none", n_layers=n_layers, dim=dim, sample_rate=24000)
    store = EmbeddingStore.create(root, spec)
    store.write(songs)
    return root


def write_plain_labels(path: Path, ids, targets, creators, created_at, drop=None) -> Path:
    """A plain-table CSV; popularity as play/like counts whose order follows the scores."""
    import csv

    drop = drop if drop is not None else np.zeros(targets.shape, bool)
    with path.open("w", newline="") as f:
        cols = ["id", "plays", "likes", "platform", "creator", "created_at", *ALL_TASKS[2:]]
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        for i, song_id in enumerate(ids):
            row = {"id": song_id, "platform": "sim", "creator": creators[i], "created_at": int(created_at[i])}
            row["plays"] = "" if drop[i, 0] else int(np.exp(targets[i, 0] / 10))
            row["likes"] = "" if drop[i, 1] else int(np.exp(targets[i, 1] / 12))
            for k, task in enumerate(ALL_TASKS[2:], start=2):
                row[task] = "" if drop[i, k] else round(float(targets[i, k]), 4)
            writer.writerow(row)
    return path


def dump_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj))

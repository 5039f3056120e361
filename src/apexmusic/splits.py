"""Train / validation / test splits that never leak a song across a cut.

``random``, ``creator`` (whole creators on one side) and ``time`` (oldest train, newest test;
equal timestamps on one side). For every kind, songs with identical audio (the same
``sha256``) land in the same split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apexmusic.choices import SPLITS
from apexmusic.errors import ConfigError


@dataclass
class SplitConfig:
    method: str = "random"  # random | creator | time
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 42

    def __post_init__(self) -> None:
        if self.method not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, not {self.method!r}")
        if not (
            0 <= self.val_fraction < 1
            and 0 <= self.test_fraction < 1
            and self.val_fraction + self.test_fraction < 1
        ):
            raise ConfigError("val and test fractions must be in [0, 1) and sum below 1")


@dataclass
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def split_indices(
    n: int,
    config: SplitConfig,
    creators: np.ndarray | None = None,
    created_at: np.ndarray | None = None,
    sha256: np.ndarray | None = None,
) -> Split:
    """Train / validation / test indices.

    ``random``: a seeded permutation. ``creator``: whole creators go to one split (songs with
    no creator are their own group), so no creator is in two splits. ``time``: the oldest songs
    train, the newest test (songs without a time count as oldest); songs with the same
    timestamp stay on one side of every cut.

    With ``sha256`` (one audio hash per song), songs with identical audio are always in the same
    split, whatever the method: each set of linked songs moves, as one block, to where its
    first member stands in the order above (for ``time``: its oldest member), so re-uploads of
    a training song never reach validation or test.
    """
    rng = np.random.default_rng(config.seed)
    if config.method == "random":
        order, groups = rng.permutation(n), np.arange(n)
    elif config.method == "creator":
        if creators is None:
            raise ConfigError("--split creator needs a creator column in the labels")
        keys = np.array(
            [c if c not in (None, "") else f"\0song{i}" for i, c in enumerate(creators)], dtype=object
        )
        _, groups = np.unique(keys.astype(str), return_inverse=True)
        shuffled = rng.permutation(groups.max() + 1)
        rank = np.empty_like(shuffled)
        rank[shuffled] = np.arange(len(shuffled))
        order = np.lexsort((rng.random(n), rank[groups]))
    else:
        if created_at is None or not np.isfinite(created_at).any():
            raise ConfigError("--split time needs creation times in the labels")
        t = np.where(np.isfinite(created_at), created_at, -np.inf)
        order = np.lexsort((rng.random(n), t))
        known = np.isfinite(created_at)
        _, groups = np.unique(np.where(known, created_at, 0.0), return_inverse=True)
        groups = np.where(known, groups, groups.max(initial=-1) + 1 + np.arange(n))  # unknown: alone
    if sha256 is not None:
        order, groups = _keep_together(order, groups, sha256)
    return _cut_in_order(order, groups, config)


def _keep_together(order: np.ndarray, groups: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Join ``groups`` with songs sharing a non-empty key into connected blocks; each block moves
    to its first member's place in ``order`` (order is otherwise kept, so nothing changes when
    no key is shared)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(order)
    _, group_ids = np.unique(groups, return_inverse=True)
    present = np.array([k not in (None, "") for k in keys], dtype=bool)
    _, key_ids = np.unique(np.asarray(keys, dtype=object)[present].astype(str), return_inverse=True)
    n_groups = int(group_ids.max(initial=-1)) + 1
    songs = np.r_[np.arange(n), np.flatnonzero(present)]
    nodes = np.r_[n + group_ids, n + n_groups + key_ids]
    size = n + n_groups + len(key_ids)
    graph = coo_matrix((np.ones(len(songs), np.int8), (songs, nodes)), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    block = labels[:n]
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    first = np.full(int(block.max(initial=-1)) + 1, n, dtype=np.int64)
    np.minimum.at(first, block, position)
    return order[np.argsort(first[block[order]], kind="stable")], block


def _cut_in_order(order: np.ndarray, groups: np.ndarray, config: SplitConfig) -> Split:
    """Cut ``order`` into test / val / train by song counts without splitting a group."""
    n = len(order)
    n_test = _at_least_one(config.test_fraction, n)
    n_val = _at_least_one(config.val_fraction, n)
    # Walk from the end (newest for time splits): test first, then validation.
    seq = order[::-1]
    g = groups[seq]
    boundaries = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])  # first index of each group run
    cut_test = _group_cut(boundaries, n_test, n)
    cut_val = _group_cut(boundaries, cut_test + n_val, n)
    test, val, train = seq[:cut_test], seq[cut_test:cut_val], seq[cut_val:]
    return Split(np.sort(train), np.sort(val), np.sort(test))


def _group_cut(boundaries: np.ndarray, want: int, n: int) -> int:
    if want <= 0:
        return 0
    later = boundaries[boundaries >= want]
    return int(later[0]) if len(later) else n


def _at_least_one(fraction: float, n: int) -> int:
    return 0 if fraction <= 0 else max(1, int(round(fraction * n))) if n >= 3 else 0

"""Small pieces shared by the arena modules: bootstrap resampling, pair names, strict JSON."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from apexmusic.jsonio import jsonable, write_json  # noqa: F401 - the arena's JSON helpers

MAX_LISTED = 20  # how many invalid / duplicate / unmatched battles the reports list by id


def bootstrap_weights(
    n: int, n_bootstrap: int, rng: np.random.Generator, max_cells: int = 2_000_000
) -> Iterator[np.ndarray]:
    """Resampling ``n`` items with replacement ``n_bootstrap`` times, as multiplicity counts, in
    chunks [R, n] of at most ``max_cells`` entries (16 MB), so memory stays flat for large sets."""
    chunk = max(1, min(200, max_cells // max(n, 1)))
    done = 0
    while done < n_bootstrap:
        size = min(chunk, n_bootstrap - done)
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(float)
        done += size


def finite_or_none(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def pair_key(system_a: str, system_b: str) -> str:
    """Order-free name of a system pair: ``"x vs y"`` with x ≤ y."""
    x, y = sorted((str(system_a), str(system_b)))
    return f"{x} vs {y}"

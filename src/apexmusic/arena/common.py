"""Small pieces shared by the arena modules: bootstrap resampling, pair names, strict JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

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


def write_json(obj: dict, path: str | Path) -> None:
    """JSON with nan → null (strict JSON), numpy scalars / arrays as numbers / lists, paths as text."""
    Path(path).write_text(json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def jsonable(obj):
    """``obj`` with numpy values, tuples and paths turned into plain JSON values, nan into None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj

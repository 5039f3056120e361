"""The one JSON sanitiser: library values (numpy, paths, tuples, records) as plain JSON values."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def jsonable(obj: Any, finite: bool = True) -> Any:
    """``obj`` as plain JSON values: numpy scalars and arrays, tuples and sets as numbers and
    lists, paths as text, records through their ``to_dict``, anything else unknown as its text.
    With ``finite`` NaN and infinities become None, so the result is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v, finite) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset | np.ndarray):
        return [jsonable(v, finite) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return None if finite and not math.isfinite(obj) else obj
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    to_dict = getattr(obj, "to_dict", None)
    return jsonable(to_dict(), finite) if callable(to_dict) else str(obj)


def write_json(obj: Any, path: str | Path) -> None:
    """``obj`` as strict, indented JSON (NaN as null) in ``path``."""
    Path(path).write_text(json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n", encoding="utf-8")

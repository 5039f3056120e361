"""Reading the evaluation outputs a report draws on; an unreadable file is skipped with a warning."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _read_json(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return {}


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _first(source: Path, names: list[str]) -> Path | None:
    return next((source / n for n in names if (source / n).is_file()), None)


def _is_training_log(path: Path) -> bool:
    try:
        with path.open() as f:
            first = json.loads(f.readline() or "{}")
    except (OSError, ValueError):
        return False
    return isinstance(first, dict) and "epoch" in first and "train_loss" in first

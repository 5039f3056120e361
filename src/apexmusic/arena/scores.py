"""Predicted scores in: a scores file of ``apexmusic predict`` joined onto battle sides."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apexmusic.arena.battles import Battles, read_records, to_number, to_text
from apexmusic.arena.common import MAX_LISTED
from apexmusic.errors import DataError, InputError
from apexmusic.tasks import ALL_TASKS

log = logging.getLogger(__name__)


@dataclass
class ScoreTable:
    """Predicted scores per song: ``values[name][i]`` belongs to ``ids[i]`` / ``paths[i]``."""

    ids: list[str]
    paths: list[str]
    values: dict[str, np.ndarray]


@dataclass
class JoinReport:
    """Outcome of joining scores onto battles. A battle is unmatched if either side is."""

    n_battles: int
    n_matched: int
    n_unmatched: int
    n_ambiguous_keys: int
    unmatched: list[dict]  # first few: {"id", "side", "audio"}

    def to_dict(self) -> dict:
        return {
            "rule": JOIN_RULE,
            "n_battles": self.n_battles,
            "n_matched": self.n_matched,
            "n_unmatched": self.n_unmatched,
            "n_ambiguous_keys": self.n_ambiguous_keys,
            "unmatched_examples": self.unmatched,
        }


JOIN_RULE = (
    "A battle side's song id (columns id_a/id_b or song_id_a/song_id_b), when present, is matched "
    "against a score row's id. Otherwise audio_a/audio_b is matched, in this order, against a score "
    "row's id; its path or a trailing "
    "part of it in whole path components; then the audio's file stem against the id or the stem "
    "of the path. Keys shared by several score rows are ambiguous and not used."
)


def load_scores(path: str | Path, names: Iterable[str] | None = None) -> ScoreTable:
    """Read a scores file (JSONL / CSV / Parquet rows with ``id``, ``path`` and score columns).

    ``names`` defaults to the seven APEX task columns that the file has.
    """
    path = Path(path)
    if path.suffix.lower() not in {".csv", ".jsonl", ".parquet", ".json"}:
        raise InputError(f"unsupported scores file type {path.suffix!r} (use .jsonl, .csv, .parquet)")
    rows = read_records(path)
    if not rows:
        raise DataError(f"no rows in scores file {path}")
    columns = set().union(*(r.keys() for r in rows[:1000]))
    if "id" not in columns and "path" not in columns:
        raise DataError(f"scores file {path} has neither an 'id' nor a 'path' column")
    wanted = list(names) if names is not None else [t for t in ALL_TASKS if t in columns]
    missing = [n for n in wanted if n not in columns]
    if not wanted or missing:
        raise DataError(
            f"scores file {path} lacks score columns {missing or list(ALL_TASKS)}; it has {sorted(columns)}"
        )
    values = {n: np.array([to_number(r.get(n)) for r in rows], dtype=float) for n in wanted}
    return ScoreTable(
        ids=[to_text(r.get("id")) for r in rows], paths=[to_text(r.get("path")) for r in rows], values=values
    )


def attach_scores(battles: Battles, scores: ScoreTable) -> tuple[Battles, JoinReport]:
    """Add the scores of each battle side's song (see ``JOIN_RULE``); unmatched sides get nan."""
    indexes, n_ambiguous = _score_indexes(scores)
    row_a = np.array([_match(s, a, indexes) for s, a in zip(battles.song_a, battles.audio_a, strict=True)])
    row_b = np.array([_match(s, b, indexes) for s, b in zip(battles.song_b, battles.audio_b, strict=True)])
    out = battles
    for name, values in scores.values.items():
        padded = np.append(values, np.nan)  # index -1 → nan
        if name in battles.scores_a:
            log.warning("scores file column %r replaces the battle table's %s_a/%s_b", name, name, name)
        out = out.with_scores(name, padded[row_a], padded[row_b])
    unmatched = []
    for i in np.flatnonzero((row_a < 0) | (row_b < 0))[:MAX_LISTED]:
        side = "a" if row_a[i] < 0 else "b"
        audio = battles.audio_a[i] if side == "a" else battles.audio_b[i]
        unmatched.append({"id": str(battles.ids[i]), "side": side, "audio": str(audio)})
    n_unmatched = int(((row_a < 0) | (row_b < 0)).sum())
    report = JoinReport(len(battles), len(battles) - n_unmatched, n_unmatched, n_ambiguous, unmatched)
    if n_unmatched:
        log.warning("%d of %d battles have a side without scores", n_unmatched, len(battles))
    return out, report


def _score_indexes(scores: ScoreTable) -> tuple[list[dict[str, int]], int]:
    by_id, by_path, by_stem = {}, {}, {}
    for i, (song_id, path) in enumerate(zip(scores.ids, scores.paths, strict=True)):
        if song_id:
            _index_add(by_id, song_id, i)
            _index_add(by_stem, song_id, i)
        if path:
            parts = Path(path).as_posix().split("/")
            for k in range(len(parts)):
                _index_add(by_path, "/".join(parts[k:]), i)
            _index_add(by_stem, Path(path).stem, i)
    indexes = [by_id, by_path, by_stem]
    n_ambiguous = sum(1 for index in indexes for v in index.values() if v < 0)
    return indexes, n_ambiguous


def _index_add(index: dict[str, int], key: str, row: int) -> None:
    if key in index and index[key] != row:
        index[key] = -1  # ambiguous
    else:
        index[key] = row


def _match(song_id: str, audio: str, indexes: list[dict[str, int]]) -> int:
    by_id, by_path, by_stem = indexes
    if song_id and by_id.get(song_id, -1) >= 0:
        return by_id[song_id]
    if not audio:
        return -1
    keys = [(by_id, audio), (by_path, Path(audio).as_posix()), (by_stem, Path(audio).stem)]
    for index, key in keys:
        row = index.get(key)
        if row is not None and row >= 0:
            return row
    return -1

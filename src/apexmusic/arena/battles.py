"""Battles in: reading, normalising and de-duplicating Music Arena battles.

``load_battles`` reads the Music Arena per-battle schema (JSON, JSONL, a folder of JSON files,
Parquet) or a plain CSV table into a ``Battles`` table. Per-side score columns
``<name>_a`` / ``<name>_b`` become scores. A battle id seen again is counted once (the first
row is kept) and reported.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from apexmusic.arena.common import MAX_LISTED
from apexmusic.errors import DataError, InputError
from apexmusic.sources import read_rows

log = logging.getLogger(__name__)

PREFERENCES = ("A", "B", "TIE", "BOTH_BAD")
_PREFERENCE_ALIASES = {
    "A": "A",
    "B": "B",
    "TIE": "TIE",
    "BOTH_BAD": "BOTH_BAD",
    "BOTHBAD": "BOTH_BAD",
    "BOTH BAD": "BOTH_BAD",
    "MODEL_A": "A",
    "MODEL_B": "B",
}
_ID_FIELDS = ("battle_uuid", "battle_id", "uuid", "id")
_SYSTEM_FIELDS = (("system_a", "system_b"), ("model_a", "model_b"))
_INSTRUMENTAL_FIELDS = ("is_instrumental", "instrumental")
# Per-side Music Arena fields that are numbers but not quality scores.
_SIDE_METADATA = frozenset(
    {
        "id",
        "song_id",
        "uuid",
        "system",
        "model",
        "audio",
        "duration",
        "sample_rate",
        "total_listening_time",
        "listen_data",
        "hardware",
        "system_time",
        "gateway_time",
        "generation_time",
        "feedback",
        "lyrics",
        "prompt",
    }
)


@dataclass
class Battles:
    """A table of pairwise battles, one entry per battle (arrays of equal length).

    ``preference`` is one of ``PREFERENCES``; ``instrumental`` is 1.0 / 0.0 / nan (unknown);
    ``scores_a[name]`` / ``scores_b[name]`` are float arrays, nan where a side has no score.
    ``invalid`` lists the input rows that could not be used (row number, id, reason);
    ``duplicates`` the rows whose battle id an earlier row already had (row, id, first_row,
    and whether it disagrees with that first row).
    """

    ids: np.ndarray
    system_a: np.ndarray
    system_b: np.ndarray
    preference: np.ndarray
    instrumental: np.ndarray
    audio_a: np.ndarray
    audio_b: np.ndarray
    song_a: np.ndarray  # song ids of the two sides ("" when the table has none)
    song_b: np.ndarray
    scores_a: dict[str, np.ndarray] = field(default_factory=dict)
    scores_b: dict[str, np.ndarray] = field(default_factory=dict)
    invalid: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    selection: tuple | None = None  # the leaderboard subset these battles were selected for

    _PER_BATTLE = (
        "ids",
        "system_a",
        "system_b",
        "preference",
        "instrumental",
        "audio_a",
        "audio_b",
        "song_a",
        "song_b",
    )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def score_names(self) -> tuple[str, ...]:
        return tuple(self.scores_a)

    @property
    def systems(self) -> list[str]:
        return sorted(set(self.system_a.tolist()) | set(self.system_b.tolist()))

    def subset(self, mask: np.ndarray) -> Battles:
        """The battles where ``mask`` (bool array or index array) selects."""
        return replace(
            self,
            **{name: getattr(self, name)[mask] for name in self._PER_BATTLE},
            scores_a={k: v[mask] for k, v in self.scores_a.items()},
            scores_b={k: v[mask] for k, v in self.scores_b.items()},
        )

    def swapped(self) -> Battles:
        """The same battles with sides A and B exchanged (and the preference with them)."""
        flip = {"A": "B", "B": "A", "TIE": "TIE", "BOTH_BAD": "BOTH_BAD"}
        return replace(
            self,
            system_a=self.system_b,
            system_b=self.system_a,
            preference=np.array([flip[p] for p in self.preference], dtype=object),
            audio_a=self.audio_b,
            audio_b=self.audio_a,
            song_a=self.song_b,
            song_b=self.song_a,
            scores_a=dict(self.scores_b),
            scores_b=dict(self.scores_a),
        )

    def with_scores(self, name: str, a: np.ndarray, b: np.ndarray) -> Battles:
        scores_a, scores_b = dict(self.scores_a), dict(self.scores_b)
        scores_a[name], scores_b[name] = np.asarray(a, float), np.asarray(b, float)
        return replace(self, scores_a=scores_a, scores_b=scores_b)

    def type_masks(self) -> dict[str, np.ndarray]:
        """Masks of the instrumental and the vocal battles, for the kinds that occur."""
        masks = {"instrumental": self.instrumental == 1.0, "vocal": self.instrumental == 0.0}
        return {k: m for k, m in masks.items() if m.any()}

    def counts(self) -> dict[str, int]:
        pref = self.preference
        return {
            "n_battles": len(self),
            "n_decisive": int(np.isin(pref, ["A", "B"]).sum()),
            "n_tie": int((pref == "TIE").sum()),
            "n_both_bad": int((pref == "BOTH_BAD").sum()),
            "n_invalid": len(self.invalid),
            "n_duplicates": len(self.duplicates),
        }

    def report(self) -> dict:
        """``counts`` plus the first few invalid and duplicate rows (the ``data`` of a report)."""
        return self.counts() | {
            "invalid_examples": self.invalid[:MAX_LISTED],
            "duplicate_examples": self.duplicates[:MAX_LISTED],
        }


def load_battles(path: str | Path) -> Battles:
    """Read battles from CSV, JSON (one battle, a list, or ``{"battles": [...]}``), JSONL,
    Parquet, or a folder of such files (the Music Arena dataset's one-JSON-per-battle layout)."""
    path = Path(path)
    records = read_records(path)
    if not records:
        raise DataError(f"no battles in {path}")
    battles = battles_from_records(records)
    log.info(
        "loaded %d battles from %s (%d invalid rows, %d duplicate ids)",
        len(battles),
        path,
        len(battles.invalid),
        len(battles.duplicates),
    )
    return battles


def battles_from_records(records: Iterable[Mapping]) -> Battles:
    """Build ``Battles`` from dict rows in the Music Arena schema or the plain CSV schema.

    Rows without two system names or with an unknown preference go to ``invalid``. A row whose
    battle id (``battle_uuid``, ``battle_id``, ``uuid`` or ``id``) an earlier valid row had is
    left out and listed in ``duplicates``: each battle counts once.
    """
    records = list(records)
    bad = next((r for r in records if not isinstance(r, Mapping)), None)
    if bad is not None:
        raise DataError(f"a battle must be a JSON object / table row, got {type(bad).__name__}: {bad!r:.80}")
    names = _score_column_names(records)
    kept, invalid, duplicates = _sort_rows(records)

    def column(get) -> np.ndarray:
        return np.array([get(i, r) for i, r in kept], dtype=object)

    battles = Battles(
        ids=column(lambda i, r: _battle_id(r, i)),
        system_a=column(lambda i, r: str(_systems(r)[0])),
        system_b=column(lambda i, r: str(_systems(r)[1])),
        preference=column(lambda i, r: _preference(r)),
        instrumental=np.array([_instrumental(r) for _, r in kept], dtype=float),
        audio_a=column(lambda i, r: to_text(r.get("audio_a"))),
        audio_b=column(lambda i, r: to_text(r.get("audio_b"))),
        song_a=column(lambda i, r: to_text(r.get("id_a", r.get("song_id_a")))),
        song_b=column(lambda i, r: to_text(r.get("id_b", r.get("song_id_b")))),
        invalid=invalid,
        duplicates=duplicates,
    )
    for name in names:
        a = np.array([to_number(r.get(f"{name}_a")) for _, r in kept], dtype=float)
        b = np.array([to_number(r.get(f"{name}_b")) for _, r in kept], dtype=float)
        battles = battles.with_scores(name, a, b)
    return battles


def _sort_rows(records: list[Mapping]) -> tuple[list[tuple[int, Mapping]], list[dict], list[dict]]:
    """Rows to keep (index, row), invalid rows and duplicate rows, in input order."""
    kept: list[tuple[int, Mapping]] = []
    invalid: list[dict] = []
    duplicates: list[dict] = []
    first: dict[str, tuple[int, Mapping]] = {}
    for i, row in enumerate(records):
        battle_id = _battle_id(row, i)
        reason = _row_problem(row)
        if reason:
            invalid.append({"row": i + 1, "id": battle_id, "reason": reason})
        elif battle_id in first:
            j, earlier = first[battle_id]
            conflicting = _outcome(row) != _outcome(earlier)
            duplicates.append({"row": i + 1, "id": battle_id, "first_row": j + 1, "conflicting": conflicting})
        else:
            first[battle_id] = (i, row)
            kept.append((i, row))
    if duplicates:
        n_conflicting = sum(d["conflicting"] for d in duplicates)
        log.warning(
            "%d battle rows repeat an earlier battle id and were left out (%d with another outcome), e.g. %s",
            len(duplicates),
            n_conflicting,
            ", ".join(d["id"] for d in duplicates[:3]),
        )
    return kept, invalid, duplicates


def _outcome(row: Mapping) -> tuple:
    a, b = _systems(row)
    return str(a), str(b), _preference(row)


def read_records(path: Path) -> list[dict]:
    """Dict rows of a battles or scores file (CSV/TSV, JSON, JSONL, Parquet) or of a folder of them."""
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.suffix.lower() in {".json", ".jsonl", ".csv", ".parquet"}
        )
        return [rec for p in files for rec in read_records(p)]
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in {".csv", ".tsv", ".jsonl", ".parquet"}:
        return read_rows(path)
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read {path}: {exc}") from exc
        if isinstance(data, dict):
            data = data.get("battles", [data])
        return list(data)
    raise InputError(f"unsupported battles file type {path.suffix!r} (use .csv, .json, .jsonl, .parquet)")


def _score_column_names(records: list[Mapping]) -> list[str]:
    """Bases of ``<name>_a`` / ``<name>_b`` column pairs whose values are all numbers or empty."""
    keys: dict[str, None] = {}
    for row in records[:1000]:
        keys.update(dict.fromkeys(row))
    names = []
    for key in keys:
        base = key[:-2]
        if not key.endswith("_a") or f"{base}_b" not in keys or base in _SIDE_METADATA:
            continue
        values = (r.get(f"{base}_{side}") for r in records for side in "ab")
        if all(_is_number_or_empty(v) for v in values):
            names.append(base)
    return names


def _is_number_or_empty(value) -> bool:
    if value is None or value == "":
        return True
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def to_number(value) -> float:
    """A table cell as a float: nan when empty."""
    return float("nan") if value is None or value == "" else float(value)


def to_text(value) -> str:
    """A table cell as text: "" when missing."""
    return "" if value is None else str(value)


def _battle_id(row: Mapping, index: int) -> str:
    for key in _ID_FIELDS:
        if row.get(key) not in (None, ""):
            return str(row[key])
    return f"row{index + 1}"


def _systems(row: Mapping) -> tuple[str | None, str | None]:
    for a, b in _SYSTEM_FIELDS:
        if a in row or b in row:
            return row.get(a), row.get(b)
    return None, None


def _preference(row: Mapping) -> str | None:
    value = row.get("preference", row.get("winner"))
    return _PREFERENCE_ALIASES.get(str(value).strip().upper()) if value is not None else None


def _row_problem(row: Mapping) -> str | None:
    a, b = _systems(row)
    if a in (None, "") or b in (None, ""):
        return "missing system_a / system_b"
    if str(a) == str(b):
        return f"a system against itself ({a})"
    if _preference(row) is None:
        return f"unknown preference {row.get('preference', row.get('winner'))!r} (want A|B|TIE|BOTH_BAD)"
    return None


def _instrumental(row: Mapping) -> float:
    for key in _INSTRUMENTAL_FIELDS:
        value = row.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, bool | int | float):
            return float(bool(value))
        text = str(value).strip().lower()
        if text in {"true", "1", "yes", "instrumental"}:
            return 1.0
        if text in {"false", "0", "no", "vocal"}:
            return 0.0
    return float("nan")

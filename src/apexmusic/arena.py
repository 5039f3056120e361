"""Pairwise human-preference evaluation (Music Arena battles) and Bradley–Terry leaderboards.

Pipeline stage: battles (+ predicted scores) in, metrics and leaderboards out.

- ``load_battles`` reads the Music Arena per-battle schema (JSON, JSONL, a folder of JSON
  files, Parquet) or a plain CSV table. Per-side score columns ``<name>_a`` / ``<name>_b``
  are picked up; ``load_scores`` + ``attach_scores`` join a scores file written by
  ``apexmusic predict`` on the battles' audio ids.
- ``evaluate_arena`` computes the zero-shot rules ("higher score wins") with bootstrap
  intervals and the learned models (logistic regression, gradient boosting on score
  differences) with stratified k-fold cross-validation.
- ``arena_leaderboard`` is the official Music Arena Bradley–Terry method;
  ``predicted_leaderboard`` ranks systems by their songs' mean predicted score.
- ``PreferenceComparator`` is a JSON-serialisable logistic regression on score differences.

Every model here is symmetric in the two sides of a battle: relabelling A as B (and the
preference with it) leaves every metric and every leaderboard unchanged. The A/B position
effect of the arena interface is therefore deliberately not modelled.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from apexmusic.errors import ConfigError, DataError, InputError, ModelLoadError
from apexmusic.sources import read_rows
from apexmusic.tasks import AESTHETIC_TASKS, ALL_TASKS, POPULARITY_TASKS

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
# Composite rules: the sum of z-scored APEX scores of one group.
COMPOSITES: dict[str, tuple[str, ...]] = {
    "apex_popularity_z": POPULARITY_TASKS,
    "apex_aesthetics_z": AESTHETIC_TASKS,
    "apex_all_z": ALL_TASKS,
}
# Feature sets of the learned models (the paper's ablation), plus every score present.
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "popularity": POPULARITY_TASKS,
    "popularity+aesthetics": ALL_TASKS,
}
_MAX_LISTED = 20  # how many invalid / unmatched battles the reports list by id


# ---------------------------------------------------------------------------------------------
# Battles
# ---------------------------------------------------------------------------------------------


@dataclass
class Battles:
    """A table of pairwise battles, one entry per battle (arrays of equal length).

    ``preference`` is one of ``PREFERENCES``; ``instrumental`` is 1.0 / 0.0 / nan (unknown);
    ``scores_a[name]`` / ``scores_b[name]`` are float arrays, nan where a side has no score.
    ``invalid`` lists the input rows that could not be used (row number, id, reason).
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
        return Battles(
            ids=self.ids[mask],
            system_a=self.system_a[mask],
            system_b=self.system_b[mask],
            preference=self.preference[mask],
            instrumental=self.instrumental[mask],
            audio_a=self.audio_a[mask],
            audio_b=self.audio_b[mask],
            song_a=self.song_a[mask],
            song_b=self.song_b[mask],
            scores_a={k: v[mask] for k, v in self.scores_a.items()},
            scores_b={k: v[mask] for k, v in self.scores_b.items()},
            invalid=list(self.invalid),
        )

    def swapped(self) -> Battles:
        """The same battles with sides A and B exchanged (and the preference with them)."""
        flip = {"A": "B", "B": "A", "TIE": "TIE", "BOTH_BAD": "BOTH_BAD"}
        return Battles(
            ids=self.ids,
            system_a=self.system_b,
            system_b=self.system_a,
            preference=np.array([flip[p] for p in self.preference], dtype=object),
            instrumental=self.instrumental,
            audio_a=self.audio_b,
            audio_b=self.audio_a,
            song_a=self.song_b,
            song_b=self.song_a,
            scores_a=dict(self.scores_b),
            scores_b=dict(self.scores_a),
            invalid=list(self.invalid),
        )

    def with_scores(self, name: str, a: np.ndarray, b: np.ndarray) -> Battles:
        scores_a, scores_b = dict(self.scores_a), dict(self.scores_b)
        scores_a[name], scores_b[name] = np.asarray(a, float), np.asarray(b, float)
        return replace(self, scores_a=scores_a, scores_b=scores_b)

    def counts(self) -> dict[str, int]:
        pref = self.preference
        return {
            "n_battles": len(self),
            "n_decisive": int(np.isin(pref, ["A", "B"]).sum()),
            "n_tie": int((pref == "TIE").sum()),
            "n_both_bad": int((pref == "BOTH_BAD").sum()),
            "n_invalid": len(self.invalid),
        }


def load_battles(path: str | Path) -> Battles:
    """Read battles from CSV, JSON (one battle, a list, or ``{"battles": [...]}``), JSONL,
    Parquet, or a folder of such files (the Music Arena dataset's one-JSON-per-battle layout)."""
    path = Path(path)
    records = _read_records(path)
    if not records:
        raise DataError(f"no battles in {path}")
    battles = battles_from_records(records)
    log.info("loaded %d battles from %s (%d invalid rows)", len(battles), path, len(battles.invalid))
    return battles


def battles_from_records(records: Iterable[Mapping]) -> Battles:
    """Build ``Battles`` from dict rows in the Music Arena schema or the plain CSV schema.

    Rows without two system names or with an unknown preference go to ``invalid``.
    """
    records = list(records)
    bad = next((r for r in records if not isinstance(r, Mapping)), None)
    if bad is not None:
        raise DataError(f"a battle must be a JSON object / table row, got {type(bad).__name__}: {bad!r:.80}")
    names = _score_column_names(records)
    kept: list[tuple[int, Mapping]] = []
    invalid: list[dict] = []
    for i, row in enumerate(records):
        reason = _row_problem(row)
        if reason:
            invalid.append({"row": i + 1, "id": _battle_id(row, i), "reason": reason})
        else:
            kept.append((i, row))

    def column(get) -> np.ndarray:
        return np.array([get(i, r) for i, r in kept], dtype=object)

    battles = Battles(
        ids=column(lambda i, r: _battle_id(r, i)),
        system_a=column(lambda i, r: str(_systems(r)[0])),
        system_b=column(lambda i, r: str(_systems(r)[1])),
        preference=column(lambda i, r: _preference(r)),
        instrumental=np.array([_instrumental(r) for _, r in kept], dtype=float),
        audio_a=column(lambda i, r: _text(r.get("audio_a"))),
        audio_b=column(lambda i, r: _text(r.get("audio_b"))),
        song_a=column(lambda i, r: _text(r.get("id_a", r.get("song_id_a")))),
        song_b=column(lambda i, r: _text(r.get("id_b", r.get("song_id_b")))),
        invalid=invalid,
    )
    for name in names:
        a = np.array([_number(r.get(f"{name}_a")) for _, r in kept], dtype=float)
        b = np.array([_number(r.get(f"{name}_b")) for _, r in kept], dtype=float)
        battles = battles.with_scores(name, a, b)
    return battles


def _read_records(path: Path) -> list[dict]:
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.suffix.lower() in {".json", ".jsonl", ".csv", ".parquet"}
        )
        return [rec for p in files for rec in _read_records(p)]
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


def _number(value) -> float:
    return float("nan") if value is None or value == "" else float(value)


def _text(value) -> str:
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


# ---------------------------------------------------------------------------------------------
# Scores files (as written by `apexmusic predict`) and the join on audio ids
# ---------------------------------------------------------------------------------------------


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
    rows = _read_records(path)
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
    values = {n: np.array([_number(r.get(n)) for r in rows], dtype=float) for n in wanted}
    return ScoreTable(
        ids=[_text(r.get("id")) for r in rows], paths=[_text(r.get("path")) for r in rows], values=values
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
    for i in np.flatnonzero((row_a < 0) | (row_b < 0))[:_MAX_LISTED]:
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


# ---------------------------------------------------------------------------------------------
# Zero-shot rules: "the side with the higher score wins"
# ---------------------------------------------------------------------------------------------


@dataclass
class EvalConfig:
    """Settings of ``evaluate_arena``."""

    n_bootstrap: int = 1000
    ci: float = 0.95
    folds: int = 10
    seed: int = 0
    gb_max_iter: int = 100  # boosting rounds of the gradient-boosted model
    by_pair: bool = True


def rule_scores(battles: Battles) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every rule's per-side score: each score name, plus the z-scored APEX composites."""
    rules = {n: (battles.scores_a[n], battles.scores_b[n]) for n in battles.score_names}
    for composite, members in COMPOSITES.items():
        if all(m in battles.scores_a for m in members):
            za, zb = _zscore_sum(battles, members)
            rules[composite] = (za, zb)
    return rules


def _zscore_sum(battles: Battles, members: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Sum of scores z-scored over all songs (both sides pooled); nan if a member is missing."""
    za = np.zeros(len(battles))
    zb = np.zeros(len(battles))
    for name in members:
        a, b = battles.scores_a[name], battles.scores_b[name]
        pooled = np.concatenate([a, b])
        mean, sd = np.nanmean(pooled), np.nanstd(pooled)
        sd = sd if sd > 0 else 1.0
        za = za + (a - mean) / sd
        zb = zb + (b - mean) / sd
    return za, zb


def rule_metrics(
    preference: np.ndarray, diff: np.ndarray, n_bootstrap: int = 1000, ci: float = 0.95, seed: int = 0
) -> dict:
    """Metrics of the rule "A wins if diff = score_a - score_b > 0" on non-BOTH_BAD battles.

    ``accuracy`` counts a tied label or a tied prediction as 0.5; ``accuracy_decisive``,
    ``auc`` and ``f1`` (macro over the classes "A wins" / "B wins", a tied prediction split
    half-half) use the decisive battles only. Intervals: percentile bootstrap over battles.
    ``tie_closeness`` compares |diff| on decisive and tied battles (None without ties).
    """
    keep = np.isin(preference, ["A", "B", "TIE"]) & np.isfinite(diff)
    pref, diff = preference[keep], diff[keep]
    n, n_tie = len(pref), int((pref == "TIE").sum())
    out = {"n": n, "n_decisive": n - n_tie, "n_ties": n_tie}
    if n == 0:
        return out | {k: None for k in ("accuracy", "accuracy_decisive", "auc", "f1", "tie_closeness")}
    parts = _metric_parts(pref, diff)
    point = _metrics_from_weights(parts, np.ones((1, n)))
    boot = {k: [] for k in point}
    rng = np.random.default_rng(seed)
    for weights in _bootstrap_weights(n, n_bootstrap, rng):
        for k, v in _metrics_from_weights(parts, weights).items():
            boot[k].append(v)
    alpha = (1 - ci) / 2
    for k, v in point.items():
        out[k] = _finite_or_none(v[0])
        samples = np.concatenate(boot[k]) if boot[k] else np.array([])
        samples = samples[np.isfinite(samples)]
        if samples.size and out[k] is not None:
            lo, hi = np.quantile(samples, [alpha, 1 - alpha])
            out[f"{k}_ci"] = [float(lo), float(hi)]
        else:
            out[f"{k}_ci"] = None
    out["tie_closeness"] = _tie_closeness(pref, diff)
    return out


def _tie_closeness(pref: np.ndarray, diff: np.ndarray) -> float | None:
    """P(|diff| of a decisive battle > |diff| of a tied one), ties 0.5: above 0.5 when the
    scores see the battles listeners called a tie as closer contests."""
    from scipy.stats import mannwhitneyu

    tie = pref == "TIE"
    if not tie.any() or tie.all():
        return None
    u = mannwhitneyu(np.abs(diff[~tie]), np.abs(diff[tie])).statistic
    return float(u / ((~tie).sum() * tie.sum()))


@dataclass
class _MetricParts:
    decisive: np.ndarray  # 1.0 for A/B battles
    y: np.ndarray  # 1.0 where A won (decisive battles)
    pred_a: np.ndarray  # 1, 0 or 0.5 (tied scores)
    correct: np.ndarray  # 1, 0 or 0.5; label ties count 0.5
    group_onehot: object  # sparse [n, G]: distinct diff values in increasing order


def _metric_parts(pref: np.ndarray, diff: np.ndarray) -> _MetricParts:
    from scipy import sparse

    decisive = (pref != "TIE").astype(float)
    y = (pref == "A").astype(float)
    pred_a = np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
    correct = np.where(decisive > 0, y * pred_a + (1 - y) * (1 - pred_a), 0.5)
    _, group = np.unique(diff, return_inverse=True)
    onehot = sparse.csr_matrix((np.ones(len(diff)), (np.arange(len(diff)), group.ravel())))
    return _MetricParts(decisive, y, pred_a, correct, onehot)


def _metrics_from_weights(p: _MetricParts, w: np.ndarray) -> dict[str, np.ndarray]:
    """All rule metrics for each row of battle weights ``w`` [R, n] (bootstrap counts)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = (w @ p.correct) / w.sum(1)
        wd = w * p.decisive
        accuracy_decisive = (wd @ p.correct) / wd.sum(1)
        f1_a = _f1(wd @ (p.y * p.pred_a), wd @ ((1 - p.y) * p.pred_a), wd @ (p.y * (1 - p.pred_a)))
        f1_b = _f1(
            wd @ ((1 - p.y) * (1 - p.pred_a)), wd @ (p.y * (1 - p.pred_a)), wd @ ((1 - p.y) * p.pred_a)
        )
        auc = _weighted_auc(wd * p.y, wd * (1 - p.y), p.group_onehot)
    return {"accuracy": accuracy, "accuracy_decisive": accuracy_decisive, "auc": auc, "f1": (f1_a + f1_b) / 2}


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)


def _weighted_auc(w_pos: np.ndarray, w_neg: np.ndarray, onehot) -> np.ndarray:
    """P(diff of a random A-win > diff of a random B-win), ties 0.5, with battle weights."""
    pos = np.asarray((onehot.T @ w_pos.T).T)  # [R, G] weight of A-wins per distinct diff
    neg = np.asarray((onehot.T @ w_neg.T).T)
    total_pos = pos.sum(1, keepdims=True)
    above = total_pos - np.cumsum(pos, axis=1)  # A-win weight at strictly larger diffs
    num = (neg * (above + 0.5 * pos)).sum(1)
    denom = total_pos[:, 0] * neg.sum(1)
    return np.where(denom > 0, num / np.where(denom > 0, denom, 1), np.nan)


def _bootstrap_weights(n: int, n_bootstrap: int, rng: np.random.Generator, max_cells: int = 2_000_000):
    """Resampling battles with replacement, as multiplicity counts, in chunks [R, n] of at most
    ``max_cells`` entries (16 MB), so memory stays flat for large battle sets."""
    chunk = max(1, min(200, max_cells // max(n, 1)))
    done = 0
    while done < n_bootstrap:
        size = min(chunk, n_bootstrap - done)
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(float)
        done += size


def _finite_or_none(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def evaluate_rules(battles: Battles, config: EvalConfig | None = None) -> dict:
    """``rules`` section: per rule the overall metrics, ``by_type`` and ``by_pair`` splits."""
    config = config or EvalConfig()
    out = {}
    for name, (a, b) in rule_scores(battles).items():
        diff = a - b
        usable = np.isfinite(diff) & (battles.preference != "BOTH_BAD")
        entry = _rule_entry(battles.preference, diff, config)
        entry["n_missing_scores"] = int(((battles.preference != "BOTH_BAD") & ~usable).sum())
        entry["by_type"] = {
            kind: _rule_entry(battles.preference[mask], diff[mask], config)
            for kind, mask in _type_masks(battles).items()
        }
        if config.by_pair:
            entry["by_pair"] = {
                pair: _rule_entry(battles.preference[mask], diff[mask], config)
                for pair, mask in _pair_masks(battles).items()
            }
        out[name] = entry
    return out


def _rule_entry(pref: np.ndarray, diff: np.ndarray, config: EvalConfig) -> dict:
    return rule_metrics(pref, diff, config.n_bootstrap, config.ci, config.seed)


def _type_masks(battles: Battles) -> dict[str, np.ndarray]:
    masks = {"instrumental": battles.instrumental == 1.0, "vocal": battles.instrumental == 0.0}
    return {k: m for k, m in masks.items() if m.any()}


def pair_key(system_a: str, system_b: str) -> str:
    """Order-free name of a system pair: ``"x vs y"`` with x ≤ y."""
    x, y = sorted((str(system_a), str(system_b)))
    return f"{x} vs {y}"


def _pair_masks(battles: Battles) -> dict[str, np.ndarray]:
    keys = np.array([pair_key(a, b) for a, b in zip(battles.system_a, battles.system_b, strict=True)])
    return {k: keys == k for k in sorted(set(keys.tolist()))}


# ---------------------------------------------------------------------------------------------
# Learned preference models on score differences (stratified k-fold CV)
# ---------------------------------------------------------------------------------------------


def evaluate_learned(battles: Battles, config: EvalConfig | None = None) -> dict:
    """``learned`` section: LR and gradient boosting per feature set, k-fold CV on decisive battles.

    Feature sets: ``popularity`` (score_streams, score_likes), ``popularity+aesthetics`` (all
    seven APEX scores) when present, and ``all_scores`` (every score name) when it differs.
    """
    from threadpoolctl import threadpool_limits

    config = config or EvalConfig()
    out = {}
    with threadpool_limits(1):  # tiny problems: threads only add overhead (and contend)
        for set_name, features in _feature_sets(battles.score_names).items():
            out[set_name] = _cross_validate(battles, features, config)
    return out


def _feature_sets(names: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    sets = {k: v for k, v in FEATURE_SETS.items() if all(f in names for f in v)}
    if names and tuple(names) not in sets.values():
        sets["all_scores"] = tuple(names)
    return sets


def _decisive_differences(battles: Battles, features: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack([battles.scores_a[f] - battles.scores_b[f] for f in features], axis=1)
    keep = np.isin(battles.preference, ["A", "B"]) & np.isfinite(x).all(1)
    return x[keep], (battles.preference[keep] == "A").astype(int)


def _cross_validate(battles: Battles, features: tuple[str, ...], config: EvalConfig) -> dict:
    from sklearn.metrics import roc_auc_score

    x, y = _decisive_differences(battles, features)
    folds = min(config.folds, int(min((y == 1).sum(), (y == 0).sum())))
    out: dict = {"features": list(features), "n": len(y), "folds": folds}
    if folds < 2:
        return out | {"skipped": "fewer than two decisive battles of each outcome"}
    fold_of = stratified_folds(y, folds, config.seed)
    models = {
        "logistic_regression": lambda xt, yt: _SymmetricLogistic().fit(xt, yt),
        "gradient_boosting": lambda xt, yt: _SymmetricBoosting(config.gb_max_iter, config.seed).fit(xt, yt),
    }
    for model_name, make in models.items():
        acc, auc = [], []
        for k in range(folds):
            test = fold_of == k
            margin = make(x[~test], y[~test]).margin(x[test])
            acc.append(float(np.mean(np.where(margin == 0, 0.5, (margin > 0) == y[test]))))
            auc.append(float(roc_auc_score(y[test], margin)))
        out[model_name] = {
            "accuracy_mean": float(np.mean(acc)),
            "accuracy_sd": float(np.std(acc, ddof=1)),
            "auc_mean": float(np.mean(auc)),
            "auc_sd": float(np.std(auc, ddof=1)),
            "accuracy_folds": acc,
            "auc_folds": auc,
        }
    return out


def stratified_folds(y: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold index per item: each class spread evenly over ``k`` folds, in a random order.

    Unlike sklearn's StratifiedKFold the assignment does not depend on which class is called
    0 or 1, so exchanging the sides of every battle gives the same folds.
    """
    order = np.random.default_rng(seed).permutation(len(y))
    rank = np.empty(len(y), int)
    rank[order] = np.arange(len(y))
    classes = sorted(np.unique(y), key=lambda c: rank[y == c].min())  # label-free class order
    fold = np.empty(len(y), int)
    start = 0
    for c in classes:
        members = np.flatnonzero(y == c)
        members = members[np.argsort(rank[members])]
        fold[members] = (start + np.arange(len(members))) % k
        start += len(members)
    return fold


def _mirrored(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each battle and its side-swapped copy, in a canonical row order (so that a battle set and
    its swapped version give bit-identical training data)."""
    xx = np.concatenate([x, -x])
    yy = np.concatenate([y, 1 - y])
    order = np.lexsort(np.column_stack([xx, yy]).T[::-1])
    return xx[order], yy[order]


class _SymmetricLogistic:
    """L2 logistic regression without intercept on differences scaled by their RMS."""

    def __init__(self, C: float = 1.0):
        self.C = C

    def fit(self, x: np.ndarray, y: np.ndarray) -> _SymmetricLogistic:
        from sklearn.linear_model import LogisticRegression

        xx, yy = _mirrored(x, y)
        self.scale = np.sqrt(np.mean(xx**2, axis=0))
        self.scale[self.scale == 0] = 1.0
        lr = LogisticRegression(C=self.C, fit_intercept=False, tol=1e-8, max_iter=10000)
        # Mirrored copies at half weight: the same penalised likelihood as the original rows.
        lr.fit(xx / self.scale, yy, sample_weight=np.full(len(yy), 0.5))
        self.coef = lr.coef_[0]
        return self

    def margin(self, x: np.ndarray) -> np.ndarray:
        return (x / self.scale) @ self.coef


class _SymmetricBoosting:
    """Gradient-boosted trees trained on mirrored battles; margin f(x) - f(-x) is antisymmetric."""

    def __init__(self, max_iter: int = 100, seed: int = 0):
        self.max_iter, self.seed = max_iter, seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> _SymmetricBoosting:
        from sklearn.ensemble import HistGradientBoostingClassifier

        xx, yy = _mirrored(x, y)
        self.model = HistGradientBoostingClassifier(
            max_iter=self.max_iter, early_stopping=False, random_state=self.seed
        ).fit(xx, yy)
        return self

    def margin(self, x: np.ndarray) -> np.ndarray:
        return self.model.decision_function(x) - self.model.decision_function(-x)


# ---------------------------------------------------------------------------------------------
# The whole `arena eval` report
# ---------------------------------------------------------------------------------------------


def evaluate_arena(
    battles: Battles, config: EvalConfig | None = None, join: JoinReport | None = None
) -> dict:
    """Everything ``apexmusic arena eval`` writes to ``arena_metrics.json``."""
    config = config or EvalConfig()
    if not battles.score_names:
        raise DataError(
            "the battles carry no scores: give per-side columns <name>_a/<name>_b or a --scores file"
        )
    data = battles.counts() | {"invalid_examples": battles.invalid[:_MAX_LISTED]}
    if join is not None:
        data["scores_join"] = join.to_dict()
    return {
        "data": data,
        "config": {
            "n_bootstrap": config.n_bootstrap,
            "ci": config.ci,
            "folds": config.folds,
            "seed": config.seed,
            "gb_max_iter": config.gb_max_iter,
        },
        "rules": evaluate_rules(battles, config),
        "learned": evaluate_learned(battles, config),
    }


def write_json(obj: dict, path: str | Path) -> None:
    """JSON with nan → null (strict JSON), numpy scalars / arrays as numbers / lists, paths as text."""
    Path(path).write_text(json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def plot_rule_accuracy(rules: dict, path: str | Path) -> None:
    """Accuracy with its bootstrap interval per rule, chance at 0.5."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    names = [n for n in rules if rules[n].get("accuracy") is not None]
    acc = np.array([rules[n]["accuracy"] for n in names])
    lo = np.array([(rules[n]["accuracy_ci"] or [rules[n]["accuracy"]] * 2)[0] for n in names])
    hi = np.array([(rules[n]["accuracy_ci"] or [rules[n]["accuracy"]] * 2)[1] for n in names])
    fig = Figure(figsize=(7, 0.45 * len(names) + 1.5))
    ax = fig.subplots()
    ypos = np.arange(len(names))
    ax.errorbar(acc, ypos, xerr=[acc - lo, hi - acc], fmt="o", capsize=3)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_yticks(ypos, [f"{n} (n={rules[n]['n']})" for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("accuracy of 'higher score wins' (95% bootstrap interval)")
    ax.set_title("Arena: zero-shot rule accuracy")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---------------------------------------------------------------------------------------------
# Bradley–Terry leaderboard (the official Music Arena method)
# ---------------------------------------------------------------------------------------------

ARENA_SCALE, ARENA_BASE, ARENA_INIT = 400.0, 10.0, 1000.0


@dataclass
class LeaderboardConfig:
    """Music Arena's settings: C = 1, 1000 bootstrap resamples, 30 votes to be listed."""

    n_bootstrap: int = 1000
    min_votes: int = 30
    C: float = 1.0
    seed: int = 0


@dataclass
class LeaderboardRow:
    system: str
    score: float
    ci_low: float
    ci_high: float
    votes: int


def bradley_terry_scores(
    battles: Battles, C: float = 1.0, weights: np.ndarray | None = None
) -> dict[str, float]:
    """Arena Scores: L2-penalised logistic regression without intercept on ±1 system indicators.

    Each non-BOTH_BAD battle is a sample with +1 for system A and -1 for system B, label
    "A won"; a tie is two half-weight samples (A won, B won). Scores are 400/ln 10 times the
    coefficients, mean-centred at 1000 over the systems in the data. ``weights`` multiplies
    each battle (bootstrap counts). Only systems with positive weight are fitted.
    """
    w = np.ones(len(battles)) if weights is None else np.asarray(weights, float)
    return _fit_pairs(_pair_design(battles), w, C)


@dataclass
class _PairDesign:
    """Battles reduced to distinct system pairs, each oriented with the alphabetically first
    system on the +1 side (the likelihood does not depend on the orientation)."""

    systems: list[str]
    pair_lo: np.ndarray  # per pair: index of the +1 system
    pair_hi: np.ndarray  # per pair: index of the -1 system
    pair_of: np.ndarray  # per battle: its pair
    lo_won: np.ndarray  # per battle: credit of the +1 system (1, 0, or 0.5 for a tie)
    valid: np.ndarray  # per battle: 1.0 unless BOTH_BAD


def _pair_design(battles: Battles) -> _PairDesign:
    valid = (battles.preference != "BOTH_BAD").astype(float)
    systems, codes = np.unique(np.concatenate([battles.system_a, battles.system_b]), return_inverse=True)
    ia, ib = codes[: len(battles)], codes[len(battles) :]
    flip = ia > ib
    lo, hi = np.where(flip, ib, ia), np.where(flip, ia, ib)
    a_won = np.where(battles.preference == "A", 1.0, np.where(battles.preference == "B", 0.0, 0.5))
    pairs, pair_of = np.unique(lo * len(systems) + hi, return_inverse=True)
    return _PairDesign(
        systems=[str(s) for s in systems],
        pair_lo=pairs // len(systems),
        pair_hi=pairs % len(systems),
        pair_of=pair_of.ravel(),
        lo_won=np.where(flip, 1 - a_won, a_won),
        valid=valid,
    )


def _fit_pairs(design: _PairDesign, weights: np.ndarray, C: float) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression

    w = weights * design.valid
    n_pairs = len(design.pair_lo)
    # Battles of one pair share their row x, so they are summed into a win weight and a loss
    # weight per pair (the likelihood is a weighted sum; this is exact, and fast).
    won = np.bincount(design.pair_of, weights=design.lo_won * w, minlength=n_pairs)
    lost = np.bincount(design.pair_of, weights=(1 - design.lo_won) * w, minlength=n_pairs)
    used = won + lost > 0
    present = np.unique(np.concatenate([design.pair_lo[used], design.pair_hi[used]]))
    if len(present) < 2:
        return {design.systems[i]: ARENA_INIT for i in present}
    column = np.full(len(design.systems), -1)
    column[present] = np.arange(len(present))
    rows = np.arange(used.sum())
    x = np.zeros((len(rows), len(present)))
    x[rows, column[design.pair_lo[used]]] = 1.0
    x[rows, column[design.pair_hi[used]]] = -1.0
    won, lost = won[used], lost[used]
    # Win part (label 1) and loss part (label 0); a tie adds half to each. Each part is also
    # mirrored (-x, 1-label) at half weight, which leaves the penalised likelihood unchanged
    # but guarantees both labels are present even when one system won everything.
    xs = np.concatenate([x, x, -x, -x])
    ys = np.concatenate([np.ones(len(x)), np.zeros(len(x)), np.zeros(len(x)), np.ones(len(x))])
    ws = np.concatenate([won, lost, won, lost]) * 0.5
    nz = ws > 0
    lr = LogisticRegression(C=C, fit_intercept=False, tol=1e-6, max_iter=10000)
    lr.fit(xs[nz], ys[nz], sample_weight=ws[nz])
    scores = ARENA_SCALE * lr.coef_[0] / math.log(ARENA_BASE)
    scores = scores - scores.mean() + ARENA_INIT
    return {design.systems[i]: float(v) for i, v in zip(present, scores, strict=True)}


def system_votes(battles: Battles) -> dict[str, int]:
    """Battles each system took part in, BOTH_BAD excluded (Music Arena's ``# Votes``)."""
    keep = battles.preference != "BOTH_BAD"
    names, counts = np.unique(
        np.concatenate([battles.system_a[keep], battles.system_b[keep]]), return_counts=True
    )
    return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


def arena_leaderboard(
    battles: Battles,
    config: LeaderboardConfig | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[LeaderboardRow]:
    """The official Music Arena leaderboard, best first.

    Intervals as Music Arena computes them: score ± 1.96 · sd of the scores over bootstrap
    resamples of the battles (a system absent from a resample keeps its full-data score).
    Scores are fitted on all systems; ``min_votes`` only removes rows from the listing.
    """
    config = config or LeaderboardConfig()
    battles = battles.subset(battles.preference != "BOTH_BAD")
    scores = bradley_terry_scores(battles, config.C)
    if not scores:
        raise DataError("no battles with a preference other than BOTH_BAD")
    systems = list(scores)
    from threadpoolctl import threadpool_limits

    samples = np.empty((config.n_bootstrap, len(systems)))
    rng = np.random.default_rng(config.seed)
    design = _pair_design(battles)
    done = 0
    with threadpool_limits(1):
        for weights in _bootstrap_weights(len(battles), config.n_bootstrap, rng):
            for w in weights:
                boot = _fit_pairs(design, w, config.C)
                samples[done] = [boot.get(s, scores[s]) for s in systems]
                done += 1
                if on_progress is not None:
                    on_progress(done, config.n_bootstrap)
    margin = 1.96 * samples.std(axis=0) if config.n_bootstrap > 1 else np.zeros(len(systems))
    votes = system_votes(battles)
    rows = [
        LeaderboardRow(s, scores[s], scores[s] - m, scores[s] + m, votes.get(s, 0))
        for s, m in zip(systems, margin, strict=True)
        if votes.get(s, 0) >= config.min_votes
    ]
    return sorted(rows, key=lambda r: (-r.score, r.system))


def write_leaderboard_csv(rows: list[LeaderboardRow], path: str | Path) -> None:
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["system", "score", "ci_low", "ci_high", "votes"])
        for r in rows:
            writer.writerow([r.system, f"{r.score:.2f}", f"{r.ci_low:.2f}", f"{r.ci_high:.2f}", r.votes])


def plot_leaderboard(rows: list[LeaderboardRow], path: str | Path, title: str = "Arena leaderboard") -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    fig = Figure(figsize=(7, 0.4 * len(rows) + 1.5))
    ax = fig.subplots()
    ypos = np.arange(len(rows))
    score = np.array([r.score for r in rows])
    err = [score - [r.ci_low for r in rows], [r.ci_high for r in rows] - score]
    ax.errorbar(score, ypos, xerr=err, fmt="o", capsize=3)
    ax.axvline(ARENA_INIT, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(ypos, [f"{r.system} ({r.votes})" for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("Arena Score (Bradley–Terry, 400/ln10 scale, mean 1000; 95% CI)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def predicted_leaderboard(battles: Battles, human: list[LeaderboardRow]) -> dict:
    """Systems ranked by their songs' mean predicted score, per rule, against the human board.

    A song is one battle side; a song that appears in several battles (same song id, else same
    non-empty audio path) counts once. Correlations use the systems on the human board that have scores.
    Returns ``{"systems": {system: {"n_songs", rule: mean...}}, "correlations": {rule: ...}}``.
    """
    from scipy.stats import kendalltau, spearmanr

    human_score = {r.system: r.score for r in human}
    per_system: dict[str, dict] = {}
    correlations = {}
    for name, (a, b) in rule_scores(battles).items():
        means = _system_means(battles, a, b)
        for system, (mean, n_songs) in means.items():
            per_system.setdefault(system, {})[name] = mean
            per_system[system][f"n_songs_{name}"] = n_songs
        shared = [s for s in human_score if s in means]
        corr: dict = {"n_systems": len(shared)}
        if len(shared) >= 3:
            h = [human_score[s] for s in shared]
            p = [means[s][0] for s in shared]
            rho, rho_p = spearmanr(h, p)
            tau, tau_p = kendalltau(h, p)
            corr |= {"spearman": rho, "spearman_p": rho_p, "kendall": tau, "kendall_p": tau_p}
        correlations[name] = corr
    return {"systems": per_system, "correlations": _jsonable(correlations)}


def _system_means(battles: Battles, a: np.ndarray, b: np.ndarray) -> dict[str, tuple[float, int]]:
    songs: dict[tuple[str, str], float] = {}
    for i in range(len(battles)):
        for system, song, score, side in (
            (battles.system_a[i], battles.song_a[i] or battles.audio_a[i], a[i], "a"),
            (battles.system_b[i], battles.song_b[i] or battles.audio_b[i], b[i], "b"),
        ):
            if np.isfinite(score):
                songs[(system, song or f"{battles.ids[i]}:{side}:{i}")] = float(score)
    grouped: dict[str, list[float]] = {}
    for (system, _), score in songs.items():
        grouped.setdefault(system, []).append(score)
    return {s: (float(np.mean(v)), len(v)) for s, v in grouped.items()}


def write_predicted_csv(pred: dict, human: list[LeaderboardRow], score_name: str, path: str | Path) -> None:
    """One row per system on the human board: predicted mean (``score_name``) and both ranks."""
    systems = pred["systems"]
    rows = [r for r in human if systems.get(r.system, {}).get(score_name) is not None]
    by_pred = sorted(rows, key=lambda r: -systems[r.system][score_name])
    pred_rank = {r.system: i + 1 for i, r in enumerate(by_pred)}
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["system", "predicted", "n_songs", "predicted_rank", "human_score", "human_rank"])
        for human_rank, r in enumerate(rows, start=1):
            s = systems[r.system]
            writer.writerow(
                [
                    r.system,
                    f"{s[score_name]:.6g}",
                    s[f"n_songs_{score_name}"],
                    pred_rank[r.system],
                    f"{r.score:.2f}",
                    human_rank,
                ]
            )


# ---------------------------------------------------------------------------------------------
# A preference model to ship with a scoring model (comparator.json)
# ---------------------------------------------------------------------------------------------

_COMPARATOR_TYPE = "apexmusic.arena.PreferenceComparator"


@dataclass
class PreferenceComparator:
    """P(song A preferred over song B) = sigmoid(sum_k coef_k · (a_k - b_k) / scale_k).

    L2 logistic regression (C) without intercept on score differences, fitted on the
    decisive battles (ties and BOTH_BAD are not used) with each battle also seen side-swapped,
    so ``prob_a_wins(a, b) == 1 - prob_a_wins(b, a)``. ``features`` defaults to the APEX
    scores the battles carry (all seven when present), else every score name.
    """

    features: tuple[str, ...] | None = None
    C: float = 1.0
    coef: np.ndarray | None = None
    scale: np.ndarray | None = None
    n_train: int = 0

    def fit(self, battles: Battles | Iterable[Mapping]) -> PreferenceComparator:
        if not isinstance(battles, Battles):
            battles = battles_from_records(battles)
        features = self.features or _default_features(battles.score_names)
        missing = [f for f in features if f not in battles.scores_a]
        if not features or missing:
            raise DataError(f"battles lack scores for {missing or 'any feature'}")
        x, y = _decisive_differences(battles, tuple(features))
        if len(y) == 0:
            raise DataError("no decisive (A or B) battle with all feature scores to fit a comparator on")
        model = _SymmetricLogistic(self.C).fit(x, y)
        self.features, self.coef, self.scale, self.n_train = tuple(features), model.coef, model.scale, len(y)
        return self

    def prob_a_wins(self, scores_a: Mapping[str, float], scores_b: Mapping[str, float]) -> float:
        if self.coef is None:
            raise ConfigError("PreferenceComparator is not fitted")
        missing = [f for f in self.features if f not in scores_a or f not in scores_b]
        if missing:
            raise DataError(f"scores lack {missing} needed by the comparator")
        diff = np.array([float(scores_a[f]) - float(scores_b[f]) for f in self.features])
        z = float((diff / self.scale) @ self.coef)
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def to_dict(self) -> dict:
        if self.coef is None:
            raise ConfigError("PreferenceComparator is not fitted")
        return {
            "type": _COMPARATOR_TYPE,
            "version": 1,
            "features": list(self.features),
            "C": self.C,
            "coef": [float(c) for c in self.coef],
            "scale": [float(s) for s in self.scale],
            "n_train": self.n_train,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> PreferenceComparator:
        try:
            if d.get("type") != _COMPARATOR_TYPE or d.get("version") != 1:
                raise ValueError(f"not a version-1 comparator (type {d.get('type')!r})")
            features = tuple(str(f) for f in d["features"])
            coef, scale = np.asarray(d["coef"], float), np.asarray(d["scale"], float)
            if not (len(features) == len(coef) == len(scale)) or not np.isfinite(coef).all():
                raise ValueError("features, coef and scale differ in length or are not finite")
            if not (scale > 0).all():
                raise ValueError("scale must be positive")
            return cls(features, float(d.get("C", 1.0)), coef, scale, int(d.get("n_train", 0)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelLoadError(f"invalid comparator: {exc}") from exc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> PreferenceComparator:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read comparator {path}: {exc}") from exc
        return cls.from_dict(data)


def _default_features(names: tuple[str, ...]) -> tuple[str, ...]:
    apex = tuple(t for t in ALL_TASKS if t in names)
    return apex or tuple(names)

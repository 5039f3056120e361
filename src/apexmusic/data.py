"""Labels in: metadata tables and rater records → per-song targets joined to an embedding store.

Splits live in :mod:`apexmusic.splits` (re-exported here).

Readers take CSV, JSON (a list of objects), JSONL or Parquet. A :class:`ColumnMap` says which
columns hold what; presets cover Suno exports, Udio exports, the plain table the simulated
corpus writes, and SongEval per-rater records. ``preset="auto"`` picks the preset from the
column names when exactly one fits.

Targets are always the seven task columns of :data:`apexmusic.tasks.ALL_TASKS` (NaN where a
song has no such label); popularity counts become 0–100 scores via :mod:`apexmusic.targets`
over the whole table (the platform's population), before any join or split.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from apexmusic.choices import LABEL_PRESETS, SPLITS
from apexmusic.errors import ConfigError, DataError, InputError
from apexmusic.label_values import CellParser
from apexmusic.sources import read_rows
from apexmusic.splits import Split, SplitConfig, split_indices
from apexmusic.store import StoreData
from apexmusic.targets import PopularityConfig, aggregate_ratings, popularity_score
from apexmusic.tasks import AESTHETIC_TASKS, ALL_TASKS

log = logging.getLogger(__name__)

__all__ = [
    "SPLITS",
    "ColumnMap",
    "Dataset",
    "LabelTable",
    "Split",
    "SplitConfig",
    "join_labels",
    "load_dataset",
    "load_labels",
    "merge_labels",
    "split_indices",
]


@dataclass
class ColumnMap:
    """Which column holds what. Tuples list candidates; the first present column is used."""

    id: tuple[str, ...] = ("id",)
    plays: tuple[str, ...] = ("plays",)
    likes: tuple[str, ...] = ("likes",)
    platform: tuple[str, ...] = ("platform",)
    creator: tuple[str, ...] = ("creator",)
    created_at: tuple[str, ...] = ("created_at",)
    created_at_unit: str = "auto"  # auto | s | ms | iso
    platform_name: str = ""  # platform of every row when there is no platform column
    # task -> candidate columns (matched case-insensitively)
    aesthetics: dict[str, tuple[str, ...]] = field(default_factory=lambda: {t: (t,) for t in AESTHETIC_TASKS})
    path: tuple[str, ...] = ("path",)
    keep: tuple[str, ...] = ()  # extra columns carried along as metadata


PRESETS: dict[str, ColumnMap] = {
    "suno": ColumnMap(
        id=("song_id", "id"),
        plays=("play_count",),
        likes=("upvote_count",),
        creator=("user_id",),
        created_at=("created_at",),
        created_at_unit="ms",
        platform_name="suno",
        aesthetics={},
        path=("audio_url", "path"),
        keep=("model_version", "tags", "title", "duration"),
    ),
    "udio": ColumnMap(
        id=("id", "song_id"),
        plays=("plays", "play_count"),
        likes=("likes", "like_count"),
        creator=("user_id", "artist", "creator"),
        created_at=("created_at",),
        platform_name="udio",
        aesthetics={},
        keep=("tags", "title", "duration"),
    ),
    "plain": ColumnMap(keep=("style",)),
}
SONGEVAL_DIMENSIONS = {task: task.capitalize() for task in AESTHETIC_TASKS}


@dataclass
class LabelTable:
    """Per-song targets ``[N, 7]`` (columns ``ALL_TASKS``, NaN = no label) and metadata."""

    ids: list[str]
    targets: np.ndarray
    platform: np.ndarray  # object [N]
    creator: np.ndarray  # object [N], None when unknown
    created_at: np.ndarray  # float64 seconds since the epoch, NaN when unknown
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # raw counts, rater sd, ...
    source: str = ""
    popularity: dict[str, Any] = field(default_factory=dict)  # the PopularityConfig used
    invalid: dict[str, int] = field(default_factory=dict)  # column -> invalid cells read as missing

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray) -> LabelTable:
        index = np.asarray(index, dtype=np.int64)
        return LabelTable(
            ids=[self.ids[i] for i in index],
            targets=self.targets[index],
            platform=self.platform[index],
            creator=self.creator[index],
            created_at=self.created_at[index],
            extra={k: v[index] for k, v in self.extra.items()},
            source=self.source,
            popularity=self.popularity,
        )

    def counts(self) -> dict[str, int]:
        return {task: int(np.isfinite(self.targets[:, i]).sum()) for i, task in enumerate(ALL_TASKS)}


# ---- reading -----------------------------------------------------------------------------


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV / JSON / JSONL / Parquet file as dicts (CSV cells stay strings)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"labels file {path} not found")
    suffix = path.suffix.lower()
    if suffix not in {".csv", ".json", ".jsonl", ".parquet"}:
        raise DataError(f"{path}: unsupported labels format {suffix!r} (csv, json, jsonl, parquet)")
    if suffix != ".json":
        try:
            return read_rows(path, "labels file")
        except InputError as exc:
            raise DataError(str(exc)) from exc
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if isinstance(data, dict):  # an export wrapping its list, e.g. {"songs": [...]}
        data = next((v for v in data.values() if isinstance(v, list)), None)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects")
    return data


def detect_preset(columns: set[str]) -> str:
    """The one preset whose signature columns are present, else a ConfigError."""
    lower = {c.lower() for c in columns}
    found = []
    if "annotation" in lower:
        found.append("songeval")
    if {"play_count", "upvote_count"} & lower and {"song_id", "user_id"} & lower:
        found.append("suno")
    has_counts = bool({"plays", "likes"} & lower)
    has_plain_extras = "platform" in lower or bool(set(AESTHETIC_TASKS) & lower)
    if has_counts and has_plain_extras or (not has_counts and set(AESTHETIC_TASKS) & lower):
        found.append("plain")
    elif has_counts:
        found.append("udio")
    if len(found) != 1:
        raise ConfigError(
            f"cannot tell the labels format from columns {sorted(columns)[:12]} "
            f"(matches {found or 'none'}); pass --preset suno|udio|plain|songeval"
        )
    return found[0]


def load_labels(
    path: str | Path,
    preset: str = "auto",
    column_map: ColumnMap | None = None,
    popularity: PopularityConfig | None = None,
    strict: bool = False,
) -> LabelTable:
    """Read a labels file into a :class:`LabelTable` (popularity counts → 0–100 scores).

    Cells that are present but not usable numbers (text, NaN, inf, negative counts) are read
    as missing and reported in one warning per file, per column with examples; with
    ``strict`` they are a DataError instead.
    """
    records = read_records(path)
    if not records:
        raise DataError(f"{path} holds no rows")
    columns = set().union(*(r.keys() for r in records[:200]))
    cells = CellParser()
    if column_map is None:
        preset = detect_preset(columns) if preset == "auto" else preset
        if preset not in (*PRESETS, "songeval"):
            raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(LABEL_PRESETS)}")
    if column_map is None and preset == "songeval":
        table = songeval_labels(records, source=str(path), cells=cells)
    else:
        popularity = popularity or PopularityConfig()
        table = table_labels(records, column_map or PRESETS[preset], popularity, cells=cells)
        table.source = f"{path} ({preset})"
        table.popularity = asdict(popularity)
    cells.check(str(path), strict)
    if cells.n_invalid:
        log.warning("%s: invalid label values read as missing: %s", path, cells.report())
    table.invalid = {column: found.count for column, found in cells.invalid.items()}
    log.info("read %d label rows from %s as %s: %s", len(table), path, preset, table.counts())
    return table


def table_labels(
    records: list[dict[str, Any]],
    cmap: ColumnMap,
    popularity: PopularityConfig,
    cells: CellParser | None = None,
) -> LabelTable:
    columns = set().union(*(r.keys() for r in records))
    pick = _column_picker(columns)
    id_col = pick(cmap.id)
    if id_col is None:
        raise DataError(f"no id column (tried {list(cmap.id)}) among {sorted(columns)[:12]}")
    ids = [_clean_id(r.get(id_col)) for r in records]
    keep_rows = [i for i, song_id in enumerate(ids) if song_id]
    if len(keep_rows) < len(records):
        log.warning("%d label rows without an id skipped", len(records) - len(keep_rows))
    records = [records[i] for i in keep_rows]
    ids = [ids[i] for i in keep_rows]
    _check_unique_ids(ids)

    cells = cells or CellParser()

    def numbers(col: str | None, parse) -> np.ndarray:
        if col is None:
            return np.full(len(records), np.nan)
        return np.array([parse(r.get(col), col) for r in records], dtype=np.float64)

    platform_col, creator_col = pick(cmap.platform), pick(cmap.creator)
    platform = np.array(
        [
            str(r.get(platform_col) or cmap.platform_name) if platform_col else cmap.platform_name
            for r in records
        ],
        dtype=object,
    )
    creator = np.array(
        [_clean_id(r.get(creator_col)) if creator_col else None for r in records], dtype=object
    )
    created_col = pick(cmap.created_at)
    created_at = np.full(len(records), np.nan)
    if created_col:
        for i, r in enumerate(records):
            created_at[i] = _to_seconds(r.get(created_col), cmap.created_at_unit)
            if np.isnan(created_at[i]) and r.get(created_col) not in (None, ""):
                cells.bad(r.get(created_col), created_col)

    targets = np.full((len(records), len(ALL_TASKS)), np.nan)
    plays, likes = numbers(pick(cmap.plays), cells.count), numbers(pick(cmap.likes), cells.count)
    targets[:, 0] = popularity_score(plays, platform, created_at, popularity)
    targets[:, 1] = popularity_score(likes, platform, created_at, popularity)
    for task, candidates in cmap.aesthetics.items():
        col = pick(candidates)
        if col is not None:
            values = numbers(col, cells.score)
            bad = np.isfinite(values) & ((values < 1) | (values > 5))
            if bad.any():
                raise DataError(f"column {col!r}: {int(bad.sum())} values outside 1–5")
            targets[:, ALL_TASKS.index(task)] = values
    extra = {"plays": plays, "likes": likes}
    path_col = pick(cmap.path)
    if path_col:
        extra["path"] = np.array([str(r.get(path_col) or "") for r in records], dtype=object)
    for name in cmap.keep:
        col = pick((name,))
        if col:
            extra[name] = np.array([_cell(r.get(col)) for r in records], dtype=object)
    return LabelTable(ids, targets, platform, creator, created_at, extra)


def songeval_labels(
    records: list[dict[str, Any]], source: str = "", cells: CellParser | None = None
) -> LabelTable:
    """SongEval per-rater records → per-song mean over raters, with rater sd and count kept.

    The id is the record's ``id`` when it has one, else ``file_name`` without its extension
    (``mp3/0.mp3`` → ``mp3/0``); joining also accepts the bare stem (``0``).
    """
    cells = cells or CellParser()
    ids, per_dim = [], {task: [] for task in AESTHETIC_TASKS}
    for r in records:
        name = _clean_id(r.get("id")) or (_strip_suffix(str(r["file_name"])) if r.get("file_name") else None)
        if not name or not isinstance(r.get("annotation"), list):
            raise DataError(f"SongEval record without id/file_name and annotation: {str(r)[:120]}")
        ids.append(name)
        for task, key in SONGEVAL_DIMENSIONS.items():
            per_dim[task].append([cells.score(_get_ci(a, key), key) for a in r["annotation"]])
    _check_unique_ids(ids)
    n = len(ids)
    targets = np.full((n, len(ALL_TASKS)), np.nan)
    extra: dict[str, np.ndarray] = {}
    for task in AESTHETIC_TASKS:
        agg = aggregate_ratings(per_dim[task])
        targets[:, ALL_TASKS.index(task)] = agg.mean
        extra[f"{task}_sd"], extra[f"{task}_n_raters"] = agg.sd, agg.n_raters
    extra["gender"] = np.array([r.get("gender") for r in records], dtype=object)
    log.info(
        "aggregated SongEval ratings of %d songs (mean raters %.1f)",
        n,
        float(np.mean(extra["coherence_n_raters"])) if n else 0.0,
    )
    return LabelTable(
        ids,
        targets,
        np.full(n, "songeval", object),
        np.full(n, None, object),
        np.full(n, np.nan),
        extra,
        source=f"{source} (songeval)",
    )


def merge_labels(tables: list[LabelTable]) -> LabelTable:
    """Combine label files by id; for each cell the first table with a value wins."""
    if len(tables) == 1:
        return tables[0]
    ids = list(dict.fromkeys(i for t in tables for i in t.ids))
    pos = {song_id: k for k, song_id in enumerate(ids)}
    n = len(ids)
    merged = LabelTable(
        ids,
        np.full((n, len(ALL_TASKS)), np.nan),
        np.full(n, "", object),
        np.full(n, None, object),
        np.full(n, np.nan),
        {},
        source=" + ".join(t.source for t in tables),
    )
    for t in tables:
        rows = np.array([pos[i] for i in t.ids], dtype=np.int64)
        hole = ~np.isfinite(merged.targets[rows])
        merged.targets[rows] = np.where(hole, t.targets, merged.targets[rows])
        for name, values, empty in (("platform", t.platform, ""), ("creator", t.creator, None)):
            current = getattr(merged, name)
            fill = np.array([c in (empty, None) for c in current[rows]])
            current[rows[fill]] = values[fill]
        unset = ~np.isfinite(merged.created_at[rows])
        merged.created_at[rows[unset]] = t.created_at[unset]
        for key, values in t.extra.items():
            if key not in merged.extra:
                obj = values.dtype == object
                merged.extra[key] = np.full(n, None if obj else np.nan, object if obj else np.float64)
            merged.extra[key][rows] = values
    return merged


# ---- joining to the embedding store --------------------------------------------------------


@dataclass
class Dataset:
    """Songs that have both an embedding and at least one wanted label."""

    store: StoreData
    labels: LabelTable  # aligned row by row with ``store``
    tasks: tuple[str, ...]
    n_unlabelled: int = 0  # songs in the store without any wanted label
    n_missing_songs: int = 0  # label rows with no song in the store
    sha256: np.ndarray | None = None  # object [N]: each song's audio hash, for leak-free splits

    def __len__(self) -> int:
        return len(self.store)

    @property
    def targets(self) -> np.ndarray:
        """``[N, len(tasks)]`` float32 with NaN for missing labels."""
        cols = [ALL_TASKS.index(t) for t in self.tasks]
        return self.labels.targets[:, cols].astype(np.float32)

    def subset(self, index: np.ndarray) -> Dataset:
        sha = None if self.sha256 is None else self.sha256[np.asarray(index, dtype=np.int64)]
        return replace(self, store=self.store.subset(index), labels=self.labels.subset(index), sha256=sha)

    def split(self, config: SplitConfig) -> Split:
        """Train / validation / test indices; songs with identical audio share a split."""
        return split_indices(len(self), config, self.labels.creator, self.labels.created_at, self.sha256)


def join_labels(store: StoreData, labels: LabelTable, tasks: tuple[str, ...] = ALL_TASKS) -> Dataset:
    """Align labels to the store's songs by id (exact id, else path-less stem when unique).

    Songs without any label for ``tasks`` are skipped and counted, and so are label rows
    whose song is not in the store.
    """
    lookup = _id_lookup(labels.ids)
    rows = [lookup.get(song_id, lookup.get(_stem(song_id))) for song_id in store.ids]
    cols = [ALL_TASKS.index(t) for t in tasks]
    has_label = np.array(
        [r is not None and bool(np.isfinite(labels.targets[r, cols]).any()) for r in rows], dtype=bool
    )
    keep = np.flatnonzero(has_label)
    matched = {rows[i] for i in range(len(rows)) if rows[i] is not None}
    n_unlabelled = int(len(store) - len(keep))
    n_missing = int(len(labels) - len(matched))
    if n_unlabelled:
        log.warning("%d songs in the store have no %s label and are skipped", n_unlabelled, "/".join(tasks))
    if n_missing:
        log.warning("%d label rows have no song in the store", n_missing)
    if not len(keep):
        raise DataError(
            f"no song in the store has a label for {list(tasks)} "
            f"(store ids e.g. {store.ids[:3]}, label ids e.g. {labels.ids[:3]})"
        )
    label_rows = np.array([rows[i] for i in keep], dtype=np.int64)
    return Dataset(store.subset(keep), labels.subset(label_rows), tuple(tasks), n_unlabelled, n_missing)


def _id_lookup(ids: list[str]) -> dict[str, int]:
    lookup = {song_id: i for i, song_id in enumerate(ids)}
    stems = Counter(_stem(i) for i in ids)
    for i, song_id in enumerate(ids):
        stem = _stem(song_id)
        if stems[stem] == 1 and stem not in lookup:
            lookup[stem] = i
    return lookup


def load_dataset(
    embeddings: str | Path,
    labels: list[str | Path] | str | Path,
    tasks: tuple[str, ...] = ALL_TASKS,
    preset: str = "auto",
    popularity: PopularityConfig | None = None,
    with_segments: bool = False,
    strict: bool = False,
) -> Dataset:
    """Open a store, read and merge label files, and join them (the CLI's one call)."""
    from apexmusic.store import EmbeddingStore

    paths = [labels] if isinstance(labels, str | Path) else list(labels)
    if not paths:
        raise ConfigError("no labels file given")
    tables = [load_labels(p, preset=preset, popularity=popularity, strict=strict) for p in paths]
    opened = EmbeddingStore.open(embeddings)
    dataset = join_labels(opened.load(with_segments=with_segments), merge_labels(tables), tasks)
    hashes = {row["id"]: row["sha256"] for row in opened.iter_rows(["id", "sha256"])}
    dataset.sha256 = np.array([hashes.get(song_id) for song_id in dataset.store.ids], dtype=object)
    return dataset


# ---- small helpers -------------------------------------------------------------------------


def _column_picker(columns: set[str]):
    by_lower = {c.lower(): c for c in columns}

    def pick(candidates: tuple[str, ...] | str | None) -> str | None:
        if candidates is None:
            return None
        for c in (candidates,) if isinstance(candidates, str) else candidates:
            if c in columns:
                return c
            if c.lower() in by_lower:
                return by_lower[c.lower()]
        return None

    return pick


def _to_float(value: Any) -> float:
    if value is None or value == "":
        return np.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def _to_seconds(value: Any, unit: str) -> float:
    """A creation time as seconds since the epoch (NaN when missing or unparseable)."""
    if value is None or value == "":
        return np.nan
    number = _to_float(value)
    if np.isfinite(number) and unit != "iso":
        if unit == "ms" or (unit == "auto" and abs(number) > 1e11):
            return number / 1000.0
        return number
    import pandas as pd

    try:
        stamp = pd.Timestamp(str(value))
    except (ValueError, TypeError):
        return np.nan
    if pd.isna(stamp):
        return np.nan
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).timestamp()


def _clean_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _cell(value: Any) -> Any:
    return ", ".join(map(str, value)) if isinstance(value, list) else value


def _get_ci(record: dict[str, Any], key: str) -> Any:
    if key in record:
        return record[key]
    lower = key.lower()
    return next((v for k, v in record.items() if k.lower() == lower), None)


def _strip_suffix(name: str) -> str:
    p = Path(name)
    return p.with_suffix("").as_posix() if p.suffix else name


def _stem(song_id: str) -> str:
    return Path(song_id).stem if song_id else song_id


def _check_unique_ids(ids: list[str]) -> None:
    dup = [i for i, c in Counter(ids).items() if c > 1]
    if dup:
        raise DataError(f"{len(dup)} ids appear more than once in the labels, e.g. {dup[:3]}")

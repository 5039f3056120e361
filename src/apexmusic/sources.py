"""Resolve command-line INPUTs (files, folders, globs, manifests) into songs to process.

Every song gets a stable ``id``: the manifest's ``id`` column, or the file's path relative to
the folder or glob root without its extension (``album/track01``), or the file stem for a
single file. Ids are unique within one run; a clash is a configuration error, not a silent
overwrite.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apexmusic.errors import ConfigError, InputError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = frozenset(
    {
        ".wav",
        ".flac",
        ".mp3",
        ".ogg",
        ".oga",
        ".opus",
        ".m4a",
        ".aac",
        ".mp4",
        ".webm",
        ".aif",
        ".aiff",
        ".wma",
    }
)
MANIFEST_EXTENSIONS = frozenset({".csv", ".jsonl", ".parquet"})


@dataclass(frozen=True)
class Song:
    """One input song: a stable id and where its audio lives."""

    id: str
    path: str


def resolve_inputs(inputs: list[str] | tuple[str, ...]) -> list[Song]:
    """Expand INPUTs into a de-duplicated, ordered list of songs.

    Paths that do not exist (or dangling links) are kept as songs so that the pipeline can
    report them in its failure log instead of dropping them silently.
    """
    songs: list[Song] = []
    for item in inputs:
        songs.extend(_expand(item))
    if not songs:
        raise InputError(f"no audio inputs found in {list(inputs)}")
    return _check_unique(songs)


def _expand(item: str) -> list[Song]:
    if _is_uri(item):  # s3://bucket/x.mp3 etc.: read by the engine's filesystem, kept verbatim
        return [Song(Path(item.split("://", 1)[1]).stem, item)]
    path = Path(item)
    if path.suffix.lower() in MANIFEST_EXTENSIONS and path.is_file():
        return read_manifest(path)
    if path.is_dir():
        return _from_folder(path)
    if glob.has_magic(item):
        matches = sorted(glob.glob(item, recursive=True))
        root = Path(_glob_root(item))
        return [Song(_rel_id(Path(m), root), m) for m in matches if Path(m).is_file()]
    # A plain file, or a path that does not exist / dangles: keep it, the pipeline reports it.
    return [Song(path.stem, str(path))]


def _from_folder(folder: Path) -> list[Song]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and not p.is_dir())
    return [Song(_rel_id(p, folder), str(p)) for p in files]


def _is_uri(location: str) -> bool:
    return "://" in location and not Path(location).exists()


def _glob_root(pattern: str) -> str:
    parts = Path(pattern).parts
    root: list[str] = []
    for part in parts:
        if glob.has_magic(part):
            break
        root.append(part)
    return os.path.join(*root) if root else "."


def _rel_id(path: Path, root: Path) -> str:
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    return rel.with_suffix("").as_posix()


def read_manifest(path: str | Path) -> list[Song]:
    """Read a CSV / JSONL / Parquet manifest with ``id`` and ``path`` columns.

    Relative paths are resolved against the manifest's folder.
    """
    path = Path(path)
    rows = read_rows(path, what="manifest")
    songs = []
    for i, row in enumerate(rows):
        if "path" not in row or row["path"] in (None, ""):
            raise InputError(f"{path}: row {i + 1} has no 'path'")
        location = str(row["path"])
        audio = Path(location.split("://", 1)[-1])
        if not _is_uri(location) and not audio.is_absolute():
            location = str(path.parent / audio)
        song_id = str(row["id"]) if row.get("id") not in (None, "") else audio.stem
        songs.append(Song(song_id, location))
    return songs


def read_rows(path: str | Path, what: str = "") -> list[dict[str, Any]]:
    """Rows of a CSV / TSV / JSONL table as dicts (CSV cells stay strings); any other suffix is
    read as Parquet. A file that cannot be read is an InputError naming ``what`` it is.

    Text files may start with a byte-order mark (stripped). A ``.csv`` may be separated by
    ``,``, ``;``, tab or ``|``: the delimiter is sniffed from the header line.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in {".csv", ".tsv"}:
            with path.open(newline="", encoding="utf-8-sig") as f:
                delimiter = "\t" if suffix == ".tsv" else sniff_delimiter(f.readline())
                f.seek(0)
                return list(csv.DictReader(f, delimiter=delimiter))
        if suffix == ".jsonl":
            with path.open(encoding="utf-8-sig") as f:
                return [json.loads(line) for line in f if line.strip()]
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what + ' ' if what else ''}{path}: {exc}") from exc


DELIMITERS = (",", ";", "\t", "|")


def sniff_delimiter(header: str) -> str:
    """The delimiter of a CSV header line: the candidate that splits it into the most fields
    (outside quotes); ``,`` when none splits it."""
    best, best_fields = ",", 1
    for delimiter in DELIMITERS:
        fields = len(next(csv.reader([header], delimiter=delimiter), []))
        if fields > best_fields:
            best, best_fields = delimiter, fields
    return best


def _check_unique(songs: list[Song]) -> list[Song]:
    seen: dict[str, str] = {}
    unique: list[Song] = []
    for song in songs:
        if song.id in seen:
            if seen[song.id] == song.path:
                continue  # the same file named twice
            raise ConfigError(
                f"two inputs share the id {song.id!r}: {seen[song.id]} and {song.path}; "
                "use a manifest with explicit ids"
            )
        seen[song.id] = song.path
        unique.append(song)
    return unique

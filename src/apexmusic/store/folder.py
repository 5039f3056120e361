"""The embedding store: a folder of Parquet shards, ``manifest.json`` and ``failures.jsonl``.

One row per song: ``id``, ``path``, ``sha256``, ``duration_s``, ``n_segments``,
``layers`` (song-level per-layer vectors, ``[n_layers, dim]`` flattened), ``segments``
(per-segment per-layer vectors, ``[n_segments, n_layers, dim]`` flattened) and
``segment_weights`` (the weight of each segment in the song mean: its valid seconds, or 1 for
the reference pipeline's plain mean).

What the vectors mean is one :class:`EmbeddingSpec`: the manifest is its ``to_dict()`` plus
informational keys (``created``, ``last_run``), and every shard carries the same spec in its
Parquet schema metadata. Reading checks each shard against the manifest, so a store never
mixes settings, and a store whose manifest was lost can be rebuilt from its shards
(:func:`repair_manifest`).

Writes are atomic (temporary file, fsync, rename, fsync of the folder), so an interrupted job
leaves only whole shards behind and ``--resume`` can trust every row it finds. A row that must
change (its file was replaced) is swapped by rewriting its shard under the same name, so a
reader sees the old row or the new one, never both. One process writes at a time
(:class:`~apexmusic.store.lock.WriterLock`). A shard that cannot be read is a StoreError naming
it; :mod:`apexmusic.store.check` moves such shards to ``quarantine/``. This module is the only code
that knows the on-disk layout; the embedding engines (local and Ray) write through it and
training, evaluation and prediction read through it.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from apexmusic.errors import ConfigError, StoreError
from apexmusic.paths import output_dir
from apexmusic.store.files import atomic_write_json, fsync, fsync_dir, unlink_quietly
from apexmusic.store.lock import WriterLock
from apexmusic.store.spec import EmbeddingSpec

log = logging.getLogger(__name__)

STORE_FORMAT = 2  # 2: shards carry the embedding spec in their schema metadata
MANIFEST = "manifest.json"
FAILURES = "failures.jsonl"
SHARD_GLOB = "shard-*.parquet"
SHARD_SPEC_KEY = b"apexmusic.embedding_spec"
QUARANTINE = "quarantine"
# Manifest keys that belong to the spec (or are derived from it): never changed in place.
_SPEC_KEYS = frozenset({f.name for f in fields(EmbeddingSpec)} | {"spec_format", "config_hash", "format"})
# What older stores recorded before the spec existed; a spec read from one lacks these.
_UNRECORDED_BEFORE_SPEC = ("fingerprint", "decoder", "resampler", "precision")


@dataclass
class SongEmbedding:
    """One song's vectors, as the engines produce them and the store keeps them."""

    id: str
    path: str
    sha256: str
    duration_s: float
    layers: np.ndarray  # float32 [n_layers, dim]
    segments: np.ndarray  # float32 [n_segments, n_layers, dim]
    segment_weights: np.ndarray  # float32 [n_segments]
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. musicnn tag probabilities
    size: int | None = None  # the file's byte size and mtime when it was embedded (resume checks)
    mtime_ns: int | None = None

    @property
    def n_segments(self) -> int:
        return int(self.segments.shape[0])


@dataclass
class Failure:
    id: str
    path: str
    kind: str
    message: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "path": self.path,
                "kind": self.kind,
                "message": self.message,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )

    def append_to(self, path: str | Path) -> None:
        """Append this failure as one durable JSON line to a failure log (``failures.jsonl``),
        on a line of its own even after a torn write left the log without a final newline."""
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            lead = b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""
            os.write(fd, lead + self.to_json().encode("utf-8") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class StoredRow:
    """Where a song's row is and what its file looked like when it was embedded."""

    shard: Path
    sha256: str
    size: int | None
    mtime_ns: int | None


@dataclass
class StoreData:
    """A store loaded into memory for training, evaluation or scoring."""

    ids: list[str]
    paths: list[str]
    layers: np.ndarray  # float32 [n_songs, n_layers, dim]
    duration_s: np.ndarray  # float64 [n_songs]
    spec: EmbeddingSpec
    segments: list[np.ndarray] | None = None  # per song [n_segments, n_layers, dim]
    segment_weights: list[np.ndarray] | None = None
    manifest: dict[str, Any] = field(default_factory=dict)  # the spec plus informational keys

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Sequence[int] | np.ndarray) -> StoreData:
        idx = np.asarray(index, dtype=np.int64)
        pick = (lambda xs: [xs[i] for i in idx]) if len(idx) else (lambda xs: [])
        return StoreData(
            ids=pick(self.ids),
            paths=pick(self.paths),
            layers=self.layers[idx],
            duration_s=self.duration_s[idx],
            spec=self.spec,
            segments=pick(self.segments) if self.segments is not None else None,
            segment_weights=(pick(self.segment_weights) if self.segment_weights is not None else None),
            manifest=self.manifest,
        )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def manifest_for(spec: EmbeddingSpec, **info: Any) -> dict[str, Any]:
    """The manifest of a store holding ``spec``'s vectors, with informational ``info``."""
    return {**info, **spec.to_dict(), "format": STORE_FORMAT, "config_hash": spec.store_key()}


class EmbeddingStore:
    """Read and write one embedding store folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._spec: EmbeddingSpec | None = None
        self._checked: set[Path] = set()  # shards whose spec matched the manifest
        self._lock: WriterLock | None = None

    # ---- creation -----------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, spec: EmbeddingSpec, resume: bool = False) -> EmbeddingStore:
        """Open ``root`` for writing vectors made under ``spec``.

        A new folder is initialised. An existing store is reused only when ``resume`` is set
        and its spec keys the same vectors (:meth:`EmbeddingSpec.store_key`); anything else
        raises StoreError rather than mixing incompatible vectors in one store. A store whose
        manifest was deleted is checked against its shards' own specs.
        """
        store = cls(root)
        output_dir(store.root, "embedding store")
        store._lock = WriterLock(store.root)
        try:
            store._open_for_writing(spec, resume)
        except BaseException:
            store.close()
            raise
        return store

    def _open_for_writing(self, spec: EmbeddingSpec, resume: bool) -> None:
        if self.manifest_path.exists():
            self._check_resumable(self.spec(), spec, "its manifest")
        elif self.has_rows():
            self._check_resumable(self._spec_from_shards(), spec, "its shards")
        if self.has_rows() and not resume:
            raise StoreError(f"{self.root} already holds embeddings; pass --resume to continue")
        previous = self._readable_manifest()
        info = {k: v for k, v in previous.items() if k not in _SPEC_KEYS}
        info.setdefault("created", _now())
        atomic_write_json(self.manifest_path, manifest_for(spec, **info))
        self._spec = spec

    def lock(self) -> None:
        """Take the writer lock (StoreError naming the holder's PID when another process has it)."""
        if self._lock is None:
            self._lock = WriterLock(self.root)

    def close(self) -> None:
        """Release the writer lock, if this store holds it."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> EmbeddingStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @classmethod
    def open(cls, root: str | Path) -> EmbeddingStore:
        store = cls(root)
        if not store.manifest_path.exists():
            hint = f"; apexmusic store repair {store.root} rebuilds it" if store.has_rows() else ""
            raise StoreError(f"{store.root} is not an embedding store (no {MANIFEST}){hint}")
        return store

    def _check_resumable(self, existing: EmbeddingSpec, spec: EmbeddingSpec, source: str) -> None:
        if "spec_format" not in self._readable_manifest() and source == "its manifest":
            # written before the spec existed: what it did not record cannot disagree
            existing = existing.with_(**{k: getattr(spec, k) for k in _UNRECORDED_BEFORE_SPEC})
        if existing.store_key() != spec.store_key():
            raise StoreError(
                f"{self.root} holds embeddings made with other settings ({source}: "
                f"{_differences(existing, spec)}); use a new --out folder"
            )

    # ---- paths and metadata ---------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def failures_path(self) -> Path:
        return self.root / FAILURES

    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read {self.manifest_path}: {exc}") from exc

    def spec(self) -> EmbeddingSpec:
        """The EmbeddingSpec of every vector in this store (read from the manifest)."""
        if self._spec is None:
            manifest = self.manifest()
            try:
                self._spec = EmbeddingSpec.from_dict(manifest)
            except (ConfigError, TypeError, ValueError) as exc:  # a damaged or foreign manifest
                raise StoreError(f"{self.manifest_path} holds no usable embedding spec: {exc}") from exc
        return self._spec

    def update_manifest(self, **info: Any) -> None:
        """Record informational keys (timings, counts); the spec cannot change."""
        for key in info:
            if key in _SPEC_KEYS:
                raise StoreError(f"manifest key {key!r} defines the vectors and cannot change")
        atomic_write_json(self.manifest_path, {**self.manifest(), **info})

    def shards(self) -> list[Path]:
        return sorted(self.root.glob(SHARD_GLOB))

    def has_rows(self) -> bool:
        return bool(self.shards())

    # ---- writing -----------------------------------------------------------------------
    def write(self, songs: Iterable[SongEmbedding]) -> Path | None:
        """Write songs as one new shard, atomically. Returns the shard path (None if empty)."""
        songs = list(songs)
        if not songs:
            return None
        name = f"shard-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
        final = self.root / name
        self._write_shard(self._table(songs), final)
        log.debug("wrote %d songs to %s", len(songs), final)
        return final

    def replace_rows(self, shard: Path, drop: set[str], songs: Sequence[SongEmbedding] = ()) -> None:
        """Rewrite ``shard`` without the rows of ``drop`` and with ``songs`` added, under the same
        name: one rename, so readers see either the old rows or the new ones."""
        import pyarrow as pa

        table = self._read_table(shard)
        keep = [i for i, song_id in enumerate(table.column("id").to_pylist()) if song_id not in drop]
        table = table.take(pa.array(keep, type=pa.int64()))
        if songs:
            new = self._table(list(songs))
            table = pa.concat_tables([_conform(table, new.schema), new], promote_options="permissive")
        if table.num_rows == 0:
            self._remove_shard(shard)
            return
        self._write_shard(table.replace_schema_metadata({SHARD_SPEC_KEY: self.spec().to_json()}), shard)
        log.debug("rewrote %s: %d rows replaced or removed", shard, len(drop))

    def _table(self, songs: list[SongEmbedding]) -> Any:
        import pyarrow as pa

        return pa.table(_columns(songs)).replace_schema_metadata({SHARD_SPEC_KEY: self.spec().to_json()})

    def _write_shard(self, table: Any, final: Path) -> None:
        import pyarrow.parquet as pq

        tmp = self.root / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            pq.write_table(table, tmp, write_page_checksum=True)
            fsync(tmp)
            os.replace(tmp, final)
            fsync_dir(self.root)
        except OSError as exc:
            unlink_quietly(tmp)
            raise StoreError(f"cannot write {final}: {exc.strerror or exc}") from None
        except BaseException:  # interrupted: no half-written temporary file stays behind
            unlink_quietly(tmp)
            raise
        self._checked.add(final)

    def _remove_shard(self, shard: Path) -> None:
        try:
            shard.unlink()
            fsync_dir(self.root)
        except OSError as exc:
            raise StoreError(f"cannot remove {shard}: {exc.strerror}") from None
        self._checked.discard(shard)

    def record_failure(self, failure: Failure) -> None:
        """Append one line to ``failures.jsonl`` (StoreError naming it when that fails)."""
        try:
            failure.append_to(self.failures_path)
        except OSError as exc:
            raise StoreError(f"cannot write {self.failures_path}: {exc.strerror or exc}") from None

    # ---- reading -----------------------------------------------------------------------
    def checked_shards(self) -> list[Path]:
        """The shards, each verified to hold vectors of this store's spec (StoreError naming
        the first shard made under other settings). Shards written before shards carried a
        spec cannot be verified and are trusted."""
        key = self.spec().store_key()
        shards = self.shards()
        for shard in shards:
            if shard in self._checked:
                continue
            found = shard_spec(shard)
            if found is not None and found.store_key() != key:
                raise StoreError(
                    f"{shard} holds vectors made with other settings than {self.manifest_path} "
                    f"({_differences(self.spec(), found)}); move it to its own store"
                )
            self._checked.add(shard)
        return shards

    def done_ids(self) -> set[str]:
        ids: set[str] = set()
        for shard in self.checked_shards():
            ids.update(self._read_table(shard, ["id"]).column("id").to_pylist())
        return ids

    def index(self) -> dict[str, StoredRow]:
        """Every stored song id, with its shard and the file facts it was embedded from
        (``size``/``mtime_ns`` are None in shards written before they were recorded)."""
        rows: dict[str, StoredRow] = {}
        for shard in self.checked_shards():
            names = set(self._schema(shard).names)
            table = self._read_table(shard, [c for c in ("id", "sha256", "size", "mtime_ns") if c in names])
            n = table.num_rows
            sizes = table.column("size").to_pylist() if "size" in names else [None] * n
            mtimes = table.column("mtime_ns").to_pylist() if "mtime_ns" in names else [None] * n
            ids, hashes = table.column("id").to_pylist(), table.column("sha256").to_pylist()
            for song_id, sha, size, mtime in zip(ids, hashes, sizes, mtimes, strict=True):
                rows[song_id] = StoredRow(shard, sha, size, mtime)
        return rows

    def failures(self) -> list[dict[str, Any]]:
        """The failure records; a garbled line (a torn write) is skipped with a warning."""
        try:
            data = self.failures_path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot read {self.failures_path}: {exc.strerror}") from None
        records = []
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                log.warning("%s line %d is not a failure record; skipped", self.failures_path, number)
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def iter_rows(self, columns: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """Rows as dicts, shard by shard (bounded memory for very large stores)."""
        for shard in self.checked_shards():
            yield from self._read_table(shard, list(columns) if columns else None).to_pylist()

    def iter_batches(self, columns: Sequence[str], batch_size: int = 65536) -> Iterator[Any]:
        """Arrow record batches of ``columns`` (which include ``id``), shard by shard.
        StoreError names a shard that cannot be read, and a song id stored twice."""
        import pyarrow.parquet as pq

        seen: set[str] = set()
        for shard in self.checked_shards():
            try:
                for batch in pq.ParquetFile(shard).iter_batches(batch_size=batch_size, columns=list(columns)):
                    ids = batch.column(batch.schema.get_field_index("id")).to_pylist()
                    if seen.intersection(ids) or len(set(ids)) != len(ids):
                        raise StoreError(f"{self.root} holds duplicate song ids (in {shard.name})")
                    seen.update(ids)
                    yield batch
            except (OSError, ValueError) as exc:
                raise _unreadable(shard, exc) from None

    def _read_table(self, shard: Path, columns: Sequence[str] | None = None) -> Any:
        import pyarrow.parquet as pq

        try:
            return pq.read_table(shard, columns=list(columns) if columns is not None else None)
        except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError; truncation an OSError
            raise _unreadable(shard, exc) from None

    def _schema(self, shard: Path) -> Any:
        import pyarrow.parquet as pq

        try:
            return pq.read_schema(shard)
        except (OSError, ValueError) as exc:
            raise _unreadable(shard, exc) from None

    def load(self, with_segments: bool = False, ids: Sequence[str] | None = None) -> StoreData:
        """Load song-level vectors (and optionally per-segment ones) into arrays.

        Rows come back in a stable order (sorted by id); ``ids`` restricts and orders them.
        """
        import pyarrow as pa

        spec = self.spec()
        n_layers, dim = spec.shape
        columns = ["id", "path", "duration_s", "layers"]
        if with_segments:
            columns += ["segments", "segment_weights"]
        shards = self.checked_shards()
        if not shards:
            raise StoreError(f"{self.root} holds no embeddings yet")
        table = pa.concat_tables([self._read_table(s, columns) for s in shards])
        all_ids = table.column("id").to_pylist()
        if len(set(all_ids)) != len(all_ids):
            raise StoreError(f"{self.root} holds duplicate song ids")
        position = {song_id: i for i, song_id in enumerate(all_ids)}
        if ids is None:
            order = [position[i] for i in sorted(all_ids)]
        else:
            missing = [i for i in ids if i not in position]
            if missing:
                raise StoreError(f"{len(missing)} ids not in {self.root}, e.g. {missing[:3]}")
            order = [position[i] for i in ids]
        table = table.take(pa.array(order, type=pa.int64()))
        layers = _flat_list_to_numpy(table.column("layers")).reshape(len(order), n_layers, dim)
        data = StoreData(
            ids=table.column("id").to_pylist(),
            paths=table.column("path").to_pylist(),
            layers=layers,
            duration_s=table.column("duration_s").to_numpy().astype(np.float64),
            spec=spec,
            manifest=self.manifest(),
        )
        if with_segments:
            data.segments = [
                np.asarray(v, dtype=np.float32).reshape(-1, n_layers, dim)
                for v in table.column("segments").to_pylist()
            ]
            data.segment_weights = [
                np.asarray(v, dtype=np.float32) for v in table.column("segment_weights").to_pylist()
            ]
        return data

    # ---- the spec kept in the shards ------------------------------------------------------
    def _readable_manifest(self) -> dict[str, Any]:
        try:
            return self.manifest() if self.manifest_path.exists() else {}
        except StoreError:
            return {}

    def _spec_from_shards(self) -> EmbeddingSpec:
        """The one spec every shard carries; StoreError when they disagree or carry none."""
        specs = {shard: shard_spec(shard) for shard in self.shards()}
        if not specs:
            raise StoreError(f"{self.root} holds no shards to read an embedding spec from")
        legacy = [shard.name for shard, spec in specs.items() if spec is None]
        if legacy:
            raise StoreError(
                f"cannot rebuild the spec of {self.root}: {len(legacy)} shard(s) (e.g. {legacy[0]}) "
                "were written before shards recorded their embedding spec; re-embed into a new folder"
            )
        (first, spec), *rest = specs.items()
        for shard, other in rest:
            if other.store_key() != spec.store_key():
                raise StoreError(
                    f"the shards of {self.root} disagree: {first.name} vs {shard.name} "
                    f"({_differences(spec, other)}); move one of them to its own store"
                )
        return spec


def shard_spec(path: str | Path) -> EmbeddingSpec | None:
    """The EmbeddingSpec a shard carries in its schema metadata (None: an older shard)."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) on junk
        raise _unreadable(Path(path), exc) from None
    text = metadata.get(SHARD_SPEC_KEY)
    if text is None:
        return None
    try:
        return EmbeddingSpec.from_json(text)
    except (ConfigError, TypeError, ValueError) as exc:
        raise StoreError(f"shard {path} carries an unreadable embedding spec: {exc}") from exc


def repair_manifest(root: str | Path) -> EmbeddingSpec:
    """Rebuild ``manifest.json`` from the spec the shards carry; returns that spec.

    Raises StoreError (one line) when there are no shards, when shards disagree, or when
    some shards predate spec metadata (their settings are unknowable). Informational keys
    of a readable old manifest (``created``, ``last_run``) are kept.
    """
    store = EmbeddingStore(root)
    if not store.root.is_dir():
        raise StoreError(f"{store.root} is not a folder")
    spec = store._spec_from_shards()
    info = {k: v for k, v in store._readable_manifest().items() if k not in _SPEC_KEYS}
    info.setdefault("created", _now())
    atomic_write_json(store.manifest_path, manifest_for(spec, **info, repaired=_now()))
    log.info("rebuilt %s from %d shards", store.manifest_path, len(store.shards()))
    return spec


def _differences(a: EmbeddingSpec, b: EmbeddingSpec) -> str:
    return "; ".join(a.differences(b)) or f"store key {a.store_key()} vs {b.store_key()}"


def _columns(songs: list[SongEmbedding]) -> dict[str, Any]:
    import pyarrow as pa

    def floats(arrays: list[np.ndarray]) -> pa.Array:
        return pa.array(
            [np.asarray(a, dtype=np.float32).ravel() for a in arrays], type=pa.list_(pa.float32())
        )

    columns: dict[str, Any] = {
        "id": pa.array([s.id for s in songs], type=pa.string()),
        "path": pa.array([s.path for s in songs], type=pa.string()),
        "sha256": pa.array([s.sha256 for s in songs], type=pa.string()),
        "duration_s": pa.array([float(s.duration_s) for s in songs], type=pa.float64()),
        "n_segments": pa.array([s.n_segments for s in songs], type=pa.int32()),
        "layers": floats([s.layers for s in songs]),
        "segments": floats([s.segments for s in songs]),
        "segment_weights": floats([s.segment_weights for s in songs]),
        "size": pa.array([s.size for s in songs], type=pa.int64()),
        "mtime_ns": pa.array([s.mtime_ns for s in songs], type=pa.int64()),
    }
    extra_keys = sorted({k for s in songs for k in s.extras})
    for key in extra_keys:
        columns[f"extra_{key}"] = floats([np.asarray(s.extras.get(key, []), np.float32) for s in songs])
    return columns


def _flat_list_to_numpy(column: Any) -> np.ndarray:
    chunks = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in column.chunks]
    return np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)


def _conform(table: Any, schema: Any) -> Any:
    """``table`` with the columns of ``schema`` it lacks added as nulls (older shards)."""
    import pyarrow as pa

    for name in schema.names:
        if name not in table.column_names:
            table = table.append_column(schema.field(name), pa.nulls(table.num_rows, schema.field(name).type))
    return table


def _unreadable(shard: Path, exc: BaseException) -> StoreError:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return StoreError(
        f"shard {shard} is corrupt or truncated ({detail}); `apexmusic store repair {shard.parent}` "
        "moves it to quarantine/ and `embed --resume` embeds its songs again"
    )

"""The embedding store: a folder of Parquet shards, ``manifest.json`` and ``failures.jsonl``.

One row per song (DESIGN.md): ``id``, ``path``, ``sha256``, ``duration_s``, ``n_segments``,
``layers`` (song-level per-layer vectors, ``[n_layers, dim]`` flattened), ``segments``
(per-segment per-layer vectors, ``[n_segments, n_layers, dim]`` flattened) and
``segment_weights`` (the weight of each segment in the song mean: its valid seconds, or 1 for
the reference pipeline's plain mean). Shapes live in the manifest.

Writes are atomic (temporary file, then rename), so an interrupted job leaves only whole
shards behind and ``--resume`` can trust every row it finds. This module is the only code
that knows the on-disk layout; the embedding engines (local and Ray) write through it and
training, evaluation and prediction read through it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from apexmusic.errors import StoreError

log = logging.getLogger(__name__)

STORE_FORMAT = 1
MANIFEST = "manifest.json"
FAILURES = "failures.jsonl"
SHARD_GLOB = "shard-*.parquet"

# Manifest keys that change the vectors: a store may only be resumed or appended to with the
# same values. Everything else in the manifest is informational.
VECTOR_KEYS = (
    "encoder",
    "weights",
    "n_layers",
    "dim",
    "sample_rate",
    "segment_seconds",
    "hop_seconds",
    "compat",
    "encoder_settings",
)


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


@dataclass
class StoreData:
    """A store loaded into memory for training, evaluation or scoring."""

    ids: list[str]
    paths: list[str]
    layers: np.ndarray  # float32 [n_songs, n_layers, dim]
    duration_s: np.ndarray  # float64 [n_songs]
    manifest: dict[str, Any]
    segments: list[np.ndarray] | None = None  # per song [n_segments, n_layers, dim]
    segment_weights: list[np.ndarray] | None = None

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
            manifest=self.manifest,
            segments=pick(self.segments) if self.segments is not None else None,
            segment_weights=(pick(self.segment_weights) if self.segment_weights is not None else None),
        )


def config_hash(manifest: dict[str, Any]) -> str:
    """A short hash of the manifest values that change the vectors."""
    payload = json.dumps({k: manifest.get(k) for k in VECTOR_KEYS}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class EmbeddingStore:
    """Read and write one embedding store folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ---- creation -----------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, manifest: dict[str, Any], resume: bool = False) -> EmbeddingStore:
        """Open ``root`` for writing with ``manifest``.

        A new folder is initialised. An existing store is reused only when ``resume`` is set
        and its vector settings match; anything else raises StoreError rather than mixing
        incompatible vectors in one store.
        """
        store = cls(root)
        store.root.mkdir(parents=True, exist_ok=True)
        manifest = {**manifest, "format": STORE_FORMAT}
        manifest["config_hash"] = config_hash(manifest)
        if store.manifest_path.exists():
            existing = store.manifest()
            if existing.get("config_hash") != manifest["config_hash"]:
                raise StoreError(
                    f"{store.root} holds embeddings made with other settings "
                    f"(config hash {existing.get('config_hash')} != {manifest['config_hash']}); "
                    "use a new --out folder"
                )
            if not resume and store.has_rows():
                raise StoreError(f"{store.root} already holds embeddings; pass --resume to continue")
            return store
        _atomic_write_text(store.manifest_path, json.dumps(manifest, indent=2, sort_keys=True))
        return store

    @classmethod
    def open(cls, root: str | Path) -> EmbeddingStore:
        store = cls(root)
        if not store.manifest_path.exists():
            raise StoreError(f"{store.root} is not an embedding store (no {MANIFEST})")
        return store

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

    def update_manifest(self, **info: Any) -> None:
        """Record informational keys (timings, counts); vector settings cannot change."""
        manifest = self.manifest()
        for key in info:
            if key in VECTOR_KEYS:
                raise StoreError(f"manifest key {key!r} defines the vectors and cannot change")
        manifest.update(info)
        _atomic_write_text(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True))

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
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(_columns(songs))
        name = f"shard-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
        final = self.root / name
        tmp = self.root / f".{name}.tmp"
        pq.write_table(table, tmp)
        _fsync(tmp)
        os.replace(tmp, final)
        log.debug("wrote %d songs to %s", len(songs), final)
        return final

    def record_failure(self, failure: Failure) -> None:
        with self.failures_path.open("a", encoding="utf-8") as f:
            f.write(failure.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())

    # ---- reading -----------------------------------------------------------------------
    def done_ids(self) -> set[str]:
        import pyarrow.parquet as pq

        ids: set[str] = set()
        for shard in self.shards():
            ids.update(pq.read_table(shard, columns=["id"]).column("id").to_pylist())
        return ids

    def failures(self) -> list[dict[str, Any]]:
        if not self.failures_path.exists():
            return []
        with self.failures_path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def iter_rows(self, columns: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """Rows as dicts, shard by shard (bounded memory for very large stores)."""
        import pyarrow.parquet as pq

        for shard in self.shards():
            yield from pq.read_table(shard, columns=list(columns) if columns else None).to_pylist()

    def load(self, with_segments: bool = False, ids: Sequence[str] | None = None) -> StoreData:
        """Load song-level vectors (and optionally per-segment ones) into arrays.

        Rows come back in a stable order (sorted by id); ``ids`` restricts and orders them.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        manifest = self.manifest()
        n_layers, dim = int(manifest["n_layers"]), int(manifest["dim"])
        columns = ["id", "path", "duration_s", "layers"]
        if with_segments:
            columns += ["segments", "segment_weights"]
        shards = self.shards()
        if not shards:
            raise StoreError(f"{self.root} holds no embeddings yet")
        table = pa.concat_tables([pq.read_table(s, columns=columns) for s in shards])
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
            manifest=manifest,
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
    }
    extra_keys = sorted({k for s in songs for k in s.extras})
    for key in extra_keys:
        columns[f"extra_{key}"] = floats([np.asarray(s.extras.get(key, []), np.float32) for s in songs])
    return columns


def _flat_list_to_numpy(column: Any) -> np.ndarray:
    chunks = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in column.chunks]
    return np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text, encoding="utf-8")
    _fsync(tmp)
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Checking and mending a store: ``apexmusic store verify`` and ``apexmusic store repair``.

A shard is bad when it cannot be read whole (truncated, zeroed, a page whose checksum fails)
or its rows do not have the shape its spec gives. Bad shards are moved to ``quarantine/``
(kept for inspection, never read again); their songs are no longer in the store, so the next
``embed --resume`` embeds them again. Repair also deletes the temporary files a killed
writer left behind, drops a song stored twice (keeping its newest row) and rebuilds
``manifest.json`` from the shards.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from apexmusic.errors import StoreError
from apexmusic.store.files import fsync_dir
from apexmusic.store.folder import QUARANTINE, EmbeddingStore, repair_manifest, shard_spec
from apexmusic.store.spec import EmbeddingSpec

log = logging.getLogger(__name__)


@dataclass
class BadShard:
    shard: Path
    reason: str


@dataclass
class StoreCheck:
    """What :func:`verify_store` found (and, after :func:`repair_store`, what it did)."""

    root: Path
    n_shards: int = 0
    n_rows: int = 0
    bad: list[BadShard] = field(default_factory=list)
    duplicates: dict[str, list[Path]] = field(default_factory=dict)  # id -> shards holding it
    leftovers: list[Path] = field(default_factory=list)  # temporary files of killed writers
    quarantined: list[Path] = field(default_factory=list)
    spec: EmbeddingSpec | None = None

    @property
    def clean(self) -> bool:
        return not (self.bad or self.duplicates)


def verify_store(root: str | Path) -> StoreCheck:
    """Read every shard of ``root`` in full (checksums verified) and report what is wrong."""
    store = EmbeddingStore(root)
    if not store.root.is_dir():
        raise StoreError(f"{store.root} is not a folder")
    fallback = _manifest_spec(store)
    check = StoreCheck(store.root, leftovers=sorted(store.root.glob(".*.tmp")))
    where: dict[str, list[Path]] = defaultdict(list)
    for shard in store.shards():
        check.n_shards += 1
        try:
            ids = _read_checked(shard, fallback)
        except StoreError as exc:
            check.bad.append(BadShard(shard, str(exc)))
            continue
        check.n_rows += len(ids)
        for song_id in ids:
            where[song_id].append(shard)
    check.duplicates = {i: shards for i, shards in where.items() if len(shards) > 1}
    return check


def quarantine(check: StoreCheck) -> None:
    """Move the bad shards of ``check`` to ``quarantine/`` (the caller holds the writer lock)."""
    if not check.bad:
        return
    target = check.root / QUARANTINE
    target.mkdir(exist_ok=True)
    for bad in check.bad:
        dest = target / bad.shard.name
        try:
            os.replace(bad.shard, dest)
        except OSError as exc:
            raise StoreError(f"cannot move {bad.shard} to {target}: {exc.strerror}") from None
        check.quarantined.append(dest)
        log.warning("quarantined %s: %s", bad.shard.name, bad.reason)
    fsync_dir(target)
    fsync_dir(check.root)


def repair_store(root: str | Path) -> StoreCheck:
    """Quarantine bad shards, delete writers' leftovers, drop duplicate rows and rebuild the
    manifest; holds the writer lock throughout (StoreError while another process writes)."""
    store = EmbeddingStore(root)
    if not store.root.is_dir():
        raise StoreError(f"{store.root} is not a folder")
    store.lock()
    try:
        check = verify_store(root)
        quarantine(check)
        for leftover in check.leftovers:
            leftover.unlink(missing_ok=True)
        if store.shards():
            check.spec = repair_manifest(root)
            _drop_duplicates(EmbeddingStore.open(root), check.duplicates)
        elif store.manifest_path.exists():
            check.spec = store.spec()
        else:
            raise StoreError(f"{store.root} holds no readable shards and no manifest")
    finally:
        store.close()
    return check


def _drop_duplicates(store: EmbeddingStore, duplicates: dict[str, list[Path]]) -> None:
    """Keep each duplicated song's row in the newest shard (names sort by write time)."""
    drop: dict[Path, set[str]] = defaultdict(set)
    for song_id, shards in duplicates.items():
        for shard in sorted(shards)[:-1]:
            drop[shard].add(song_id)
    for shard, ids in drop.items():
        store.replace_rows(shard, ids)
        log.warning("dropped %d duplicate rows from %s", len(ids), shard.name)


def _manifest_spec(store: EmbeddingStore) -> EmbeddingSpec | None:
    try:
        return store.spec() if store.manifest_path.exists() else None
    except StoreError:
        return None


def _read_checked(shard: Path, fallback: EmbeddingSpec | None) -> list[str]:
    """The ids of a shard read in full; StoreError when it is damaged or misshapen."""
    import pyarrow.parquet as pq

    spec = shard_spec(shard) or fallback
    try:
        table = pq.read_table(shard, page_checksum_verification=True)
    except (OSError, ValueError) as exc:
        raise StoreError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    for column in ("id", "layers", "segments", "n_segments"):
        if column not in table.column_names:
            raise StoreError(f"no {column!r} column")
    if spec is not None:
        import numpy as np
        import pyarrow.compute as pc

        width = spec.n_layers * spec.dim
        layers = pc.list_value_length(table.column("layers")).to_numpy(zero_copy_only=False)
        if table.num_rows and not np.all(layers == width):
            raise StoreError(f"a 'layers' row is not {spec.n_layers}x{spec.dim}")
        counts = table.column("n_segments").to_numpy()
        segments = pc.list_value_length(table.column("segments")).to_numpy(zero_copy_only=False)
        if table.num_rows and not np.all(segments == counts * width):
            raise StoreError("a 'segments' row does not match its n_segments")
    ids = table.column("id").to_pylist()
    if len(set(ids)) != len(ids):
        raise StoreError("a song id appears twice in the shard")
    return ids

"""The embedding store and the contract it owns.

- :mod:`apexmusic.store.spec`: :class:`EmbeddingSpec`, what a vector means, and the one
  compatibility rule every scoring path uses.
- :mod:`apexmusic.store.folder`: :class:`EmbeddingStore`, the folder of Parquet shards (each
  carrying its spec), ``manifest.json`` and ``failures.jsonl``.
- :mod:`apexmusic.store.lock`: :class:`WriterLock`, one writing process per store;
  :mod:`apexmusic.store.files`: atomic replace and fsync of files and folders.
- :mod:`apexmusic.store.check`: :func:`verify_store` and :func:`repair_store` (bad shards to
  ``quarantine/``).
"""

from apexmusic.store.check import StoreCheck, quarantine, repair_store, verify_store
from apexmusic.store.folder import (
    FAILURES,
    MANIFEST,
    QUARANTINE,
    SHARD_GLOB,
    SHARD_SPEC_KEY,
    STORE_FORMAT,
    EmbeddingStore,
    Failure,
    SongEmbedding,
    StoreData,
    StoredRow,
    manifest_for,
    repair_manifest,
    shard_spec,
)
from apexmusic.store.lock import LOCK_FILE, WriterLock
from apexmusic.store.spec import EmbeddingSpec, SpecMismatchError, check_compatible, weights_fingerprint

__all__ = [
    "FAILURES",
    "LOCK_FILE",
    "MANIFEST",
    "QUARANTINE",
    "SHARD_GLOB",
    "SHARD_SPEC_KEY",
    "STORE_FORMAT",
    "EmbeddingSpec",
    "EmbeddingStore",
    "Failure",
    "SongEmbedding",
    "SpecMismatchError",
    "StoreCheck",
    "StoreData",
    "StoredRow",
    "check_compatible",
    "manifest_for",
    "WriterLock",
    "repair_manifest",
    "quarantine",
    "repair_store",
    "shard_spec",
    "verify_store",
    "weights_fingerprint",
]

"""The embedding store and the contract it owns.

- :mod:`apexmusic.store.spec`: :class:`EmbeddingSpec`, what a vector means, and the one
  compatibility rule every scoring path uses.
- :mod:`apexmusic.store.folder`: :class:`EmbeddingStore`, the folder of Parquet shards (each
  carrying its spec), ``manifest.json`` and ``failures.jsonl``.
"""

from apexmusic.store.folder import (
    FAILURES,
    MANIFEST,
    SHARD_GLOB,
    SHARD_SPEC_KEY,
    STORE_FORMAT,
    EmbeddingStore,
    Failure,
    SongEmbedding,
    StoreData,
    manifest_for,
    repair_manifest,
    shard_spec,
)
from apexmusic.store.spec import EmbeddingSpec, SpecMismatchError, check_compatible, weights_fingerprint

__all__ = [
    "FAILURES",
    "MANIFEST",
    "SHARD_GLOB",
    "SHARD_SPEC_KEY",
    "STORE_FORMAT",
    "EmbeddingSpec",
    "EmbeddingStore",
    "Failure",
    "SongEmbedding",
    "SpecMismatchError",
    "StoreData",
    "check_compatible",
    "manifest_for",
    "repair_manifest",
    "shard_spec",
    "weights_fingerprint",
]

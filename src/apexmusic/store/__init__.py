"""The embedding store and the contract it owns.

- :mod:`apexmusic.store.spec`: :class:`EmbeddingSpec`, what a vector means, and the one
  compatibility rule every scoring path uses.
- :mod:`apexmusic.store.folder`: :class:`EmbeddingStore`, the folder of Parquet shards,
  ``manifest.json`` and ``failures.jsonl``.
"""

from apexmusic.store.folder import (
    FAILURES,
    MANIFEST,
    SHARD_GLOB,
    STORE_FORMAT,
    VECTOR_KEYS,
    EmbeddingStore,
    Failure,
    SongEmbedding,
    StoreData,
    config_hash,
)
from apexmusic.store.spec import EmbeddingSpec, SpecMismatchError, check_compatible, weights_fingerprint

__all__ = [
    "FAILURES",
    "MANIFEST",
    "SHARD_GLOB",
    "STORE_FORMAT",
    "VECTOR_KEYS",
    "EmbeddingSpec",
    "EmbeddingStore",
    "Failure",
    "SongEmbedding",
    "SpecMismatchError",
    "StoreData",
    "check_compatible",
    "config_hash",
    "weights_fingerprint",
]

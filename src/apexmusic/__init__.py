"""apexmusic: predict how an AI-generated song will do and how it sounds, from audio alone.

The public API, importable from here::

    from apexmusic import Predictor, ScoringModel, ModelDir, EmbeddingStore, EmbeddingSpec, load_encoder

Heavy dependencies (torch, transformers, ray, fastapi) are imported where they are used, so
``import apexmusic`` stays fast: the names above load their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from apexmusic.tasks import AESTHETIC_TASKS, ALL_TASKS, POPULARITY_TASKS, TASKS

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first access)
_LAZY = {
    "Predictor": "apexmusic.predict",
    "Prediction": "apexmusic.predict",
    "predict_inputs": "apexmusic.predict",
    "score_store": "apexmusic.predict",
    "ScoringModel": "apexmusic.model",
    "ModelDir": "apexmusic.model",
    "score_songs": "apexmusic.model",
    "import_reference_checkpoint": "apexmusic.model",
    "EmbeddingStore": "apexmusic.store",
    "EmbeddingSpec": "apexmusic.store",
    "check_compatible": "apexmusic.store",
    "load_encoder": "apexmusic.encoders",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'apexmusic' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["AESTHETIC_TASKS", "ALL_TASKS", "POPULARITY_TASKS", "TASKS", "__version__", *_LAZY]

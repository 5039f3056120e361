"""Input normalisation a checkpoint asks for in its ``preprocessor_config.json``.

Published speech/music checkpoints pair their weights with a ``Wav2Vec2FeatureExtractor``
config. When it says ``do_normalize: true``, every input row is shifted to zero mean and scaled
to unit variance (``(x - mean) / sqrt(var + 1e-7)``) over its valid samples, and the padding
after them is set to 0. MERT-v1 ships ``do_normalize: false``; a fine-tuned or re-published
checkpoint may not, and its embeddings are only right with the setting it was trained with.

A folder without ``preprocessor_config.json`` is read as "no normalisation" (the published
pipeline could not load such a folder at all); a file without the key means ``true``, the
feature extractor's own default.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from apexmusic.errors import ModelLoadError

PREPROCESSOR_FILE = "preprocessor_config.json"
_EPS = 1e-7


def read_do_normalize(folder: str | Path) -> bool:
    """The ``do_normalize`` setting of a checkpoint folder (False when it has no preprocessor file)."""
    path = Path(folder) / PREPROCESSOR_FILE
    if not path.is_file():
        return False
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: unreadable preprocessor config ({exc})") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    value = config.get("do_normalize", True)
    if not isinstance(value, bool):
        raise ModelLoadError(f"{path}: do_normalize must be true or false, got {value!r}")
    return value


def normalise_rows(segments: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per row over its first ``lengths[i]`` samples; the rest set to 0."""
    out = np.zeros_like(segments, dtype=np.float32)
    for i, n in enumerate(np.asarray(lengths, dtype=np.int64)):
        row = segments[i].astype(np.float32, copy=False)
        valid = row[:n]
        out[i, :n] = (valid - valid.mean()) / np.sqrt(valid.var() + _EPS)
    return out


__all__ = ["PREPROCESSOR_FILE", "normalise_rows", "read_do_normalize"]

"""The encoder protocol every audio encoder implements.

An encoder turns a batch of mono segments into per-layer, time-pooled vectors. Pooling only
covers each segment's valid samples, so padding never enters a mean (the reference
pipeline's zero-padding defect) unless an encoder is asked to reproduce it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Encoder(Protocol):
    """What the embedding pipeline needs from an encoder."""

    name: str  # registry name, e.g. "mert-v1-95m"
    sample_rate: int  # Hz of the mono input it expects
    n_layers: int  # number of pooled layers returned (13 for MERT-95M, 1 for handcrafted)
    dim: int  # vector size per layer
    weights_id: str  # where the weights came from ("random", a hub id, a folder, "none")

    def encode(self, segments: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Pool a batch of segments.

        Args:
            segments: float32 ``[batch, samples]`` mono audio at ``sample_rate``; rows shorter
                than ``samples`` are zero-padded at the end.
            lengths: int ``[batch]`` valid samples per row (1 <= length <= samples).

        Returns:
            float32 ``[batch, n_layers, dim]``, each row pooled over its valid part only.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """Settings that change the vectors (recorded in the store manifest and config hash)."""
        ...

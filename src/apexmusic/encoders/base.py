"""The encoder protocol every audio encoder implements, and a base class with its defaults.

An encoder turns a batch of mono segments into per-layer, time-pooled vectors. Pooling only
covers each segment's valid samples, so padding never enters a mean (the reference
pipeline's zero-padding defect) unless an encoder is asked to reproduce it.

The pipeline reads every attribute below and nothing else; :class:`EncoderBase` gives the
optional ones their defaults, so an encoder states only what differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Encoder(Protocol):
    """What the embedding pipeline, the predictor and the store need from an encoder."""

    name: str  # registry name, e.g. "mert-v1-95m"
    sample_rate: int  # Hz of the mono input it expects
    n_layers: int  # number of pooled layers returned (13 for MERT-95M, 1 for handcrafted)
    dim: int  # vector size per layer
    weights_id: str  # where the weights came from ("random", a hub id, a folder, "none")
    fingerprint: str | None  # what the weights are ("sha256:..."); None: no weights or unknown
    precision: str  # the arithmetic it runs in: "fp32", "bf16", "fp16"
    default_batch_size: int  # segments per encode() call when the run does not say
    encode_in_decoder: bool  # light enough to run inside each decoder process
    labels: Mapping[str, Sequence[str]]  # names of the values in each extras() entry

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

    def extras(self, segments: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
        """Per-segment side outputs (e.g. tag probabilities ``{"tags": [batch, n]}``), or {}."""
        ...

    def describe(self) -> dict[str, Any]:
        """Settings that change the vectors (recorded in the embedding spec)."""
        ...


class EncoderBase:
    """Defaults for the protocol's optional attributes; encoders override what differs."""

    fingerprint: str | None = None
    precision: str = "fp32"
    default_batch_size: int = 8
    encode_in_decoder: bool = False
    labels: Mapping[str, Sequence[str]] = MappingProxyType({})

    def extras(self, segments: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
        return {}

"""The fixed pieces of the published (reference) APEX pipeline.

The reference takes, per 30 s segment (the last one zero-padded), the time-mean of MERT
hidden states ``REFERENCE_LAYERS``, mixes the four vectors with a ``Conv1d(4, 1, kernel_size=1)``
that is never trained (its weights are PyTorch's default initialisation right after
``torch.manual_seed(42)``), then averages the segment vectors into one song vector.

The mix is linear, so applying it to the mean over segments of the per-layer means (what
the embedding store keeps) gives the same song vector as applying it per segment and then
averaging: ``reference_vector`` works at either level.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

REFERENCE_LAYERS: tuple[int, ...] = (2, 5, 8, 12)
REFERENCE_SEED = 42


@lru_cache(maxsize=1)
def _conv_parameters() -> tuple[np.ndarray, float]:
    import torch

    # Build exactly what the reference builds, without disturbing the caller's RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(REFERENCE_SEED)
        conv = torch.nn.Conv1d(len(REFERENCE_LAYERS), 1, kernel_size=1)
    weight = conv.weight.detach().reshape(-1).numpy().astype(np.float32)
    bias = float(conv.bias.detach().reshape(()).item())
    return weight, bias


def reference_conv_weights() -> tuple[np.ndarray, float]:
    """The reference's untrained ``Conv1d(4, 1, kernel_size=1)``: ``(weight [4], bias)``."""
    weight, bias = _conv_parameters()
    return weight.copy(), bias


def reference_vector(layers: np.ndarray) -> np.ndarray:
    """Mix per-layer vectors ``[..., n_layers >= 13, dim]`` into the reference ``[..., dim]`` vector."""
    layers = np.asarray(layers, dtype=np.float32)
    if layers.ndim < 2 or layers.shape[-2] <= max(REFERENCE_LAYERS):
        raise ValueError(
            f"reference_vector needs [..., >= {max(REFERENCE_LAYERS) + 1}, dim] layers, got {layers.shape}"
        )
    weight, bias = _conv_parameters()
    picked = layers[..., list(REFERENCE_LAYERS), :]  # [..., 4, dim]
    return np.einsum("...ld,l->...d", picked, weight).astype(np.float32) + np.float32(bias)


__all__ = ["REFERENCE_LAYERS", "reference_conv_weights", "reference_vector"]

"""MERT-v1 encoders, built straight from the published config and weights -- no remote code.

MERT-v1 is a HuBERT-style model: a 7-layer conv feature extractor (strides 5,2,2,2,2,2,2,
kernels 10,3,3,3,3,2,2, 512 channels; 320 samples per frame, 75 frames/s at 24 kHz) and a
transformer (95M: 12 x 768, post-norm, group-norm extractor; 330M: 24 x 1024, stable layer
norm, layer-norm extractor). The published checkpoints ship remote code (``MERTModel``); with
the options MERT-v1 uses (no CQT input, no deepnorm) that code *is* transformers'
HubertModel. ``mert_weights`` reads the published ``config.json`` and weights (memory-mapped)
into HubertModel parameter names, checking every key and shape; the fast path
(``mert_fast``) computes from that dict without importing transformers or building a model.
``build_model`` loads the same dict into a real HubertModel: the fp32 oracle of the tests and
what ``fast=False`` runs.

Weights (``weights=``): a published-layout folder, a single weights file (built-in
architecture), a hub id such as ``m-a-p/MERT-v1-95M`` (the default; config and weight files
only, never code; offline this raises ModelLoadError with the way out), or ``"random"``
(seeded, timing and tests only; logged as a WARNING and recorded as ``weights_id="random"``).

Output: all 13 (95M) or 25 (330M) hidden states, index 0 = before the first transformer
layer, each time-averaged over the segment's valid frames (frames whose receptive field lies
in the valid samples; the count follows from the conv arithmetic). For the 330M the last
state is the final-layer-normed one, as in the transformers 4.x code MERT was published with.

Precision: ``fp32`` (exact), ``bf16``, ``fp16`` (CUDA), ``int8`` (CPU: int8 GEMMs for the last
three front-end convs and every linear, weights per output channel, activations per token; attention, norms
and pooling in bf16 where the CPU has it, else fp32; see ``mert_int8``).

Options (``**opts``): ``compat="reference"`` (rows pooled over all frames of the zero-padded
segment, as the published pipeline does; at the precision asked for, ``auto`` never int8),
``fast=True`` (the matmul path of ``mert_fast``; ``False`` runs HubertModel itself, one
segment per forward),
``batch_seconds`` (audio per forward; default 30 s on CPU, 1920 s on CUDA), ``batch_size``
(segments per forward, overrides ``batch_seconds``), ``compile`` / ``compile_backend`` /
``compile_mode`` (``torch.compile`` the transformer, off by default), ``seed`` (random init).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from apexmusic import devices
from apexmusic.devices import resolve_device, resolve_precision, torch_dtype
from apexmusic.encoders.base import EncoderBase
from apexmusic.encoders.fingerprint import loaded_fingerprint
from apexmusic.encoders.input_norm import normalise_rows
from apexmusic.encoders.mert_weights import (
    MERT_V1_95M,
    MERT_V1_330M,
    SAMPLE_RATE,
    MertArch,
    arch_fields,
    load_folder,
    load_weights,
    map_mert_state_dict,
    parameter_shapes,
    random_state,
)
from apexmusic.errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- the fp32 oracle
def build_model(arch: MertArch, state: Mapping[str, Any] | None = None, seed: int = 0):
    """transformers' HubertModel in eval mode with ``state`` (HubertModel names, as
    ``load_weights`` returns them) or ``random_state(arch, seed)``: the fp32 oracle of the fast
    path, and the model ``fast=False`` runs. Imports transformers."""
    from transformers import HubertModel

    with _no_init_weights():
        model = HubertModel(arch.hubert_config())
    try:
        model.load_state_dict(dict(random_state(arch, seed) if state is None else state), strict=True)
    except RuntimeError as exc:  # shape mismatches
        raise ModelLoadError(f"weights do not fit the MERT architecture: {exc}") from None
    return model.eval().requires_grad_(False)


def _no_init_weights():
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


# ---------------------------------------------------------------------------- the encoder
class MertEncoder(EncoderBase):
    """A MERT model behind the apexmusic encoder protocol (see ``encoders/base.py``)."""

    def __init__(
        self,
        weights: Any,
        arch: MertArch,
        weights_id: str,
        device: str = "auto",
        precision: str = "auto",
        compat: str | None = None,
        fast: bool = True,
        batch_seconds: float | None = None,
        batch_size: int | None = None,
        compile: bool = False,
        compile_backend: str = "inductor",
        compile_mode: str | None = None,
    ) -> None:
        import torch

        from apexmusic.encoders.mert_fast import FastMert, receptive_field

        if compat not in (None, "reference"):
            raise ConfigError(f"unknown compat mode {compat!r}; the only one is 'reference'")
        self.name = arch.name
        self.arch = arch
        self.weights_id = weights_id
        self.do_normalize = bool(arch.extra.get("do_normalize", False))
        self.sample_rate = int(arch.extra.get("sample_rate", SAMPLE_RATE))
        self.n_layers = arch.num_hidden_layers + 1
        self.dim = arch.hidden_size
        self.compat = compat
        self.device = resolve_device(device)
        # Compat fixes what is computed, not the arithmetic: it runs at the precision asked for.
        # ``auto`` never picks int8 for it (int8 is not checked against the published scores).
        self.precision = resolve_precision(
            precision, self.device, int8=fast and (compat is None or precision == "int8")
        )
        self.fast = fast
        self.min_samples = receptive_field(arch.conv_kernel, arch.conv_stride)
        # A batch is trimmed to its longest row (so a lone row needs no attention mask), rounded
        # up to 5 s when compiled so that few distinct shapes reach torch.compile / CUDA graphs.
        self.width_quantum = 5 * self.sample_rate if compile else 1
        on_gpu = self.device.startswith("cuda")
        # CPU: one 30 s segment per forward already gives 2249-row matmuls; more only costs memory.
        self.batch_samples = int((batch_seconds or (1920.0 if on_gpu else 30.0)) * self.sample_rate)
        self.batch_size = batch_size
        # segments of 30 s the embedding pipeline should hand over per encode() call
        self.default_batch_size = batch_size or max(1, self.batch_samples // (30 * self.sample_rate))
        # ``weights``: a state dict under HubertModel names, or a HubertModel (tests, the oracle).
        is_model = not isinstance(weights, Mapping)
        state = weights.state_dict() if is_model else weights
        self.n_parameters = sum(int(t.numel()) for t in state.values())
        self.model = None
        if not fast:
            self.model = (weights if is_model else build_model(arch, state)).to(self.device)
        self._engine = None
        if fast:
            self._engine = FastMert(
                state,
                arch,
                dtype=self.compute_dtype,
                device=self.device,
                compile=compile,
                compile_backend=compile_backend,
                compile_mode=compile_mode,
                int8=self.precision == "int8",
            )
        self._torch = torch
        self.stages: dict[str, float] | None = None  # set to {} to collect per-stage seconds

    @property
    def compute_dtype(self) -> Any:
        """The dtype of everything but the int8 GEMMs: the precision's, bf16 under int8 where
        the CPU runs bf16 natively, else float32."""
        import torch

        if self.precision == "int8":
            return torch.bfloat16 if devices.cpu_has_fast_bf16() else torch.float32
        return torch_dtype(self.precision)

    # -- protocol ------------------------------------------------------------------------------
    def encode(self, segments: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        segments = np.asarray(segments, dtype=np.float32)
        if segments.ndim != 2:
            raise ValueError(f"segments must be [batch, samples], got {segments.shape}")
        lengths = self._effective_lengths(segments, lengths)
        if self.do_normalize:
            segments = normalise_rows(segments, np.minimum(lengths, segments.shape[1]))
        if segments.shape[1] < self.min_samples:  # shorter than one receptive field: pad
            segments = np.pad(segments, ((0, 0), (0, self.min_samples - segments.shape[1])))
        out = np.empty((segments.shape[0], self.n_layers, self.dim), dtype=np.float32)
        for rows in self._batches(lengths):
            quantum = self.width_quantum
            width = min(segments.shape[1], -(-int(lengths[rows].max()) // quantum) * quantum)
            out[rows] = self._pooled(segments[rows, :width], lengths[rows])
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "encoder": self.name,
            "weights": self.weights_id,
            # Unchanged since stores were first written (it is part of the store's vector keys):
            # the fast path computes HubertModel's function from HubertModel's parameters.
            "implementation": "transformers.HubertModel" + (" + apexmusic fast path" if self.fast else ""),
            "precision": self.precision,
            "compat": self.compat,
            "pooling": "all frames of the zero-padded segment" if self.compat else "valid frames only",
            "hidden_states": self.n_layers,
            "sample_rate": self.sample_rate,
            "architecture": arch_fields(self.arch),
            "do_normalize": self.do_normalize,
        }

    # -- internals ----------------------------------------------------------------------------
    def _effective_lengths(self, segments: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        total = segments.shape[1]
        if self.compat == "reference":  # the reference pools over the padded segment
            lengths = np.full(segments.shape[0], total)
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.shape != (segments.shape[0],) or (lengths < 1).any() or (lengths > total).any():
            raise ValueError(f"lengths must be [batch] in 1..{total}, got {lengths!r}")
        # A row shorter than one receptive field is zero-padded to one frame (counted as valid).
        return np.maximum(lengths, self.min_samples)

    def _batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Rows grouped longest first, each group within the audio budget of one forward."""
        order = np.argsort(-lengths, kind="stable")
        if not self.fast:
            return [order[i : i + 1] for i in range(len(order))]
        groups, current, width = [], [], 0
        for row in order:
            width = width or int(lengths[row])  # the first (longest) row sets the padded width
            limit = self.batch_size or max(1, self.batch_samples // width)
            if len(current) >= limit:
                groups.append(np.array(current))
                current, width = [], int(lengths[row])
            current.append(row)
        if current:
            groups.append(np.array(current))
        return groups

    def _pooled(self, audio: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(audio))
        n = torch.from_numpy(lengths)
        if self.device.startswith("cuda"):
            x = x.pin_memory().to(self.device, non_blocking=True)
        if self._engine is not None:
            pooled = self._engine.pooled(x, n, stages=self.stages)
            return pooled.cpu().numpy()
        return plain_pooled(self.model, x, n, dtype=self.compute_dtype)


def plain_pooled(model: Any, audio: Any, lengths: Any, dtype: Any = None) -> np.ndarray:
    """HubertModel itself, one row per forward on its first ``lengths[i]`` samples, time-mean of
    every hidden state. The fidelity reference for the fast path (and ``fast=False``)."""
    import torch

    dtype = dtype or torch.float32
    rows = []
    with (
        torch.inference_mode(),
        torch.autocast(audio.device.type, dtype=dtype, enabled=dtype != torch.float32),
    ):
        for i in range(audio.shape[0]):
            out = model(audio[i : i + 1, : int(lengths[i])], output_hidden_states=True)
            states = list(out.hidden_states)
            if model.config.do_stable_layer_norm:  # MERT's convention: last state layer-normed
                states[-1] = out.last_hidden_state
            rows.append(torch.stack([s[0].float().mean(0) for s in states]))
    return torch.stack(rows).cpu().numpy()


def load_mert(arch: MertArch, weights: str | None, device: str, precision: str, **opts: Any) -> MertEncoder:
    """A MERT encoder of architecture ``arch`` with its weights' content fingerprint."""
    seed = int(opts.pop("seed", 0))
    state, loaded, weights_id = load_weights(weights, arch, seed=seed)
    encoder = MertEncoder(state, loaded, weights_id, device=device, precision=precision, **opts)
    encoder.fingerprint = loaded_fingerprint(state, weights_id, loaded.name, seed)
    return encoder


def load_95m(
    weights: str | None = None, device: str = "auto", precision: str = "auto", **opts: Any
) -> MertEncoder:
    """MERT-v1-95M: 13 hidden states x 768."""
    return load_mert(MERT_V1_95M, weights, device, precision, **opts)


def load_330m(
    weights: str | None = None, device: str = "auto", precision: str = "auto", **opts: Any
) -> MertEncoder:
    """MERT-v1-330M: 25 hidden states x 1024."""
    return load_mert(MERT_V1_330M, weights, device, precision, **opts)


__all__ = [
    "MERT_V1_330M",
    "MERT_V1_95M",
    "SAMPLE_RATE",
    "MertArch",
    "MertEncoder",
    "arch_fields",
    "build_model",
    "load_330m",
    "load_mert",
    "load_95m",
    "load_folder",
    "load_weights",
    "map_mert_state_dict",
    "parameter_shapes",
    "plain_pooled",
    "random_state",
]

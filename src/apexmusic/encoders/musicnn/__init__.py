"""musicnn (Pons & Serra, 2019) ported to PyTorch, with its original weights read without TensorFlow.

The published PyPI wheel ``musicnn==0.1.0`` (ISC licence) ships TensorFlow-1 checkpoints of
``MSD_musicnn`` (Million Song Dataset, 50 tags) and ``MTT_musicnn`` (MagnaTagATune, 50 tags).
Its code no longer runs (TensorFlow 1, numpy < 1.17, and a float16 log-mel that overflows under
numpy 2), so this module re-implements it:

- input: 16 kHz mono → power STFT (n_fft 512, hop 256, periodic Hann, centred, zero padded as
  librosa >= 0.10 does) → 96-band Slaney mel filterbank (librosa's default) →
  ``log10(10000·x + 1)`` in float32 → windows of 187 frames (3 s);
- front end: input batch norm, timbral convs (7×38 and 7×67 mel bins, 204 filters each, valid
  in frequency, zero-padded ±3 frames in time) and temporal convs (128/64/32 frames × 1 bin,
  51 filters each, TensorFlow 'same' padding), each ReLU → batch norm → max over frequency;
- mid end: three 7-frame convs of 64 filters with dense (concatenated) and residual connections;
- back end: per-window temporal max and mean of the 753 mid-end features (interleaved as
  TensorFlow's concat-then-flatten does), batch norm, dense 200 + ReLU + batch norm (the
  "penultimate" features), dense 50 → sigmoid tag probabilities.

Batch norms run in inference mode with TensorFlow's epsilon 1e-3 and the moving statistics.

As an :class:`~apexmusic.encoders.base.Encoder`, each segment is cut into 3 s windows, all
windows of a batch of segments go through the network together, and per-window outputs are
averaged. ``encode`` returns ``[B, 3, 753]`` with this layer layout (``layout="stack"``):

- layer 0: the penultimate 200-d features, zero-padded to 753 (dims 200–752 are always 0);
- layer 1: the mid-end features' temporal mean (753);
- layer 2: the mid-end features' temporal max (753).

``layout="concat"`` returns the same numbers as one layer of 1706 = 200 + 753 + 753 instead.
The VGG baselines (``musicnn-msd-vgg``, ``musicnn-mtt-vgg``) return pool5 (256), and the pool4
and pool3 means (128, zero-padded): ``[B, 3, 256]``.
``extras`` returns ``{"tags": [B, 50]}`` window-averaged tag probabilities; ``labels["tags"]``
names them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from apexmusic.devices import resolve_device, resolve_precision, torch_dtype
from apexmusic.encoders.base import EncoderBase
from apexmusic.encoders.fingerprint import cache_root, state_fingerprint
from apexmusic.encoders.musicnn.config import (
    HOP,
    MSD_LABELS,
    MSD_MUSICNN,
    MSD_VGG,
    MTT_LABELS,
    MTT_MUSICNN,
    MTT_VGG,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    WINDOW_FRAMES,
    MusicnnConfig,
)
from apexmusic.encoders.musicnn.mel import (
    LogMel,
    golden_window_starts,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    n_frames,
    segment_window_starts,
)
from apexmusic.encoders.musicnn.network import Musicnn, Vgg, build_model
from apexmusic.encoders.musicnn.weights import download_wheel, load_state, resolve_weights, tf_to_torch_state
from apexmusic.errors import ConfigError


def _resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    # Measured (benchmarks/bench_musicnn.py, docs/musicnn.md): bf16 does not pay for musicnn's
    # small convolutions on CPUs, so `auto` keeps fp32 there and follows apexmusic.devices elsewhere.
    if precision == "auto" and device.type == "cpu":
        return torch.float32
    return torch_dtype(resolve_precision(precision, str(device)))


_PRECISION_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass
class WindowOutputs:
    """Per-window outputs of the original tagging API."""

    tags: np.ndarray  # [W, 50] sigmoid probabilities (the "taggram")
    features: dict[str, np.ndarray]  # musicnn: penultimate [W, 200], mean_pool/max_pool [W, 753]


class MusicnnEncoder(EncoderBase):
    """musicnn as an apexmusic encoder (see the module docstring for the layer layout)."""

    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        config: MusicnnConfig,
        state: dict[str, torch.Tensor] | None,
        weights_id: str,
        device: str = "auto",
        precision: str = "auto",
        layout: str = "stack",
        window_batch: int = 32,
    ):
        if layout not in ("stack", "concat"):
            raise ConfigError(f"musicnn layout must be 'stack' or 'concat', not {layout!r}")
        self.config = config
        self.name = config.name
        self.weights_id = weights_id
        self.device = torch.device(resolve_device(device))
        self.dtype = _resolve_precision(precision, self.device)
        self.precision = _PRECISION_NAMES[self.dtype]
        self.layout = layout
        self.window_batch = max(1, int(window_batch))
        dims = config.layer_dims
        self.n_layers, self.dim = (
            (len(dims), max(dims.values())) if layout == "stack" else (1, sum(dims.values()))
        )
        self.labels = {"tags": list(config.labels)}
        self.model = build_model(config)
        if state is not None:
            load_state(self.model, state)
        self.fingerprint = state_fingerprint(self.model.state_dict())
        self.model.eval().to(self.device)
        self.log_mel = LogMel().to(self.device)
        self._last: tuple[bytes, dict[str, np.ndarray]] | None = None

    # -- network over windows

    @torch.inference_mode()
    def _run_windows(self, mel: torch.Tensor) -> dict[str, np.ndarray]:
        """Run ``[W, frames, 96]`` windows in chunks; float32 numpy outputs per window."""
        outputs: dict[str, list[torch.Tensor]] = {}
        autocast = self.dtype != torch.float32
        for start in range(0, mel.shape[0], self.window_batch):
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
                out = self.model(mel[start : start + self.window_batch])
            out["tags"] = torch.sigmoid(out.pop("logits").float())
            for key, value in out.items():
                outputs.setdefault(key, []).append(value.float().cpu())
        return {key: torch.cat(values).numpy() for key, values in outputs.items()}

    def tag_audio(self, audio: np.ndarray) -> WindowOutputs:
        """The original ``extractor`` on one whole 16 kHz mono song: 3 s windows, no overlap."""
        with torch.inference_mode():
            mel = self.log_mel(torch.as_tensor(audio, dtype=torch.float32, device=self.device)[None])[0]
        starts = golden_window_starts(mel.shape[0])
        if not starts:
            raise ConfigError(f"musicnn needs at least {WINDOW_FRAMES} frames (3 s), got {mel.shape[0]}")
        out = self._run_windows(torch.stack([mel[s : s + WINDOW_FRAMES] for s in starts]))
        return WindowOutputs(out.pop("tags"), out)

    # -- encoder protocol

    def _segment_outputs(self, segments: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
        """Window-averaged outputs per segment: tags [B, 50] and each layer's features."""
        segments = np.ascontiguousarray(segments, dtype=np.float32)
        lengths = np.asarray(lengths, dtype=np.int64)
        if segments.ndim != 2 or lengths.shape != (segments.shape[0],):
            raise ConfigError(
                f"segments must be [B, T] with lengths [B], got {segments.shape}, {lengths.shape}"
            )
        key = hashlib.blake2b(segments.tobytes() + lengths.tobytes(), digest_size=16).digest()
        if self._last is not None and self._last[0] == key:
            return self._last[1]  # encode() then extras() on the same batch runs the network once
        with torch.inference_mode():
            mel = self.log_mel(torch.from_numpy(segments).to(self.device))  # [B, frames, 96]
        windows, owners, short = [], [], []
        for row, length in enumerate(lengths.tolist()):
            valid = min(n_frames(max(int(length), 1)), mel.shape[1])
            starts = segment_window_starts(valid)
            if not starts:
                short.append((row, valid))
            windows += [mel[row, s : s + WINDOW_FRAMES] for s in starts]
            owners += [row] * len(starts)
        per_window: list[dict[str, np.ndarray]] = []
        if windows:
            per_window.append(self._run_windows(torch.stack(windows)))
        for row, valid in short:
            if self.config.arch == "vgg":  # fixed input size: repeat-pad, as musicnn's training did
                window = mel[row, torch.arange(WINDOW_FRAMES, device=mel.device) % valid][None]
            else:  # fully convolutional: a short segment runs as one short window
                window = mel[row : row + 1, :valid]
            per_window.append(self._run_windows(window))
            owners.append(row)
        stacked = {k: np.concatenate([w[k] for w in per_window]) for k in per_window[0]}
        owner = np.asarray(owners)
        counts = np.bincount(owner, minlength=len(lengths)).astype(np.float32)[:, None]
        result = {}
        for k, v in stacked.items():
            summed = np.zeros((len(lengths), v.shape[1]), dtype=np.float64)
            np.add.at(summed, owner, v)
            result[k] = (summed / counts).astype(np.float32)
        self._last = (key, result)
        return result

    def encode(self, segments: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        out = self._segment_outputs(segments, lengths)
        features = [out[name] for name in self.config.layer_dims]
        if self.layout == "concat":
            return np.concatenate(features, axis=1)[:, None]
        layers = np.zeros((len(lengths), self.n_layers, self.dim), dtype=np.float32)
        for i, feature in enumerate(features):  # shorter layers are zero-padded at the end
            layers[:, i, : feature.shape[1]] = feature
        return layers

    def extras(self, segments: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
        return {"tags": self._segment_outputs(segments, lengths)["tags"]}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "checkpoint": self.config.checkpoint,
            "weights_id": self.weights_id,
            "sample_rate": SAMPLE_RATE,
            "n_fft": N_FFT,
            "hop": HOP,
            "n_mels": N_MELS,
            "window_frames": WINDOW_FRAMES,
            "windows": "non-overlapping; end-aligned extra window when the tail >= half a window",
            "layout": self.layout,
            "layers": list(self.config.layer_dims),
            "n_layers": self.n_layers,
            "dim": self.dim,
            "precision": str(self.dtype).replace("torch.", ""),
        }


def _load(config: MusicnnConfig, weights, device: str, precision: str, **opts: Any) -> MusicnnEncoder:
    unknown = set(opts) - {"layout", "window_batch"}
    if unknown:
        raise ConfigError(f"unknown musicnn options: {', '.join(sorted(unknown))}")
    if weights == "random":
        state, weights_id = None, "random"
    else:
        state, weights_id = resolve_weights(weights, config)
    return MusicnnEncoder(config, state, weights_id, device=device, precision=precision, **opts)


def load_msd(
    weights: str | None = None, device: str = "auto", precision: str = "auto", **opts: Any
) -> MusicnnEncoder:
    """musicnn trained on the Million Song Dataset (50 tags). ``weights``: see :func:`resolve_weights`."""
    return _load(MSD_MUSICNN, weights, device, precision, **opts)


def load_mtt(
    weights: str | None = None, device: str = "auto", precision: str = "auto", **opts: Any
) -> MusicnnEncoder:
    """musicnn trained on MagnaTagATune (50 tags). ``weights``: see :func:`resolve_weights`."""
    return _load(MTT_MUSICNN, weights, device, precision, **opts)


def load_msd_vgg(
    weights: str | None = None, device: str = "auto", precision: str = "auto", **opts: Any
) -> MusicnnEncoder:
    """The VGG baseline trained on the Million Song Dataset: layers pool5 (256), pool4, pool3 (128)."""
    return _load(MSD_VGG, weights, device, precision, **opts)


def load_mtt_vgg(
    weights: str | None = None, device: str = "auto", precision: str = "auto", **opts: Any
) -> MusicnnEncoder:
    """The VGG baseline trained on MagnaTagATune: layers pool5 (256), pool4, pool3 (128)."""
    return _load(MTT_VGG, weights, device, precision, **opts)


__all__ = [
    "HOP",
    "MSD_LABELS",
    "MSD_MUSICNN",
    "MSD_VGG",
    "MTT_LABELS",
    "MTT_MUSICNN",
    "MTT_VGG",
    "N_FFT",
    "N_MELS",
    "SAMPLE_RATE",
    "WINDOW_FRAMES",
    "LogMel",
    "Musicnn",
    "MusicnnConfig",
    "MusicnnEncoder",
    "Vgg",
    "WindowOutputs",
    "build_model",
    "cache_root",
    "download_wheel",
    "golden_window_starts",
    "hz_to_mel",
    "load_msd",
    "load_msd_vgg",
    "load_mtt",
    "load_mtt_vgg",
    "mel_filterbank",
    "mel_to_hz",
    "resolve_weights",
    "segment_window_starts",
    "tf_to_torch_state",
]

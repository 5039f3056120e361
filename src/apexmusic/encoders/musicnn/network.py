"""The musicnn and VGG networks, as the original TensorFlow graphs compute them (inference only)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from apexmusic.encoders.musicnn.config import BN_EPSILON, MSD_MUSICNN, WINDOW_FRAMES, MusicnnConfig
from apexmusic.errors import ConfigError


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

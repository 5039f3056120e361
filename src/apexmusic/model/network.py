"""The APEX multi-task network: the head, input standardisation and layer mixing.

The network is the published one: a shared trunk of Linear → BatchNorm1d → GELU →
Dropout blocks (768→512→256, or 768→512→384→256 with ``shared=3``), then one branch per task
(256→128→64→1, dropout 0.1) with bounded outputs ``low + span·sigmoid`` (sigmoid·100 for the
popularity scores, sigmoid·4+1 for the aesthetics; ranges from :mod:`apexmusic.tasks`).

Two implementations compute the same function:

* :class:`ReferenceHead` is the published layout, one module per task. Its state-dict names
  (``shared.{i}.block.{0,1}``, ``branch_{task}.branch.{0,1}.block.{0,1}``,
  ``branch_{task}.branch.2``) are the checkpoint format we read and write.
* :class:`FusedHead` trains and predicts: the seven branches run as one wide Linear and two
  batched matmuls (``torch.baddbmm``), which removes ~80 small kernels per step. BatchNorm is
  per feature, so one BatchNorm over the concatenated branch features is exactly the seven
  separate ones. :func:`fuse_state_dict` / :func:`unfuse_state_dict` convert between them.

In front of the head, :class:`LayerMixer` turns stored hidden states ``[N, L, D]`` into one
``[N, D]`` vector: ``reference`` (the fixed Conv1d(4→1) mix of the reference pipeline, or the
identity when the store already holds that 768-d compat vector), ``mean`` (plain layer mean)
or ``learned`` (softmax weights over layers, trained jointly with the head).

Input standardisation (fitted on the training split) lives in the same network as buffers:
per layer and dimension before a learned mix, on the mixed vector after a fixed one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from apexmusic import devices
from apexmusic.choices import MIXINGS
from apexmusic.compat import REFERENCE_LAYERS
from apexmusic.errors import ConfigError, ModelLoadError
from apexmusic.tasks import ALL_TASKS, TASKS

log = logging.getLogger(__name__)

TRUNK_DIMS: dict[int, tuple[int, ...]] = {2: (512, 256), 3: (512, 384, 256)}
BRANCH_DIMS: tuple[int, int] = (128, 64)


@dataclass
class HeadConfig:
    """What defines the network's shape; saved in ``config.json``."""

    tasks: tuple[str, ...] = ALL_TASKS
    shared: int = 2
    n_layers: int = 1
    dim: int = 768
    mixing: str = "learned"
    trunk_dropout: float = 0.3
    branch_dropout: float = 0.1
    standardize: bool = True
    # Reference mix over a multi-layer store: which hidden states the fixed conv reads.
    reference_layers: tuple[int, ...] = REFERENCE_LAYERS

    def __post_init__(self) -> None:
        for name in ("shared", "n_layers", "dim"):
            value = getattr(self, name)
            if not isinstance(value, Integral) or isinstance(value, bool):
                raise ConfigError(f"{name} must be an integer, not {value!r}")
            setattr(self, name, int(value))
        for name in ("trunk_dropout", "branch_dropout"):
            value = getattr(self, name)
            if not isinstance(value, Real) or isinstance(value, bool) or not 0 <= value < 1:
                raise ConfigError(f"{name} must be a number in [0, 1), not {value!r}")
        if isinstance(self.tasks, str) or isinstance(self.reference_layers, str):
            raise ConfigError("tasks and reference_layers must be lists")
        self.tasks = tuple(self.tasks)
        if not all(isinstance(i, Integral) and not isinstance(i, bool) for i in self.reference_layers):
            raise ConfigError(f"reference_layers must be integers, not {list(self.reference_layers)!r}")
        self.reference_layers = tuple(int(i) for i in self.reference_layers)
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ConfigError(f"unknown tasks {unknown}; choose from {list(ALL_TASKS)}")
        if self.shared not in TRUNK_DIMS:
            raise ConfigError(f"shared must be one of {sorted(TRUNK_DIMS)}, not {self.shared}")
        if self.mixing not in MIXINGS:
            raise ConfigError(f"mixing must be one of {MIXINGS}, not {self.mixing!r}")
        if self.n_layers < 1 or self.dim < 1:
            raise ConfigError(f"bad input shape n_layers={self.n_layers} dim={self.dim}")
        if self.mixing == "reference" and self.n_layers > 1:
            bad = [i for i in self.reference_layers if not 0 <= i < self.n_layers]
            if bad:
                raise ConfigError(f"reference layers {bad} not in a store of {self.n_layers} layers")

    @property
    def trunk_dims(self) -> tuple[int, ...]:
        return TRUNK_DIMS[self.shared]

    @property
    def normalise_layers(self) -> bool:
        """Standardise each layer before mixing (learned mix) rather than the mixed vector."""
        return self.mixing == "learned" and self.n_layers > 1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


# ---- the published per-head layout ----------------------------------------------------------


class FastDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU masks come from 16-bit random draws (four per RNG call).

    PyTorch's CPU ``bernoulli_`` costs ~6 ns per element, a quarter of a training step of this
    head. Here each element is kept when a uniform 16-bit integer clears ``round(p·65536)``, so
    the drop probability is ``p`` to within 2⁻¹⁶ and the scale is ``1 / (1 - p_effective)``,
    keeping the expectation exact. On CUDA, and in eval mode, it is ``nn.Dropout`` itself.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(x)
        cut = round(self.p * 65536)
        n_words = -(-x.numel() // 4)
        bits = torch.empty(n_words, dtype=torch.int64).random_(-(2**63), None).view(torch.int16)
        keep = bits[: x.numel()].view(x.shape) >= cut - 32768
        return x * (keep.to(x.dtype) * (65536.0 / (65536 - cut)))


class Block(nn.Module):
    """Linear → BatchNorm1d → GELU → Dropout, named ``block.{0,1,2,3}`` as in the reference."""

    def __init__(self, n_in: int, n_out: int, dropout: float, fast_dropout: bool = False):
        super().__init__()
        drop = FastDropout(dropout) if fast_dropout else nn.Dropout(dropout)
        self.block = nn.Sequential(nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.GELU(), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Branch(nn.Module):
    def __init__(self, n_in: int, dropout: float):
        super().__init__()
        a, b = BRANCH_DIMS
        self.branch = nn.Sequential(Block(n_in, a, dropout), Block(a, b, dropout), nn.Linear(b, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x)


def make_trunk(config: HeadConfig, fast_dropout: bool = False) -> nn.Sequential:
    dims = (config.dim, *config.trunk_dims)
    p = config.trunk_dropout
    return nn.Sequential(*[Block(dims[i], dims[i + 1], p, fast_dropout) for i in range(len(dims) - 1)])


class ReferenceHead(nn.Module):
    """The head exactly as published: a trunk and one ``branch_{task}`` module per task.

    ``forward`` returns the raw (pre-sigmoid) outputs ``[N, n_tasks]``.
    """

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.tasks = config.tasks
        self.shared = make_trunk(config)
        for task in config.tasks:
            setattr(self, f"branch_{task}", Branch(config.trunk_dims[-1], config.branch_dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.shared(x)
        return torch.cat([getattr(self, f"branch_{t}")(h) for t in self.tasks], dim=1)


# ---- the fused head used for training and prediction -----------------------------------------


class FusedHead(nn.Module):
    """The same function as :class:`ReferenceHead`, with the branches batched.

    Branch layer 1 of all tasks is one ``Linear(256, T·128)``; layer 2 is a batched matmul over
    ``[T, 128, 64]`` weights (block-diagonal, never materialised); the last layer is a per-task
    dot product. Returns raw outputs ``[N, T]``.
    """

    def __init__(self, config: HeadConfig):
        super().__init__()
        reference = ReferenceHead(config)  # first, so a seed gives the per-head init exactly
        n_tasks, (a, b) = len(config.tasks), BRANCH_DIMS
        n_in = config.trunk_dims[-1]
        self.tasks = config.tasks
        self.shared = make_trunk(config, fast_dropout=True)
        self.w1 = nn.Parameter(torch.empty(n_tasks * a, n_in))
        self.b1 = nn.Parameter(torch.empty(n_tasks * a))
        self.bn1 = nn.BatchNorm1d(n_tasks * a)
        self.w2 = nn.Parameter(torch.empty(n_tasks, b, a))  # per task (out, in) like nn.Linear
        self.b2 = nn.Parameter(torch.empty(n_tasks, b))
        self.bn2 = nn.BatchNorm1d(n_tasks * b)
        self.w3 = nn.Parameter(torch.empty(n_tasks, b))
        self.b3 = nn.Parameter(torch.empty(n_tasks))
        self.act = nn.GELU()
        self.drop1 = FastDropout(config.branch_dropout)
        self.drop2 = FastDropout(config.branch_dropout)
        self.load_published_state_dict(reference.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_tasks, (a, b) = len(self.tasks), BRANCH_DIMS
        h = self.shared(x)
        h = self.drop1(self.act(self.bn1(F.linear(h, self.w1, self.b1))))  # [N, T·a]
        h = h.view(-1, n_tasks, a).transpose(0, 1)  # [T, N, a]
        h = torch.baddbmm(self.b2.unsqueeze(1), h, self.w2.transpose(1, 2))  # [T, N, b]
        h = h.transpose(0, 1).reshape(-1, n_tasks * b)  # [N, T·b]
        h = self.drop2(self.act(self.bn2(h))).view(-1, n_tasks, b)
        return (h * self.w3).sum(-1) + self.b3

    def published_state_dict(self) -> dict[str, torch.Tensor]:
        return unfuse_state_dict(self.state_dict(), self.tasks)

    def load_published_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(fuse_state_dict(state, self.tasks))


_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def fuse_state_dict(state: dict[str, torch.Tensor], tasks: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Published per-head names → :class:`FusedHead` names (exact copies, no arithmetic)."""
    fused = {k: v for k, v in state.items() if k.startswith("shared.")}
    missing = [f"branch_{t}.branch.2.weight" for t in tasks if f"branch_{t}.branch.2.weight" not in state]
    if missing:
        raise ModelLoadError(f"state dict lacks branches: {missing}")

    def cat(suffix: str) -> torch.Tensor:
        return torch.cat([state[f"branch_{t}.{suffix}"] for t in tasks])

    def stack(suffix: str) -> torch.Tensor:
        return torch.stack([state[f"branch_{t}.{suffix}"] for t in tasks])

    fused["w1"], fused["b1"] = cat("branch.0.block.0.weight"), cat("branch.0.block.0.bias")
    fused["w2"], fused["b2"] = stack("branch.1.block.0.weight"), stack("branch.1.block.0.bias")
    fused["w3"] = stack("branch.2.weight")[:, 0, :]
    fused["b3"] = stack("branch.2.bias")[:, 0]
    for i, name in ((0, "bn1"), (1, "bn2")):
        for key in _BN_KEYS:
            fused[f"{name}.{key}"] = cat(f"branch.{i}.block.1.{key}")
        tracked = f"branch_{tasks[0]}.branch.{i}.block.1.num_batches_tracked"
        fused[f"{name}.num_batches_tracked"] = state[tracked]
    return fused


def unfuse_state_dict(fused: dict[str, torch.Tensor], tasks: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """:class:`FusedHead` names → the published per-head names."""
    a, b = BRANCH_DIMS
    state = {k: v.clone() for k, v in fused.items() if k.startswith("shared.")}
    for t_i, task in enumerate(tasks):
        p = f"branch_{task}.branch"
        rows1, rows2 = slice(t_i * a, (t_i + 1) * a), slice(t_i * b, (t_i + 1) * b)
        state[f"{p}.0.block.0.weight"] = fused["w1"][rows1].clone()
        state[f"{p}.0.block.0.bias"] = fused["b1"][rows1].clone()
        state[f"{p}.1.block.0.weight"] = fused["w2"][t_i].clone()
        state[f"{p}.1.block.0.bias"] = fused["b2"][t_i].clone()
        state[f"{p}.2.weight"] = fused["w3"][t_i : t_i + 1].clone()
        state[f"{p}.2.bias"] = fused["b3"][t_i : t_i + 1].clone()
        for i, name, rows in ((0, "bn1", rows1), (1, "bn2", rows2)):
            for key in _BN_KEYS:
                state[f"{p}.{i}.block.1.{key}"] = fused[f"{name}.{key}"][rows].clone()
            state[f"{p}.{i}.block.1.num_batches_tracked"] = fused[f"{name}.num_batches_tracked"].clone()
    return state


# ---- input: standardisation and layer mixing -------------------------------------------------


def reference_mix_weights(n_layers: int, reference_layers: tuple[int, ...]) -> tuple[torch.Tensor, float]:
    """The reference pipeline's fixed Conv1d(4→1) as per-layer weights ``[L]`` and a bias."""
    from apexmusic.compat import reference_conv_weights

    weight, bias = reference_conv_weights()
    weight = torch.as_tensor(np.asarray(weight, dtype=np.float32)).reshape(-1)
    if weight.numel() != len(reference_layers):
        raise ConfigError(f"compat conv has {weight.numel()} inputs, expected {len(reference_layers)}")
    full = torch.zeros(n_layers)
    full[list(reference_layers)] = weight
    return full, float(np.asarray(bias).reshape(-1)[0])


class LayerMixer(nn.Module):
    """``[N, L, D]`` hidden states → ``[N, D]``; ``[N, D]`` inputs pass through unchanged."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.mixing, self.n_layers = config.mixing, config.n_layers
        if config.mixing == "learned":
            self.logits = nn.Parameter(torch.zeros(config.n_layers))
        else:
            if config.mixing == "reference" and config.n_layers > 1:
                weights, bias = reference_mix_weights(config.n_layers, config.reference_layers)
            else:
                weights, bias = torch.full((config.n_layers,), 1.0 / config.n_layers), 0.0
            self.register_buffer("weights", weights)
            self.register_buffer("bias", torch.tensor(bias))

    @property
    def fixed(self) -> bool:
        return self.mixing != "learned"

    def layer_weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, 0) if self.mixing == "learned" else self.weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return x
        if x.shape[1] == 1:
            out = x[:, 0]
        else:
            out = torch.einsum("nld,l->nd", x, self.layer_weights())
        return out + self.bias if self.fixed else out


class ApexNet(nn.Module):
    """Standardise → mix layers → head → bounded outputs ``[N, T]`` in each task's range."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        norm_shape = (config.n_layers, config.dim) if config.normalise_layers else (config.dim,)
        self.register_buffer("norm_mean", torch.zeros(norm_shape))
        self.register_buffer("norm_std", torch.ones(norm_shape))
        self.mixer = LayerMixer(config)
        self.head = FusedHead(config)
        self.register_buffer("out_low", torch.tensor([TASKS[t].low for t in config.tasks]))
        self.register_buffer("out_span", torch.tensor([TASKS[t].span for t in config.tasks]))

    def prepare(self, layers: torch.Tensor) -> torch.Tensor:
        """Everything before the trainable part: standardise, and mix when the mix is fixed.

        Training calls this once on the whole data set, then :meth:`forward_prepared` per batch.
        """
        if layers.dim() == 2:
            layers = layers.unsqueeze(1)
        if layers.shape[1:] != (self.config.n_layers, self.config.dim):
            raise ConfigError(
                f"inputs have shape {tuple(layers.shape[1:])}, the model expects "
                f"{(self.config.n_layers, self.config.dim)} (layers, dim)"
            )
        if self.config.normalise_layers:
            return (layers - self.norm_mean) / self.norm_std  # [N, L, D], mixed per batch
        return (self.mixer(layers) - self.norm_mean) / self.norm_std  # [N, D]

    def forward_prepared(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_low + self.out_span * torch.sigmoid(self.head(self.mixer(x)))

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        return self.forward_prepared(self.prepare(layers))

    def set_mc_dropout(self, on: bool) -> None:
        """Eval mode everywhere, with Dropout modules switched back on for MC sampling."""
        self.eval()
        if on:
            for m in self.modules():
                if isinstance(m, nn.Dropout):
                    m.train()

    # The exported state dict uses the published names for the head.
    def export_state_dict(self) -> dict[str, torch.Tensor]:
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("head.")}
        state.update(self.head.published_state_dict())
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def import_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        head = {k: v for k, v in state.items() if k.startswith(("shared.", "branch_"))}
        rest = {k: v for k, v in state.items() if k not in head}
        own = {k for k in self.state_dict() if not k.startswith("head.")}
        if set(rest) != own:
            raise ModelLoadError(
                f"weights do not match the config: missing {sorted(own - set(rest))}, "
                f"unexpected {sorted(set(rest) - own)}"
            )
        try:
            self.load_state_dict(
                {**rest, **{f"head.{k}": v for k, v in fuse_state_dict(head, self.config.tasks).items()}}
            )
        except (RuntimeError, KeyError) as exc:
            raise ModelLoadError(f"weights do not match the config: {exc}") from exc


def build_net(config: HeadConfig, seed: int | None = 42) -> ApexNet:
    """A freshly initialised network; the same seed gives the same weights as ReferenceHead."""
    if seed is not None:
        torch.manual_seed(seed)
    return ApexNet(config)


def expected_state_shapes(config: HeadConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The shape and dtype of every tensor :meth:`ApexNet.export_state_dict` writes for
    ``config``. The modules are built on the ``meta`` device, so nothing is allocated whatever
    dimensions ``config`` names; the head is the published layout the export uses."""
    from apexmusic.compat import reference_conv_weights

    reference_conv_weights()  # cached from real CPU tensors; numpy cannot read meta ones
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        mixer, head = LayerMixer(config), ReferenceHead(config)
    norm = (config.n_layers, config.dim) if config.normalise_layers else (config.dim,)
    n_tasks = (len(config.tasks),)
    shapes = {"norm_mean": norm, "norm_std": norm, "out_low": n_tasks, "out_span": n_tasks}
    out = {k: (v, torch.float32) for k, v in shapes.items()}
    out.update({f"mixer.{k}": (tuple(v.shape), v.dtype) for k, v in mixer.state_dict().items()})
    out.update({k: (tuple(v.shape), v.dtype) for k, v in head.state_dict().items()})
    return out


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device for ``auto`` | ``cpu`` | ``cuda[:N]`` (see apexmusic.devices)."""
    if isinstance(device, torch.device):
        return device
    return torch.device(devices.resolve_device(device))

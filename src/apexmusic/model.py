"""The APEX multi-task head, input layer mixing, and the model directory format.

The network is the published one (DESIGN.md): a shared trunk of Linear → BatchNorm1d → GELU →
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

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from apexmusic import devices
from apexmusic.compat import REFERENCE_LAYERS
from apexmusic.errors import ConfigError, ModelLoadError
from apexmusic.tasks import ALL_TASKS, TASKS

log = logging.getLogger(__name__)

MODEL_FORMAT = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"

TRUNK_DIMS: dict[int, tuple[int, ...]] = {2: (512, 256), 3: (512, 384, 256)}
BRANCH_DIMS: tuple[int, int] = (128, 64)
MIXINGS = ("reference", "mean", "learned")


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
        self.tasks = tuple(self.tasks)
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


# ---- the scoring model and its directory -----------------------------------------------------


@dataclass
class ScoringModel:
    """A trained model plus everything needed to use it: what embeddings it expects, how its
    targets were made, and its model card.

    ``predict_layers`` is the one entry point for scoring; it runs batched without gradients.
    """

    net: ApexNet
    encoder_spec: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    model_id: str = ""

    @property
    def config(self) -> HeadConfig:
        return self.net.config

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.net.config.tasks

    @property
    def device(self) -> torch.device:
        return self.net.norm_mean.device

    def to(self, device: str | torch.device) -> ScoringModel:
        self.net.to(resolve_device(device))
        return self

    def layer_weights(self) -> np.ndarray:
        return self.net.mixer.layer_weights().detach().cpu().numpy()

    @torch.inference_mode()
    def predict_layers(
        self, layers: np.ndarray, mc_samples: int = 0, batch_size: int = 4096, seed: int = 0
    ) -> dict[str, np.ndarray]:
        """Scores for ``layers`` ``[N, L, D]`` (or ``[N, D]``) in each task's natural range.

        With ``mc_samples > 0`` also returns ``"<task>_std"``: the spread of ``mc_samples``
        forward passes with dropout on and BatchNorm in eval mode (MC dropout). The score itself
        is always the deterministic (dropout off) prediction.
        """
        layers = np.asarray(layers)
        if layers.ndim == 2:
            layers = layers[:, None, :]
        if layers.ndim != 3:
            raise ConfigError(f"layers must be [N, L, D], got shape {layers.shape}")
        n = layers.shape[0]
        scores = np.empty((n, len(self.tasks)), np.float32)
        stds = np.empty((n, len(self.tasks)), np.float32) if mc_samples > 0 else None
        gen = torch.Generator(device="cpu").manual_seed(seed)
        was_training = self.net.training
        try:
            for start in range(0, n, batch_size):
                chunk = torch.from_numpy(
                    np.ascontiguousarray(layers[start : start + batch_size], dtype=np.float32)
                )
                x = self.net.prepare(chunk.to(self.device))
                self.net.set_mc_dropout(False)
                scores[start : start + len(chunk)] = self.net.forward_prepared(x).cpu().numpy()
                if stds is not None:
                    stds[start : start + len(chunk)] = self._mc_std(x, mc_samples, gen)
        finally:
            self.net.train(was_training)
        out = {task: scores[:, i] for i, task in enumerate(self.tasks)}
        if stds is not None:
            out.update({f"{task}_std": stds[:, i] for i, task in enumerate(self.tasks)})
        return out

    def _mc_std(self, x: torch.Tensor, mc_samples: int, gen: torch.Generator) -> np.ndarray:
        self.net.set_mc_dropout(True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            draws = torch.stack([self.net.forward_prepared(x) for _ in range(mc_samples)])
        self.net.set_mc_dropout(False)
        return draws.std(0, unbiased=mc_samples > 1).cpu().numpy()

    # ---- persistence ------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT,
            "model_type": "apex-multitask-head",
            "model_id": self.model_id,
            "head": {
                **asdict(self.config),
                "tasks": list(self.tasks),
                "reference_layers": list(self.config.reference_layers),
            },
            "encoder": self.encoder_spec,
            "targets": self.targets,
            "training": self.training,
            "card": self.card,
        }

    def save_pretrained(self, model_dir: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors`` and the ``README.md`` model card."""
        from safetensors.torch import save_file

        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        state = self.net.export_state_dict()
        if not self.model_id:
            self.model_id = _weights_id(state)
        save_file(state, str(model_dir / WEIGHTS_FILE), metadata={"format": "pt", "model_id": self.model_id})
        (model_dir / CONFIG_FILE).write_text(json.dumps(self.config_dict(), indent=2, default=_json_default))
        (model_dir / CARD_FILE).write_text(render_model_card(self))
        log.info("saved model %s to %s", self.model_id, model_dir)
        return model_dir

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str = "cpu") -> ScoringModel:
        """Load a model directory or hub id (safetensors only; nothing is unpickled)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from apexmusic.hub import resolve_model

        model_dir = resolve_model(model_dir)
        config_path, weights_path = model_dir / CONFIG_FILE, model_dir / WEIGHTS_FILE
        if not config_path.is_file() or not weights_path.is_file():
            raise ModelLoadError(
                f"{model_dir} is not a model directory (needs {CONFIG_FILE} and {WEIGHTS_FILE})"
            )
        try:
            cfg = json.loads(config_path.read_text())
            head = HeadConfig.from_dict(cfg["head"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"cannot read {config_path}: {exc}") from exc
        except ConfigError as exc:
            raise ModelLoadError(f"{config_path}: {exc}") from exc
        if cfg.get("format", 0) > MODEL_FORMAT:
            raise ModelLoadError(f"{model_dir} has model format {cfg.get('format')}, newer than this code")
        try:
            state = load_file(str(weights_path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read {weights_path}: {exc}") from exc
        net = ApexNet(head)
        net.import_state_dict(state)
        net.eval()
        model = cls(
            net=net,
            encoder_spec=cfg.get("encoder", {}),
            targets=cfg.get("targets", {}),
            training=cfg.get("training", {}),
            card=cfg.get("card", {}),
            model_id=cfg.get("model_id") or _weights_id(state),
        )
        return model.to(device)


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device for ``auto`` | ``cpu`` | ``cuda[:N]`` (see apexmusic.devices)."""
    if isinstance(device, torch.device):
        return device
    return torch.device(devices.resolve_device(device))


def _weights_id(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return f"apex-{h.hexdigest()[:12]}"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray | tuple):
        return list(obj)
    return str(obj)


# ---- the model card --------------------------------------------------------------------------


def render_model_card(model: ScoringModel) -> str:
    """A markdown model card from the model's config: data, metrics, intended use, limits."""
    cfg, card = model.config, model.card
    enc = model.encoder_spec or {}
    lines = [
        f"# {card.get('title', 'APEX scoring model')} (`{model.model_id}`)",
        "",
        "Predicts, from audio embeddings alone, popularity scores (0–100) and/or perceptual",
        "aesthetic scores (1–5) of AI-generated songs. Architecture: the APEX multi-task head",
        "(Husain & Herremans, 2026) on a frozen music encoder.",
        "",
        "## Model",
        f"- Tasks: {', '.join(f'`{t}` ({TASKS[t].low:g}–{TASKS[t].high:g})' for t in cfg.tasks)}",
        f"- Shared trunk: {cfg.dim}→{'→'.join(map(str, cfg.trunk_dims))}; branches 256→128→64→1",
        f"- Input: {cfg.n_layers} layer(s) × {cfg.dim} from encoder `{enc.get('name', 'unknown')}` "
        f"(weights `{enc.get('weights', 'unknown')}`, segments {enc.get('segment_seconds', '?')} s, "
        f"compat `{enc.get('compat')}`); layer mixing `{cfg.mixing}`; "
        f"standardisation {'fitted on the training split' if cfg.standardize else 'none'}",
        f"- Created: {card.get('created', time.strftime('%Y-%m-%d'))}; "
        f"source: {card.get('source', 'trained with apexmusic')}",
        "",
        "## Training data",
    ]
    data = card.get("data", {})
    if data:
        lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in data.items()]
    else:
        lines.append("- not recorded")
    if model.training:
        keys = ("loss", "mode", "epochs", "best_epoch", "batch_size", "lr", "split", "seed")
        shown = [f"{k}={model.training[k]}" for k in keys if k in model.training]
        lines.append("- training: " + ", ".join(shown))
    if model.targets:
        lines.append(f"- targets: {json.dumps(model.targets, default=str)}")
    lines += ["", "## Held-out metrics"]
    metrics = card.get("metrics", {})
    if metrics:
        lines += ["| task | Spearman | Pearson | MAE | R² |", "|---|---|---|---|---|"]
        for task, m in metrics.items():
            lines.append(
                f"| {task} | {_fmt(m.get('spearman'))} | {_fmt(m.get('pearson'))} | "
                f"{_fmt(m.get('mae'))} | {_fmt(m.get('r2'))} |"
            )
    else:
        lines.append("No held-out evaluation recorded with this model.")
    lines += [
        "",
        "## Intended use",
        "Ranking and triaging AI-generated songs in a catalogue, research on what listeners",
        "respond to, and comparing generators. Scores are relative within the population the",
        "model was trained on (popularity is a within-platform percentile, not a count).",
        "",
        "## Limitations",
        "- Popularity depends on much more than audio (promotion, creator following, timing);",
        "  the audio-only signal explains only part of it.",
        "- Aesthetic scores imitate a small pool of expert raters; their spread between raters",
        "  is large. Scores outside the training distribution (new generators, genres, lengths)",
        "  are less reliable; MC-dropout spreads (`<task>_std`) give a rough uncertainty.",
        "- Embeddings must come from the same encoder, weights and segment settings as",
        "  recorded above.",
        "",
    ]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "–"


# ---- the reference implementation's checkpoints ------------------------------------------------

REFERENCE_CHECKPOINT_KEYS = ("model_state", "task", "shared", "mode", "epoch", "val_loss")
REFERENCE_ENCODER_SPEC: dict[str, Any] = {
    "name": "mert-v1-95m",
    "weights": "m-a-p/MERT-v1-95M",
    "segment_seconds": 30.0,
    "hop_seconds": None,
    "compat": "reference",
    "n_layers": 13,
    "dim": 768,
    "sample_rate": 24000,
}


def import_reference_checkpoint(
    path: str | Path, n_layers: int = 13, encoder_spec: dict[str, Any] | None = None
) -> ScoringModel:
    """Convert the reference's ``best_model.pt`` into a :class:`ScoringModel`.

    The file is read with ``torch.load(weights_only=True)`` (tensors and plain containers
    only). The model gets ``reference`` mixing and no standardisation, as the reference had
    none: with ``n_layers=13`` it takes the 13 MERT hidden states of a ``--compat reference``
    store and applies the reference's fixed Conv1d over layers 2, 5, 8, 12 itself; with
    ``n_layers=1`` it takes the already-mixed 768-d vector.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{path} not found") from exc
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ModelLoadError(f"cannot load {path} safely as a reference checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model_state"), dict):
        raise ModelLoadError(f"{path} is not a reference checkpoint (needs a dict with 'model_state')")
    state = {k: v for k, v in ckpt["model_state"].items() if isinstance(v, torch.Tensor)}
    tasks = tuple(t for t in ALL_TASKS if f"branch_{t}.branch.2.weight" in state)
    n_shared = len({k.split(".")[1] for k in state if k.startswith("shared.")})
    if not tasks or n_shared not in TRUNK_DIMS or "shared.0.block.0.weight" not in state:
        raise ModelLoadError(f"{path}: unrecognised state dict (tasks {tasks}, {n_shared} shared layers)")
    if "shared" in ckpt and int(ckpt["shared"]) != n_shared:
        raise ModelLoadError(f"{path}: 'shared'={ckpt['shared']} but the weights have {n_shared} layers")
    dim = int(state["shared.0.block.0.weight"].shape[1])
    config = HeadConfig(
        tasks=tasks, shared=n_shared, n_layers=n_layers, dim=dim, mixing="reference", standardize=False
    )
    net = ApexNet(config)
    unexpected = [k for k in state if not k.startswith(("shared.", "branch_"))]
    if unexpected:
        raise ModelLoadError(f"{path}: unexpected weights {unexpected[:5]}")
    try:
        net.head.load_published_state_dict(state)
    except (RuntimeError, KeyError) as exc:
        raise ModelLoadError(f"{path}: weights do not fit the published layout: {exc}") from exc
    net.eval()
    info = {k: _plain(ckpt.get(k)) for k in REFERENCE_CHECKPOINT_KEYS if k != "model_state"}
    spec = {**REFERENCE_ENCODER_SPEC, "n_layers": n_layers, "dim": dim, **(encoder_spec or {})}
    return ScoringModel(
        net=net,
        encoder_spec=spec,
        targets={"popularity": "reference implementation (percentile within platform, power transform)"},
        training={**info, "source": str(path.name), "mixing": "reference"},
        card={
            "title": "APEX reference checkpoint (imported)",
            "source": f"import-reference {path.name}",
            "data": {
                "training data": "as trained by the reference implementation",
                **{k: v for k, v in info.items() if v is not None},
            },
        },
    )


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)

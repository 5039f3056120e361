"""MERT-v1 encoders on transformers' ``HubertModel`` -- no remote code.

MERT-v1 is a HuBERT-style model: a 7-layer conv feature extractor (strides 5,2,2,2,2,2,2,
kernels 10,3,3,3,3,2,2, 512 channels; 320 samples per frame, 75 frames/s at 24 kHz) and a
transformer (95M: 12 x 768, post-norm, group-norm extractor; 330M: 24 x 1024, stable layer
norm, layer-norm extractor). The published checkpoints ship remote code (``MERTModel``); with
the options MERT-v1 uses (no CQT input, no deepnorm) that code *is* HubertModel, so we build a
HubertModel from the published ``config.json`` and map the weights onto it, checking every key.

Weights (``weights=``):
  - a local folder laid out as the published checkpoints: ``config.json``
    (``model_type: mert_model``) and ``model.safetensors`` or ``pytorch_model.bin`` (or their
    sharded ``*.index.json`` forms). Old weight-norm names (``weight_g`` / ``weight_v``) are
    renamed to the parametrisation names; MERT-only pre-training keys (``_DROPPED_KEYS``) are
    dropped; any other missing or unexpected key is a ModelLoadError. ``.bin`` files load
    with ``torch.load(weights_only=True)`` only. A ``preprocessor_config.json`` beside them
    sets ``do_normalize`` (``encoders.input_norm``: zero-mean unit-variance input rows);
  - a single weights file (uses the built-in architecture);
  - a hub id such as ``m-a-p/MERT-v1-95M`` (also the default, ``None``): only the config and
    weight files are downloaded with ``huggingface_hub.snapshot_download``, then loaded as a
    folder. Offline this raises ModelLoadError with the way out;
  - ``"random"``: seeded random initialisation, for timing and tests only. Logged as a WARNING
    and recorded as ``weights_id="random"`` in ``describe()``, so nobody mistakes it for MERT.

Output: all 13 (95M) or 25 (330M) hidden states, index 0 = before the first transformer
layer, each time-averaged over the segment's valid frames (frames whose receptive field lies
in the valid samples; the count follows from the conv arithmetic). For the 330M the last
state is the final-layer-normed one, as in the transformers 4.x code MERT was published with.

Options (``**opts``): ``compat="reference"`` (fp32, rows pooled over all frames of the
zero-padded segment, as the published pipeline does), ``fast=True`` (the matmul path of
``mert_fast``; ``False`` runs HubertModel itself, one segment per forward),
``batch_seconds`` (audio per forward; default 30 s on CPU, 1920 s on CUDA), ``batch_size``
(segments per forward, overrides ``batch_seconds``), ``compile`` / ``compile_backend`` /
``compile_mode`` (``torch.compile`` the transformer, off by default), ``seed`` (random init).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from apexmusic.devices import resolve_device, resolve_precision, torch_dtype
from apexmusic.encoders.base import EncoderBase
from apexmusic.encoders.fingerprint import loaded_fingerprint
from apexmusic.encoders.input_norm import PREPROCESSOR_FILE, normalise_rows, read_do_normalize
from apexmusic.errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)

SAMPLE_RATE = 24000
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")

# MERT checkpoint keys with no counterpart in an inference HubertModel (pre-training heads,
# the SpecAugment mask embedding, the optional CQT front end). Dropped, logged at INFO.
_DROPPED_KEYS = re.compile(
    r"^(masked_spec_embed|label_embs_concat|final_proj\..*|final_cqt_proj\..*|final_mel_proj\..*"
    r"|feature_extractor_cqt\..*|encoder\.pos_conv_embed\.conv\.bn\..*)$"
)
_PREFIXES = ("mert_model.", "hubert.", "mert.", "model.")

# HubertConfig keys that define the architecture; everything else in a MERT config.json
# (training, CTC, masking, auto_map ...) does not change inference.
_ARCH_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "layer_norm_eps",
    "feat_extract_norm",
    "feat_extract_activation",
    "conv_dim",
    "conv_stride",
    "conv_kernel",
    "conv_bias",
    "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups",
    "conv_pos_batch_norm",
    "do_stable_layer_norm",
    "feat_proj_layer_norm",
)
_INFERENCE = dict(
    hidden_dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    feat_proj_dropout=0.0,
    final_dropout=0.0,
    layerdrop=0.0,
    mask_time_prob=0.0,
    mask_feature_prob=0.0,
)


@dataclass(frozen=True)
class MertArch:
    """One published MERT-v1 architecture (the HubertConfig values that matter)."""

    name: str
    hub_id: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    feat_extract_norm: str
    do_stable_layer_norm: bool
    conv_bias: bool
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    feat_proj_layer_norm: bool = True
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"
    feat_extract_activation: str = "gelu"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def hubert_config(self, **overrides: Any):
        from transformers import HubertConfig

        values = {k: v for k, v in asdict(self).items() if k not in ("name", "hub_id", "extra")}
        values.update(_INFERENCE)
        values.update(overrides)
        return HubertConfig(**values)


MERT_V1_95M = MertArch(
    name="mert-v1-95m",
    hub_id="m-a-p/MERT-v1-95M",
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    feat_extract_norm="group",
    do_stable_layer_norm=False,
    conv_bias=False,
)
# conv_bias follows HuBERT-large, which MERT-v1-330M's layer-norm extractor is modelled on; a
# downloaded config.json always takes precedence.
MERT_V1_330M = MertArch(
    name="mert-v1-330m",
    hub_id="m-a-p/MERT-v1-330M",
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    conv_bias=True,
)


# ---------------------------------------------------------------------------- weights
def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder}: no config.json (expected a MERT checkpoint folder)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: unreadable config.json ({exc})") from None


def arch_from_config(config: dict[str, Any], expected: MertArch) -> MertArch:
    """The architecture a published ``config.json`` describes; unsupported MERT options raise."""
    model_type = config.get("model_type")
    if model_type not in ("mert_model", "hubert", None):
        raise ModelLoadError(f"config.json has model_type {model_type!r}; expected 'mert_model'")
    if config.get("feature_extractor_cqt"):
        raise ModelLoadError(
            "MERT checkpoints with feature_extractor_cqt=true (a CQT input branch) are not supported"
        )
    if config.get("deepnorm") and not config.get("do_stable_layer_norm"):
        raise ModelLoadError("MERT checkpoints with deepnorm=true (scaled residuals) are not supported")
    # attention_relax only acts in MERT's deepnorm layers (rejected above); it is also a
    # softmax-invariant row shift, so ignoring it is exact.
    values = {k: config[k] for k in _ARCH_KEYS if k in config}
    for key in ("conv_dim", "conv_stride", "conv_kernel"):
        if key in values:
            values[key] = tuple(values[key])
    extra = {"sample_rate": int(config.get("sample_rate", SAMPLE_RATE))}
    arch = MertArch(
        name=expected.name, hub_id=expected.hub_id, **{**_arch_fields(expected), **values}, extra=extra
    )
    if (arch.hidden_size, arch.num_hidden_layers) != (expected.hidden_size, expected.num_hidden_layers):
        raise ModelLoadError(
            f"the checkpoint is a {arch.num_hidden_layers} x {arch.hidden_size} model, but encoder "
            f"{expected.name} is {expected.num_hidden_layers} x {expected.hidden_size}; "
            "use the matching encoder"
        )
    return arch


def _arch_fields(arch: MertArch) -> dict[str, Any]:
    return {k: v for k, v in asdict(arch).items() if k not in ("name", "hub_id", "extra")}


def _weight_files(folder: Path) -> list[Path]:
    for name in _WEIGHT_FILES:
        if (folder / name).is_file():
            return [folder / name]
    for name in _INDEX_FILES:
        index = folder / name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError) as exc:
                raise ModelLoadError(f"{index}: unreadable shard index ({exc})") from None
            return [folder / shard for shard in shards]
    raise ModelLoadError(f"{folder}: no {' or '.join(_WEIGHT_FILES)} found")


def read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors of one weights file: safetensors, or a ``.bin`` through ``torch.load(weights_only=True)``."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # any parse failure of an untrusted file is a load error
        raise ModelLoadError(f"{path}: cannot read weights safely ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: not a flat tensor state dict")
    return state


def map_mert_state_dict(state: dict[str, Any], expected_keys: set[str]) -> dict[str, Any]:
    """Rename a published MERT state dict to HubertModel's names; strict on everything else."""
    prefixes = [p for p in _PREFIXES if state and all(k.startswith(p) for k in state)]
    mapped: dict[str, Any] = {}
    dropped = []
    for key, tensor in state.items():
        name = key[len(prefixes[0]) :] if prefixes else key
        name = re.sub(r"\.weight_g$", ".parametrizations.weight.original0", name)
        name = re.sub(r"\.weight_v$", ".parametrizations.weight.original1", name)
        if name not in expected_keys and _DROPPED_KEYS.match(name):
            dropped.append(name)
            continue
        mapped[name] = tensor
    missing = sorted(expected_keys - set(mapped))
    unexpected = sorted(set(mapped) - expected_keys)
    if missing or unexpected:
        raise ModelLoadError(
            f"weights do not match the MERT architecture: {len(missing)} missing ({_some(missing)}), "
            f"{len(unexpected)} unexpected ({_some(unexpected)})"
        )
    if dropped:
        log.info("dropped %d MERT pre-training keys: %s", len(dropped), ", ".join(sorted(dropped)))
    return mapped


def _some(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (" ..." if len(keys) > n else "")


def build_model(arch: MertArch, state: dict[str, Any] | None = None, seed: int = 0):
    """A HubertModel in eval mode: ``state`` loaded strictly, or seeded random weights.

    transformers' own initialisation is skipped (it costs seconds for weights that are
    overwritten at once); random weights come from ``random_init``.
    """
    from transformers import HubertModel

    with _no_init_weights():
        model = HubertModel(arch.hubert_config())
    if state is None:
        random_init(model, seed)
    else:
        mapped = map_mert_state_dict(state, set(model.state_dict()))
        try:
            model.load_state_dict(mapped, strict=True)
        except RuntimeError as exc:  # shape mismatches
            raise ModelLoadError(f"weights do not fit the MERT architecture: {exc}") from None
    return model.eval().requires_grad_(False)


def _no_init_weights():
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def random_init(model: Any, seed: int = 0) -> None:
    """Seeded random weights at HuBERT's scales: linears std 0.02, convs Kaiming (std sqrt(2 / fan_in)),
    norms identity, biases zero. Uniform draws (same std) because they are several times cheaper."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("original0"):  # weight-norm magnitude: set from the direction below
                continue
            if param.ndim == 1:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
                continue
            std = 0.02 if param.ndim == 2 else (2.0 / (param.shape[1] * param.shape[2])) ** 0.5
            param.uniform_(-(3**0.5) * std, 3**0.5 * std, generator=generator)
        conv = model.encoder.pos_conv_embed.conv
        if hasattr(conv, "parametrizations"):
            direction = conv.parametrizations.weight.original1
            conv.parametrizations.weight.original0.copy_(direction.norm(dim=(0, 1), keepdim=True))


def load_folder(folder: Path, expected: MertArch):
    arch = arch_from_config(_read_config(folder), expected)
    arch = replace(arch, extra={**arch.extra, "do_normalize": read_do_normalize(folder)})
    state: dict[str, Any] = {}
    for path in _weight_files(folder):
        if not path.is_file():
            raise ModelLoadError(f"{path}: weight shard listed in the index is missing")
        state.update(read_state_dict(path))
    return build_model(arch, state), arch


def download_snapshot(hub_id: str) -> Path:
    """Config and weight files only (no code) from the hub; ModelLoadError when unreachable."""
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            repo_id=hub_id,
            allow_patterns=[
                "config.json",
                PREPROCESSOR_FILE,
                *_WEIGHT_FILES,
                *_INDEX_FILES,
                "model-*.safetensors",
                "pytorch_model-*.bin",
            ],
        )
    except Exception as exc:
        log.info("fetching %s failed: %s: %s", hub_id, type(exc).__name__, exc)
        raise ModelLoadError(
            f"cannot fetch MERT weights {hub_id!r} from the Hugging Face hub (offline?); download the "
            "checkpoint folder elsewhere and pass --weights /path/to/folder, or --weights random for "
            "timing only (-v shows the hub's error)"
        ) from None
    return Path(folder)


def load_weights(weights: str | None, arch: MertArch, seed: int = 0):
    """``(HubertModel, MertArch, weights_id)`` for a folder, file, hub id, ``"random"`` or None."""
    if weights == "random":
        log.warning(
            "%s: RANDOM WEIGHTS (weights=random): vectors carry no musical meaning; timing and tests only",
            arch.name,
        )
        return build_model(arch, None, seed=seed), arch, "random"
    source = weights or arch.hub_id
    path = Path(source).expanduser()
    if path.is_dir():
        model, loaded = load_folder(path, arch)
        return model, loaded, str(path.resolve())
    if path.is_file():
        if path.suffix not in (".safetensors", ".bin"):
            raise ModelLoadError(
                f"{path}: expected a .safetensors or .bin weights file, or a checkpoint folder"
            )
        return build_model(arch, read_state_dict(path)), arch, str(path.resolve())
    if re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not source.startswith((".", "/")):
        model, loaded = load_folder(download_snapshot(source), arch)
        return model, loaded, source
    raise ModelLoadError(f"MERT weights {source!r}: no such folder or file, and not a hub id (owner/name)")


# ---------------------------------------------------------------------------- the encoder
class MertEncoder(EncoderBase):
    """A MERT model behind the apexmusic encoder protocol (see ``encoders/base.py``)."""

    def __init__(
        self,
        model: Any,
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
        self.sample_rate = int(arch.extra.get("sample_rate", SAMPLE_RATE))
        self.n_layers = arch.num_hidden_layers + 1
        self.dim = arch.hidden_size
        self.compat = compat
        # the checkpoint's preprocessor_config.json: zero-mean unit-variance rows when true
        self.do_normalize = bool(arch.extra.get("do_normalize", False))
        self.device = resolve_device(device)
        self.precision = "fp32" if compat == "reference" else resolve_precision(precision, self.device)
        if compat == "reference" and precision not in ("auto", "fp32"):
            log.warning(
                "compat='reference' runs in fp32 (as the published pipeline); ignoring precision=%s",
                precision,
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
        self.model = model.to(self.device)
        self._engine = (
            FastMert(
                model,
                dtype=torch_dtype(self.precision),
                device=self.device,
                compile=compile,
                compile_backend=compile_backend,
                compile_mode=compile_mode,
            )
            if fast
            else None
        )
        if self._engine is not None and self.precision != "fp32":
            self.model = None  # the engine holds its own converted weights: free the float32 copy
        self._torch = torch
        self.stages: dict[str, float] | None = None  # set to {} to collect per-stage seconds

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
            "implementation": "transformers.HubertModel" + (" + apexmusic fast path" if self.fast else ""),
            "precision": self.precision,
            "compat": self.compat,
            "do_normalize": self.do_normalize,
            "pooling": "all frames of the zero-padded segment" if self.compat else "valid frames only",
            "hidden_states": self.n_layers,
            "sample_rate": self.sample_rate,
            "architecture": _arch_fields(self.arch),
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
        return plain_pooled(self.model, x, n, dtype=torch_dtype(self.precision))


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
    model, loaded, weights_id = load_weights(weights, arch, seed=seed)
    fingerprint = loaded_fingerprint(model, weights_id, loaded.name, seed)
    encoder = MertEncoder(model, loaded, weights_id, device=device, precision=precision, **opts)
    encoder.fingerprint = fingerprint
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
    "MertArch",
    "MertEncoder",
    "build_model",
    "load_330m",
    "load_mert",
    "load_95m",
    "load_weights",
    "map_mert_state_dict",
    "plain_pooled",
    "random_init",
]

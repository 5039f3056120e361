"""MERT-v1 architectures and published weights, read without transformers.

A published checkpoint folder (``config.json`` with ``model_type: mert_model`` and
``model.safetensors`` / ``pytorch_model.bin`` or their sharded ``*.index.json`` forms) becomes a
``(state, MertArch)`` pair: ``state`` maps transformers ``HubertModel`` parameter names to
tensors, checked key by key and shape by shape against ``parameter_shapes(arch)``. The fast path
builds its modules straight from that dict, so loading imports neither transformers nor builds a
model; ``mert.build_model`` loads the same dict into a HubertModel, the fp32 oracle.

Old weight-norm names (``weight_g`` / ``weight_v``) are renamed to the parametrisation names;
MERT-only pre-training keys (``_DROPPED_KEYS``) are dropped; any other missing or unexpected key
or shape is a ModelLoadError. safetensors files are memory-mapped; ``.bin`` files load with
``torch.load(weights_only=True, mmap=True)`` only.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from apexmusic.encoders.input_norm import PREPROCESSOR_FILE, read_do_normalize
from apexmusic.errors import ModelLoadError

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
        """The transformers HubertConfig of this architecture (imports transformers)."""
        from transformers import HubertConfig

        values = arch_fields(self)
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


def arch_fields(arch: MertArch) -> dict[str, Any]:
    return {k: v for k, v in asdict(arch).items() if k not in ("name", "hub_id", "extra")}


# ---------------------------------------------------------------------------- parameter layout
def parameter_shapes(arch: MertArch) -> dict[str, tuple[int, ...]]:
    """Every parameter of the inference HubertModel for ``arch``: name -> shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    c_in = 1
    for i, (c_out, kernel) in enumerate(zip(arch.conv_dim, arch.conv_kernel, strict=True)):
        prefix = f"feature_extractor.conv_layers.{i}."
        shapes[prefix + "conv.weight"] = (c_out, c_in, kernel)
        if arch.conv_bias:
            shapes[prefix + "conv.bias"] = (c_out,)
        if arch.feat_extract_norm == "layer" or (arch.feat_extract_norm == "group" and i == 0):
            shapes[prefix + "layer_norm.weight"] = shapes[prefix + "layer_norm.bias"] = (c_out,)
        c_in = c_out
    d, ff = arch.hidden_size, arch.intermediate_size
    if arch.feat_proj_layer_norm:
        shapes["feature_projection.layer_norm.weight"] = (c_in,)
        shapes["feature_projection.layer_norm.bias"] = (c_in,)
    shapes["feature_projection.projection.weight"] = (d, c_in)
    shapes["feature_projection.projection.bias"] = (d,)
    kernel, groups = arch.num_conv_pos_embeddings, arch.num_conv_pos_embedding_groups
    pos = "encoder.pos_conv_embed.conv."
    shapes[pos + "parametrizations.weight.original0"] = (1, 1, kernel)  # weight norm over dim 2
    shapes[pos + "parametrizations.weight.original1"] = (d, d // groups, kernel)
    shapes[pos + "bias"] = (d,)
    shapes["encoder.layer_norm.weight"] = shapes["encoder.layer_norm.bias"] = (d,)
    for i in range(arch.num_hidden_layers):
        prefix = f"encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{prefix}attention.{proj}.weight"] = (d, d)
            shapes[f"{prefix}attention.{proj}.bias"] = (d,)
        for norm in ("layer_norm", "final_layer_norm"):
            shapes[f"{prefix}{norm}.weight"] = shapes[f"{prefix}{norm}.bias"] = (d,)
        shapes[prefix + "feed_forward.intermediate_dense.weight"] = (ff, d)
        shapes[prefix + "feed_forward.intermediate_dense.bias"] = (ff,)
        shapes[prefix + "feed_forward.output_dense.weight"] = (d, ff)
        shapes[prefix + "feed_forward.output_dense.bias"] = (d,)
    return shapes


def random_state(arch: MertArch, seed: int = 0) -> dict[str, Any]:
    """Seeded random weights at HuBERT's scales: linears std 0.02, convs Kaiming (std
    sqrt(2 / fan_in)), norms identity, biases zero. Uniform draws (same std): several times
    cheaper than normal ones. For timing and tests only."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in parameter_shapes(arch).items():
        if len(shape) == 1:
            state[name] = (torch.ones if name.endswith("weight") else torch.zeros)(shape)
            continue
        if name.endswith("original0"):  # weight-norm magnitude: set from the direction below
            continue
        std = 0.02 if len(shape) == 2 else (2.0 / (shape[1] * shape[2])) ** 0.5
        state[name] = torch.empty(shape).uniform_(-(3**0.5) * std, 3**0.5 * std, generator=generator)
    pos = "encoder.pos_conv_embed.conv.parametrizations.weight."
    state[pos + "original0"] = state[pos + "original1"].norm(dim=(0, 1), keepdim=True)
    return state


# ---------------------------------------------------------------------------- reading
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
    if config.get("conv_pos_batch_norm"):
        raise ModelLoadError("MERT checkpoints with conv_pos_batch_norm=true are not supported")
    # attention_relax only acts in MERT's deepnorm layers (rejected above); it is also a
    # softmax-invariant row shift, so ignoring it is exact.
    values = {k: config[k] for k in _ARCH_KEYS if k in config and k != "conv_pos_batch_norm"}
    for key in ("conv_dim", "conv_stride", "conv_kernel"):
        if key in values:
            values[key] = tuple(values[key])
    extra = {"sample_rate": int(config.get("sample_rate", SAMPLE_RATE))}
    arch = MertArch(
        name=expected.name, hub_id=expected.hub_id, **{**arch_fields(expected), **values}, extra=extra
    )
    if (arch.hidden_size, arch.num_hidden_layers) != (expected.hidden_size, expected.num_hidden_layers):
        raise ModelLoadError(
            f"the checkpoint is a {arch.num_hidden_layers} x {arch.hidden_size} model, but encoder "
            f"{expected.name} is {expected.num_hidden_layers} x {expected.hidden_size}; "
            "use the matching encoder"
        )
    return arch


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
    """Tensors of one weights file: safetensors (memory-mapped), or a ``.bin`` through
    ``torch.load(weights_only=True, mmap=True)``."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # any parse failure of an untrusted file is a load error
        raise ModelLoadError(f"{path}: cannot read weights safely ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: not a flat tensor state dict")
    return state


def map_mert_state_dict(state: dict[str, Any], arch: MertArch) -> dict[str, Any]:
    """Rename a published MERT state dict to HubertModel's names; strict on keys and shapes."""
    expected = parameter_shapes(arch)
    prefixes = [p for p in _PREFIXES if state and all(k.startswith(p) for k in state)]
    mapped: dict[str, Any] = {}
    dropped = []
    for key, tensor in state.items():
        name = key[len(prefixes[0]) :] if prefixes else key
        name = re.sub(r"\.weight_g$", ".parametrizations.weight.original0", name)
        name = re.sub(r"\.weight_v$", ".parametrizations.weight.original1", name)
        if name not in expected and _DROPPED_KEYS.match(name):
            dropped.append(name)
            continue
        mapped[name] = tensor
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    if missing or unexpected:
        raise ModelLoadError(
            f"weights do not match the MERT architecture: {len(missing)} missing ({_some(missing)}), "
            f"{len(unexpected)} unexpected ({_some(unexpected)})"
        )
    wrong = [
        f"{k} {tuple(t.shape)} != {expected[k]}" for k, t in mapped.items() if tuple(t.shape) != expected[k]
    ]
    if wrong:
        raise ModelLoadError(
            f"weights do not fit the MERT architecture: {len(wrong)} shapes differ ({_some(wrong)})"
        )
    if dropped:
        log.info("dropped %d MERT pre-training keys: %s", len(dropped), ", ".join(sorted(dropped)))
    return mapped


def _some(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (" ..." if len(keys) > n else "")


def load_folder(folder: Path, expected: MertArch) -> tuple[dict[str, Any], MertArch]:
    """``(state, arch)`` of a published-layout checkpoint folder."""
    arch = arch_from_config(_read_config(folder), expected)
    arch = replace(arch, extra={**arch.extra, "do_normalize": read_do_normalize(folder)})
    state: dict[str, Any] = {}
    for path in _weight_files(folder):
        if not path.is_file():
            raise ModelLoadError(f"{path}: weight shard listed in the index is missing")
        state.update(read_state_dict(path))
    return map_mert_state_dict(state, arch), arch


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


def load_weights(weights: str | None, arch: MertArch, seed: int = 0) -> tuple[dict[str, Any], MertArch, str]:
    """``(state, MertArch, weights_id)`` for a folder, file, hub id, ``"random"`` or None."""
    if weights == "random":
        log.warning(
            "%s: RANDOM WEIGHTS (weights=random): vectors carry no musical meaning; timing and tests only",
            arch.name,
        )
        return random_state(arch, seed), arch, "random"
    source = weights or arch.hub_id
    path = Path(source).expanduser()
    if path.is_dir():
        state, loaded = load_folder(path, arch)
        return state, loaded, str(path.resolve())
    if path.is_file():
        if path.suffix not in (".safetensors", ".bin"):
            raise ModelLoadError(
                f"{path}: expected a .safetensors or .bin weights file, or a checkpoint folder"
            )
        return map_mert_state_dict(read_state_dict(path), arch), arch, str(path.resolve())
    if re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not source.startswith((".", "/")):
        state, loaded = load_folder(download_snapshot(source), arch)
        return state, loaded, source
    raise ModelLoadError(f"MERT weights {source!r}: no such folder or file, and not a hub id (owner/name)")

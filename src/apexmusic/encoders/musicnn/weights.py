"""The original weights: the published wheel's TensorFlow checkpoints read without TensorFlow,
converted to a PyTorch state dict once and cached."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from apexmusic.encoders.fingerprint import cache_root
from apexmusic.encoders.musicnn.config import MusicnnConfig
from apexmusic.encoders.tf_checkpoint import TensorBundle, open_bundle
from apexmusic.errors import ModelLoadError
from apexmusic.paths import sha256_file

log = logging.getLogger(__name__)


WHEEL_REQUIREMENT = "musicnn==0.1.0"


WHEEL_FILENAME = "musicnn-0.1.0-py3-none-any.whl"


# sha256 of the wheel on PyPI; pip checks it on download and we check it again before use.
WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"


CONVERTED_FORMAT = "apexmusic-musicnn-v2"  # bump when the state-dict layout changes


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


def download_wheel(dest_dir: Path) -> Path:
    """``pip download`` the musicnn wheel (hash-pinned, no dependencies) into ``dest_dir``."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / WHEEL_FILENAME
    if target.is_file() and sha256_file(target) == WHEEL_SHA256:
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
        return _load_converted(path, config), f"{path.name}@{sha256_file(path)[:16]}"
    if path.is_file():
        digest = sha256_file(path)
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

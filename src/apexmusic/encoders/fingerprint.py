"""Content fingerprints of encoder weights, cached by the weight files' identity.

A fingerprint says *what* weights are (see :func:`apexmusic.store.weights_fingerprint`), so
the same MERT checkpoint from the hub and from a local folder agree. Hashing ~380 MB of
tensors costs seconds at every start-up, so the result is cached in apexmusic's cache folder
under the files' (path, size, mtime_ns): a changed or replaced file is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from apexmusic.store.spec import weights_fingerprint

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin")
_CACHE_DIR = "fingerprints"
# torch's weight-norm parametrisation and the older weight_g / weight_v hold the same tensors
_PARAMETRISED = (
    ("parametrizations.weight.original0", "weight_g"),
    ("parametrizations.weight.original1", "weight_v"),
)


def cache_root() -> Path:
    """apexmusic's cache: ``$APEXMUSIC_CACHE`` or ``~/.cache/apexmusic``."""
    return Path(os.environ.get("APEXMUSIC_CACHE") or Path.home() / ".cache" / "apexmusic")


def random_marker(encoder: str, seed: int) -> str:
    """The fingerprint of seeded random weights: the seed determines every value."""
    return f"random:{encoder}:seed={int(seed)}"


def weight_files(source: str | Path) -> list[Path]:
    """The weight files behind a folder or file (empty when ``source`` is neither)."""
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    return []


def hub_snapshot_files(hub_id: str) -> list[Path]:
    """The weight files of a hub id's snapshot already in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return []
    config = try_to_load_from_cache(hub_id, "config.json")
    return weight_files(Path(config).parent) if isinstance(config, str) else []


def cached_fingerprint(files: Sequence[Path], compute: Callable[[], str]) -> str:
    """``compute()``, remembered under the files' (path, size, mtime_ns); no files: no cache."""
    if not files:
        return compute()
    try:
        identity = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    except OSError:
        return compute()
    key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]
    entry = cache_root() / _CACHE_DIR / f"{key}.json"
    try:
        cached = json.loads(entry.read_text(encoding="utf-8"))
        if cached.get("files") == [list(i) for i in identity]:
            return str(cached["fingerprint"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    fingerprint = compute()
    _write_entry(entry, {"files": identity, "fingerprint": fingerprint})
    return fingerprint


def state_fingerprint(state: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
    """:func:`weights_fingerprint` of a torch state dict, weight-norm names made canonical."""
    items = state.items() if isinstance(state, Mapping) else state
    canonical = {}
    for name, value in items:
        for new, old in _PARAMETRISED:
            name = name.replace(new, old)
        canonical[name] = value
    return weights_fingerprint(canonical)


def loaded_fingerprint(state: Any, weights_id: str, encoder: str, seed: int) -> str:
    """Fingerprint of a state dict (or a torch model's) loaded from ``weights_id`` (a folder,
    file, hub id or ``"random"``), cached by the files it was read from."""
    if weights_id == "random":
        return random_marker(encoder, seed)
    files = weight_files(weights_id)
    if not files and re.fullmatch(r"[\w.-]+/[\w.-]+", weights_id):
        files = hub_snapshot_files(weights_id)
    return cached_fingerprint(files, lambda: state_fingerprint(getattr(state, "state_dict", lambda: state)()))


def _write_entry(path: Path, payload: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache costs the next start-up a re-hash, nothing else
        log.debug("cannot cache the weights fingerprint in %s: %s", path, exc)

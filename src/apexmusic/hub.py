"""Models by name from the Hugging Face hub: ``resolve_model("amaai-lab/apex")`` -> a model directory.

A name is a local model directory (returned as is) or a hub id ``owner/name[@revision]``; the
revision (a branch, tag or commit) pins a version, the default is ``main``. Two kinds of repo:

- **our model directories** (``config.json`` with ``model_type: apex-multitask-head``, weights in
  ``model.safetensors``), as :func:`push_model` uploads them: the data files are downloaded
  (``*.json``, ``*.jsonl``, ``*.safetensors``, ``*.md``; never code, pickles or anything else)
  and the snapshot folder is the model directory;
- **the published APEX checkpoint** (``best_model.pt``, the official training script's format):
  the checkpoint and the MERT weights it was made with are downloaded (config, preprocessor
  config and weight files only), the checkpoint is read with ``torch.load(weights_only=True)``
  and converted once into a safetensors model directory under apexmusic's cache
  (``<cache>/hub/<owner>--<name>/<commit>``), which records the repo, the resolved commit, the
  file and its sha256 (``provenance.json`` and the model card). It embeds in reference compat.

The official README does not say what the hub repo names its checkpoint; the GitHub repo keeps
it at ``models/best_model.pt`` and its scripts default to that path. :data:`PUBLISHED` lists the
candidates tried in order (``best_model.pt``, then ``models/best_model.pt``), and
``checkpoint_files=`` overrides them.

Offline (``HF_HUB_OFFLINE=1``) everything is read from the Hugging Face cache (``HF_HUB_CACHE``,
else ``$HF_HOME/hub``); missing files raise one :class:`ModelLoadError` line. Nothing here ever
executes code from a repo: remote code is never enabled anywhere in apexmusic.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from apexmusic.errors import ModelLoadError
from apexmusic.model.directory import ModelDir
from apexmusic.paths import sha256_file

log = logging.getLogger(__name__)

MODEL_TYPE = "apex-multitask-head"
MODEL_PATTERNS = ("*.json", "*.jsonl", "*.safetensors", "*.md")  # what a model directory may hold
CHECKPOINT_FILES = ("best_model.pt", "models/best_model.pt")
ENCODER_CONFIG_FILES = ("config.json", "preprocessor_config.json")
ENCODER_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # first found wins
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<revision>[\w./-]+))?$")
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class PublishedModel:
    """A published reference-format checkpoint and the encoder its vectors come from."""

    checkpoint_files: tuple[str, ...] = CHECKPOINT_FILES
    encoder: str = "mert-v1-95m"
    encoder_repo: str = "m-a-p/MERT-v1-95M"
    encoder_revision: str | None = None


PUBLISHED: dict[str, PublishedModel] = {"amaai-lab/apex": PublishedModel()}


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    revision: str | None = None

    @classmethod
    def parse(cls, name: str) -> HubRef | None:
        match = _HUB_ID.match(str(name))
        if not match or str(name).startswith((".", "/", "~")):
            return None
        return cls(match["repo"], match["revision"])

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``), read at call time."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


def hub_cache() -> Path:
    """The Hugging Face cache: ``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home).expanduser() / "hub"


def converted_root() -> Path:
    """Where converted published checkpoints live: ``$APEXMUSIC_CACHE/hub`` (``~/.cache/apexmusic/hub``)."""
    return Path(os.environ.get("APEXMUSIC_CACHE") or Path.home() / ".cache" / "apexmusic") / "hub"


# ---- resolving ----------------------------------------------------------------------------------
def is_hub_id(name: str | os.PathLike) -> bool:
    """True when ``name`` is not an existing path and reads as ``owner/name[@revision]``."""
    return not Path(name).expanduser().exists() and HubRef.parse(str(name)) is not None


def resolve_model(name_or_path: str | os.PathLike, checkpoint_files: tuple[str, ...] | None = None) -> Path:
    """The local model directory for a path or a hub id (downloaded and converted as needed)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    ref = HubRef.parse(str(name_or_path))
    if ref is None:
        raise ModelLoadError(
            f"{name_or_path}: no such model directory, and not a hub id (owner/name[@revision])"
        )
    published = PUBLISHED.get(ref.repo_id.lower())
    if published is None:
        config = _try_download(ref, "config.json")
        if config is not None and _is_model_config(config):
            return _snapshot(ref, list(MODEL_PATTERNS))
        published = PublishedModel()
    if checkpoint_files:
        published = replace(published, checkpoint_files=tuple(checkpoint_files))
    return _published_model_dir(ref, published)


def _is_model_config(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("model_type") == MODEL_TYPE
    except (OSError, ValueError, AttributeError):
        return False


def _published_model_dir(ref: HubRef, published: PublishedModel) -> Path:
    checkpoint, filename = None, None
    for filename in published.checkpoint_files:
        checkpoint = _try_download(ref, filename)
        if checkpoint is not None:
            break
    if checkpoint is None:
        wanted = f"no apexmusic config.json or {' / '.join(published.checkpoint_files)}"
        raise ModelLoadError(_missing(ref, wanted))
    commit = _commit_of(checkpoint)
    encoder_dir = download_encoder(HubRef(published.encoder_repo, published.encoder_revision))
    target = converted_root() / ref.repo_id.replace("/", "--") / commit
    sha = sha256_file(checkpoint)
    provenance = ModelDir(target).hub_source()
    if provenance.get("sha256") == sha and provenance.get("encoder_weights") == str(encoder_dir):
        return target
    return _convert(ref, commit, filename, checkpoint, sha, published, encoder_dir, target)


def _convert(
    ref: HubRef,
    commit: str,
    filename: str,
    checkpoint: Path,
    sha: str,
    published: PublishedModel,
    encoder_dir: Path,
    target: Path,
) -> Path:
    from apexmusic.model import import_reference_checkpoint

    model = import_reference_checkpoint(checkpoint)
    model.encoder_spec = model.encoder_spec.with_(encoder=published.encoder, weights=str(encoder_dir))
    provenance = {
        "repo": ref.repo_id,
        "revision": ref.revision or "main",
        "commit": commit,
        "file": filename,
        "sha256": sha,
        "encoder_repo": published.encoder_repo,
        "encoder_commit": _commit_of(encoder_dir / "config.json"),
        "encoder_weights": str(encoder_dir),
    }
    model.training = {**model.training, "source": f"{ref.repo_id}/{filename}", "hub": provenance}
    model.card = {**model.card, "source": f"hf://{ref.repo_id}@{commit}/{filename} (sha256 {sha})"}
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    ModelDir(tmp).save_hub_source(provenance)
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    log.info("converted %s (%s, sha256 %s) into %s", ref, filename, sha[:12], target)
    return target


def download_encoder(ref: HubRef) -> Path:
    """A published encoder checkpoint's config, preprocessor config and one weights file; the
    snapshot folder they are in. Raises ModelLoadError when they cannot be had."""
    config = _try_download(ref, "config.json")
    if config is None:
        raise ModelLoadError(_missing(ref, "no config.json"))
    _try_download(ref, "preprocessor_config.json")  # optional: absent means no normalisation
    for name in ENCODER_WEIGHT_FILES:
        if _try_download(ref, name) is not None:
            return config.parent
    raise ModelLoadError(_missing(ref, "no " + " or ".join(ENCODER_WEIGHT_FILES)))


def _missing(ref: HubRef, what: str) -> str:
    if offline():
        cache = hub_cache()
        return f"{ref}: {what} in the Hugging Face cache {cache} (HF_HUB_OFFLINE is set; run once online)"
    return f"{ref}: {what} on the hub"


# ---- huggingface_hub calls ------------------------------------------------------------------------
def _try_download(ref: HubRef, filename: str) -> Path | None:
    """One file of ``ref`` (from the cache when offline); None when the repo or cache lacks it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(
            hf_hub_download(
                ref.repo_id,
                filename,
                revision=ref.revision,
                cache_dir=hub_cache(),
                local_files_only=offline(),
            )
        )
    except EntryNotFoundError:
        return None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"{ref}: no such local folder, and no such repo on the hub") from None
    except Exception as exc:  # revision not found, no network, bad token, ...
        raise ModelLoadError(f"{ref}: cannot fetch {filename} from the hub ({_reason(exc)})") from None


def _snapshot(ref: HubRef, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            ref.repo_id,
            revision=ref.revision,
            cache_dir=hub_cache(),
            local_files_only=offline(),
            allow_patterns=patterns,
        )
    except Exception as exc:
        raise ModelLoadError(f"{ref}: cannot fetch the model directory ({_reason(exc)})") from None
    return Path(folder)


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _commit_of(path: Path) -> str:
    """The commit a cached file belongs to (``.../snapshots/<commit>/...``)."""
    parts = Path(path).parts
    if "snapshots" in parts[:-1]:
        return parts[parts.index("snapshots") + 1]
    return "local"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# ---- pushing --------------------------------------------------------------------------------------
def push_model(
    model_dir: str | os.PathLike,
    repo_id: str,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Upload a model directory's data files (``MODEL_PATTERNS``) to ``repo_id``; returns the commit URL."""
    from huggingface_hub import HfApi

    folder = Path(model_dir)
    if not _is_model_config(folder / "config.json") or not (folder / "model.safetensors").is_file():
        raise ModelLoadError(f"{folder} is not a model directory (config.json and model.safetensors)")
    if HubRef.parse(repo_id) is None or "@" in repo_id:
        raise ModelLoadError(f"{repo_id!r} is not a hub repo id (owner/name)")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            revision=revision,
            commit_message=commit_message or f"apexmusic model {folder.name}",
            allow_patterns=list(MODEL_PATTERNS),
        )
    except Exception as exc:
        raise ModelLoadError(f"cannot push {folder} to {repo_id} ({_reason(exc)})") from None
    return str(getattr(info, "commit_url", info))


__all__ = [
    "PUBLISHED",
    "HubRef",
    "PublishedModel",
    "download_encoder",
    "is_hub_id",
    "push_model",
    "resolve_model",
]

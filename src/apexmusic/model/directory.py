"""ModelDir: the one owner of a model directory's files.

A model directory (``save_pretrained`` / ``from_pretrained`` style) holds:

- ``config.json``: the head's shape, the :class:`~apexmusic.store.EmbeddingSpec` of the vectors
  it was trained on (its ``encoder`` block), target transforms, training settings (among them
  the inference pooling rule, see :mod:`apexmusic.model.pooling`) and the card's facts;
- ``model.safetensors``: the weights (never a pickle);
- ``README.md``: the model card rendered from the config;
- ``comparator.json`` (optional): an arena-trained preference comparator;
- ``eval/`` (optional): held-out metrics and rankings written after training;
- ``trust.json`` + ``trust.safetensors`` (optional): per-task basis, calibrated intervals and
  domain statistics (:mod:`apexmusic.trust`, which names those two files).

No other module spells these names.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apexmusic.errors import ModelLoadError
from apexmusic.jsonio import jsonable
from apexmusic.paths import output_dir

if TYPE_CHECKING:
    import torch

    from apexmusic.arena import PreferenceComparator
    from apexmusic.model.scoring import ScoringModel
    from apexmusic.trust import Trust

log = logging.getLogger(__name__)

MODEL_FORMAT = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
COMPARATOR_FILE = "comparator.json"
EVAL_DIR = "eval"
HUB_SOURCE_FILE = "provenance.json"  # a model converted from the hub: repo, commit, sha256


@dataclass(frozen=True)
class ModelDir:
    """A model directory on disk; every read and write of its files goes through here."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @classmethod
    def resolve(cls, name_or_path: str | Path) -> ModelDir:
        """The model directory a folder or a hub id (``owner/name[@revision]``) names; a hub id
        is downloaded (data files only) or read from the Hugging Face cache."""
        from apexmusic.hub import resolve_model

        return cls(resolve_model(name_or_path))

    # ---- paths ----------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def weights_path(self) -> Path:
        return self.root / WEIGHTS_FILE

    @property
    def card_path(self) -> Path:
        return self.root / CARD_FILE

    @property
    def comparator_path(self) -> Path:
        return self.root / COMPARATOR_FILE

    @property
    def eval_dir(self) -> Path:
        """Where the held-out evaluation of the trained model is written."""
        return self.root / EVAL_DIR

    def is_model(self) -> bool:
        return self.config_path.is_file() and self.weights_path.is_file()

    # ---- the model --------------------------------------------------------------------------
    def load(self, device: str = "cpu") -> ScoringModel:
        """The :class:`ScoringModel` stored here."""
        from apexmusic.model.scoring import ScoringModel

        return ScoringModel.from_pretrained(self.root, device=device)

    def read_config(self) -> dict[str, Any]:
        self._require_model()
        try:
            config = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read {self.config_path}: {exc}") from exc
        if not isinstance(config, dict) or not isinstance(config.get("head"), dict):
            raise ModelLoadError(f"{self.config_path} has no 'head' block")
        if config.get("format", 0) > MODEL_FORMAT:
            raise ModelLoadError(f"{self.root} has model format {config.get('format')}, newer than this code")
        return config

    def read_weight_header(self) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
        """``({name: shape}, metadata)`` from the safetensors header alone: no tensor is read."""
        from safetensors import SafetensorError, safe_open

        self._require_model()
        try:
            with safe_open(str(self.weights_path), framework="pt") as f:
                shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
                return shapes, dict(f.metadata() or {})
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read {self.weights_path}: {exc}") from exc

    def read_weights(self) -> dict[str, torch.Tensor]:
        """The weights as tensors (safetensors only; nothing is unpickled); NaN or Inf values
        are refused, naming the tensor."""
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        self._require_model()
        try:
            state = load_file(str(self.weights_path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read {self.weights_path}: {exc}") from exc
        for key, tensor in state.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ModelLoadError(f"{self.weights_path}: tensor {key!r} holds NaN or Inf values")
        return state

    def write(self, config: dict[str, Any], state: dict[str, torch.Tensor], card_markdown: str) -> Path:
        """Write weights, config and card (creating the folder). Each file is replaced
        atomically and gets the same mode (0666 less the umask)."""
        from safetensors.torch import save

        output_dir(self.root, "model directory")
        metadata = {"format": "pt", "model_id": str(config.get("model_id", ""))}
        write_atomic(self.weights_path, save(state, metadata=metadata))
        text = json.dumps(jsonable(config, finite=False), indent=2)
        write_atomic(self.config_path, text.encode("utf-8"))
        write_atomic(self.card_path, card_markdown.encode("utf-8"))
        return self.root

    def card_markdown(self) -> str:
        """The model card (``README.md``), or "" when the folder has none."""
        return self.card_path.read_text(encoding="utf-8") if self.card_path.is_file() else ""

    def provenance(self) -> dict[str, Any]:
        """Where the training data came from (``{}`` for a model saved before it was kept)."""
        return dict(self.read_config().get("provenance") or {})

    def hub_source(self) -> dict[str, Any]:
        """Where a model converted from the hub came from (``{}`` for any other model)."""
        path = self.root / HUB_SOURCE_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError):
            return {}

    def save_hub_source(self, source: dict[str, Any]) -> None:
        write_atomic(self.root / HUB_SOURCE_FILE, json.dumps(source, indent=2).encode())

    # ---- the comparator ---------------------------------------------------------------------
    def comparator(self) -> PreferenceComparator | None:
        """The arena-trained comparator shipped with the model, or None when there is none."""
        if not self.comparator_path.is_file():
            return None
        from apexmusic.arena import PreferenceComparator

        return PreferenceComparator.load(self.comparator_path)

    def save_comparator(self, comparator: PreferenceComparator) -> Path:
        output_dir(self.root, "model directory")
        comparator.save(self.comparator_path)
        return self.comparator_path

    # ---- trust statistics -------------------------------------------------------------------
    def trust(self, model_id: str | None = None) -> Trust | None:
        """Basis, intervals and domain statistics fitted at train time, or None for a model
        trained before they existed. With ``model_id``, statistics of other weights are refused."""
        from apexmusic.trust import load_trust

        return load_trust(self.root, model_id=model_id)

    def save_trust(self, trust: Trust) -> Path:
        from apexmusic.trust import save_trust

        return save_trust(trust, self.root)

    def _require_model(self) -> None:
        if not self.is_model():
            raise ModelLoadError(
                f"{self.root} is not a model directory (needs {CONFIG_FILE} and {WEIGHTS_FILE})"
            )


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` (mode 0666 less the umask, as
    ``open`` gives), then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from apexmusic.errors import ModelLoadError

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


@dataclass(frozen=True)
class ModelDir:
    """A model directory on disk; every read and write of its files goes through here."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

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

    def read_weights(self) -> dict[str, torch.Tensor]:
        """The weights as tensors (safetensors only; nothing is unpickled)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        self._require_model()
        try:
            return load_file(str(self.weights_path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read {self.weights_path}: {exc}") from exc

    def write(self, config: dict[str, Any], state: dict[str, torch.Tensor], card_markdown: str) -> Path:
        """Write config, weights and card (creating the folder)."""
        from safetensors.torch import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        metadata = {"format": "pt", "model_id": str(config.get("model_id", ""))}
        save_file(state, str(self.weights_path), metadata=metadata)
        self.config_path.write_text(json.dumps(config, indent=2, default=_json_default), encoding="utf-8")
        self.card_path.write_text(card_markdown, encoding="utf-8")
        return self.root

    def card_markdown(self) -> str:
        """The model card (``README.md``), or "" when the folder has none."""
        return self.card_path.read_text(encoding="utf-8") if self.card_path.is_file() else ""

    # ---- the comparator ---------------------------------------------------------------------
    def comparator(self) -> PreferenceComparator | None:
        """The arena-trained comparator shipped with the model, or None when there is none."""
        if not self.comparator_path.is_file():
            return None
        from apexmusic.arena import PreferenceComparator

        return PreferenceComparator.load(self.comparator_path)

    def save_comparator(self, comparator: PreferenceComparator) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
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


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray | tuple):
        return list(obj)
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return str(obj)

"""ScoringModel: a trained network plus what it needs to be used, saved in a :class:`ModelDir`."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from apexmusic.errors import ConfigError, ModelLoadError
from apexmusic.model.directory import MODEL_FORMAT, ModelDir
from apexmusic.model.network import ApexNet, HeadConfig, resolve_device
from apexmusic.store.spec import EmbeddingSpec, check_compatible

log = logging.getLogger(__name__)

# How a model turns a song into its scores: score the song vector, or score every segment and
# take the segment-weighted mean (see apexmusic.model.pooling). It is the training mode.
POOLINGS = ("song", "segment")


@dataclass
class ScoringModel:
    """A trained model plus everything needed to use it: what embeddings it expects
    (``encoder_spec``), how its targets were made, how it was trained, and its model card.

    ``predict_layers`` scores rows of vectors; :func:`apexmusic.model.score_songs` scores songs
    under the model's :attr:`pooling` rule.
    """

    net: ApexNet
    encoder_spec: EmbeddingSpec | None = None
    targets: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    model_id: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.encoder_spec, Mapping):  # config.json files written before the spec type
            self.encoder_spec = EmbeddingSpec.from_dict(self.encoder_spec) if self.encoder_spec else None
        if self.pooling not in POOLINGS:
            raise ConfigError(f"training mode must be one of {POOLINGS}, not {self.pooling!r}")

    @property
    def config(self) -> HeadConfig:
        return self.net.config

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.net.config.tasks

    @property
    def pooling(self) -> str:
        """``"segment"``: songs score as the weighted mean of their segments' scores;
        ``"song"``: songs score through their song vector."""
        return str(self.training.get("mode") or "song")

    @property
    def device(self) -> torch.device:
        return self.net.norm_mean.device

    def check_vectors(self, spec: EmbeddingSpec, data_name: str = "the vectors") -> list[str]:
        """Refuse vectors made under ``spec`` unless this model can score them (the one rule,
        :func:`~apexmusic.store.check_compatible`); returns the warnings it logged."""
        if self.encoder_spec is None:
            message = f"the model records no embedding spec: cannot check {data_name}"
            log.warning("%s", message)
            return [message]
        return check_compatible(self.encoder_spec, spec, data_name=data_name)

    def to(self, device: str | torch.device) -> ScoringModel:
        self.net.to(resolve_device(device))
        return self

    def layer_weights(self) -> np.ndarray:
        return self.net.mixer.layer_weights().detach().cpu().numpy()

    @torch.inference_mode()
    def predict_layers(
        self, layers: np.ndarray, mc_samples: int = 0, batch_size: int = 4096, seed: int = 0
    ) -> dict[str, np.ndarray]:
        """Scores for rows ``layers`` ``[N, L, D]`` (or ``[N, D]``) in each task's natural range.

        With ``mc_samples > 0`` also returns ``"<task>_std"``: the spread of ``mc_samples``
        forward passes with dropout on and BatchNorm in eval mode (MC dropout). The score itself
        is always the deterministic (dropout off) prediction.
        """
        layers = _as_rows(layers)
        n = layers.shape[0]
        scores = np.empty((n, len(self.tasks)), np.float32)
        stds = np.empty((n, len(self.tasks)), np.float32) if mc_samples > 0 else None
        gen = torch.Generator(device="cpu").manual_seed(seed)
        was_training = self.net.training
        try:
            for start, x in self._prepared_chunks(layers, batch_size):
                self.net.set_mc_dropout(False)
                scores[start : start + len(x)] = self.net.forward_prepared(x).cpu().numpy()
                if stds is not None:
                    draws = self._mc_draws(x, mc_samples, gen)
                    stds[start : start + len(x)] = draws.std(0, unbiased=mc_samples > 1).cpu().numpy()
        finally:
            self.net.train(was_training)
        out = {task: scores[:, i] for i, task in enumerate(self.tasks)}
        if stds is not None:
            out.update({f"{task}_std": stds[:, i] for i, task in enumerate(self.tasks)})
        return out

    @torch.inference_mode()
    def mc_draws(
        self, layers: np.ndarray, mc_samples: int, batch_size: int = 4096, seed: int = 0
    ) -> np.ndarray:
        """``[mc_samples, N, T]`` MC-dropout outputs for rows ``layers``; the same seed and rows
        give the draws whose spread :meth:`predict_layers` reports."""
        layers = _as_rows(layers)
        out = np.empty((mc_samples, layers.shape[0], len(self.tasks)), np.float32)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        was_training = self.net.training
        try:
            for start, x in self._prepared_chunks(layers, batch_size):
                out[:, start : start + len(x)] = self._mc_draws(x, mc_samples, gen).cpu().numpy()
        finally:
            self.net.train(was_training)
        return out

    def _prepared_chunks(self, layers: np.ndarray, batch_size: int):
        for start in range(0, layers.shape[0], batch_size):
            chunk = torch.from_numpy(
                np.ascontiguousarray(layers[start : start + batch_size], dtype=np.float32)
            )
            yield start, self.net.prepare(chunk.to(self.device))

    def _mc_draws(self, x: torch.Tensor, mc_samples: int, gen: torch.Generator) -> torch.Tensor:
        self.net.set_mc_dropout(True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            draws = torch.stack([self.net.forward_prepared(x) for _ in range(mc_samples)])
        self.net.set_mc_dropout(False)
        return draws

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
            "encoder": self.encoder_spec.to_dict() if self.encoder_spec else {},
            "targets": self.targets,
            "training": self.training,
            "card": self.card,
        }

    def save_pretrained(self, model_dir: str | Path) -> Path:
        """Write the model directory: config, weights and model card (see :class:`ModelDir`)."""
        from apexmusic.model.card import render_model_card

        state = self.net.export_state_dict()
        if not self.model_id:
            self.model_id = weights_id(state)
        root = ModelDir(model_dir).write(self.config_dict(), state, render_model_card(self))
        log.info("saved model %s to %s", self.model_id, root)
        return root

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str = "cpu") -> ScoringModel:
        """Load a model directory (safetensors only; nothing is unpickled)."""
        folder = ModelDir(model_dir)
        cfg = folder.read_config()
        try:
            head = HeadConfig.from_dict(cfg["head"])
            spec = EmbeddingSpec.from_dict(cfg["encoder"]) if cfg.get("encoder") else None
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"cannot read {folder.config_path}: {exc}") from exc
        except ConfigError as exc:
            raise ModelLoadError(f"{folder.config_path}: {exc}") from exc
        state = folder.read_weights()
        net = ApexNet(head)
        net.import_state_dict(state)
        net.eval()
        try:
            model = cls(
                net=net,
                encoder_spec=spec,
                targets=cfg.get("targets", {}),
                training=cfg.get("training", {}),
                card=cfg.get("card", {}),
                model_id=cfg.get("model_id") or weights_id(state),
            )
        except ConfigError as exc:
            raise ModelLoadError(f"{folder.config_path}: {exc}") from exc
        return model.to(device)


def weights_id(state: Mapping[str, torch.Tensor]) -> str:
    """A short content id of a model's weights (``apex-<12 hex>``)."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return f"apex-{h.hexdigest()[:12]}"


def _as_rows(layers: np.ndarray) -> np.ndarray:
    layers = np.asarray(layers)
    if layers.ndim == 2:
        layers = layers[:, None, :]
    if layers.ndim != 3:
        raise ConfigError(f"layers must be [N, L, D], got shape {layers.shape}")
    return layers

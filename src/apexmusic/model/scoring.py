"""ScoringModel: a trained network plus what it needs to be used, saved in a :class:`ModelDir`."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from apexmusic.choices import POOLINGS
from apexmusic.errors import ConfigError, ModelLoadError
from apexmusic.model.directory import MODEL_FORMAT, ModelDir
from apexmusic.model.network import ApexNet, HeadConfig, expected_state_shapes, resolve_device
from apexmusic.store.spec import EmbeddingSpec, check_compatible

if TYPE_CHECKING:
    from apexmusic.trust import Trust

log = logging.getLogger(__name__)

# How a model turns a song into its scores: score the song vector, or score every segment and
# take the segment-weighted mean (see apexmusic.model.pooling). It is the training mode.


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
    provenance: dict[str, Any] = field(default_factory=dict)  # see apexmusic.model.provenance

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
            "provenance": self.provenance,
        }

    def save_pretrained(self, model_dir: str | Path, trust: Trust | None = None) -> Path:
        """Write the model directory: config, weights and model card (see :class:`ModelDir`),
        and with ``trust`` its statistics (stamped with this model's id; the card shows them)."""
        from apexmusic.model.card import render_model_card

        state = self.net.export_state_dict()
        self.model_id = weights_id(state)
        folder = ModelDir(model_dir)
        if trust is not None:
            trust.model_id = self.model_id
        root = folder.write(self.config_dict(), state, render_model_card(self, trust))
        if trust is not None:
            folder.save_trust(trust)
        log.info("saved model %s to %s", self.model_id, root)
        return root

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str = "cpu") -> ScoringModel:
        """Load a model directory or hub id (safetensors only; nothing is unpickled).

        Nothing is trusted before it is checked: every dimension in ``config.json`` is checked
        against the safetensors header before any tensor is read or allocated, NaN or Inf
        weights are refused, and the config's ``model_id`` must be the weights' own id.
        """
        folder = ModelDir.resolve(model_dir)
        cfg = folder.read_config()
        try:
            head = HeadConfig.from_dict(cfg["head"])
            spec = EmbeddingSpec.from_dict(cfg["encoder"]) if cfg.get("encoder") else None
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"cannot read {folder.config_path}: {exc}") from exc
        except ConfigError as exc:
            raise ModelLoadError(f"{folder.config_path}: {exc}") from exc
        shapes, metadata = folder.read_weight_header()
        _check_header(folder, head, shapes)
        _check_spec_fits_head(folder, head, spec)
        state = folder.read_weights()
        model_id = _checked_model_id(folder, cfg, metadata, state)
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
                model_id=model_id,
                provenance=cfg.get("provenance") or {},
            )
        except ConfigError as exc:
            raise ModelLoadError(f"{folder.config_path}: {exc}") from exc
        return model.to(device)


def _check_spec_fits_head(folder: ModelDir, head: HeadConfig, spec: EmbeddingSpec | None) -> None:
    if spec is not None and (int(spec.n_layers), int(spec.dim)) != (head.n_layers, head.dim):
        raise ModelLoadError(
            f"{folder.config_path}: the encoder block describes {spec.n_layers}x{spec.dim} vectors "
            f"but the head takes {head.n_layers}x{head.dim}"
        )


def _check_header(folder: ModelDir, head: HeadConfig, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Every tensor the config implies is in the header with the implied shape, and no other."""
    expected = expected_state_shapes(head)
    implied = (
        f"config.json's head (tasks={len(head.tasks)}, shared={head.shared}, "
        f"n_layers={head.n_layers}, dim={head.dim}, mixing={head.mixing})"
    )
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if missing or unexpected:
        parts = [
            f"{what} {_some(keys)}"
            for what, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        ]
        raise ModelLoadError(f"{folder.weights_path} does not match {implied}: {', '.join(parts)}")
    for key, (shape, _) in expected.items():
        if shapes[key] != shape:
            raise ModelLoadError(
                f"{folder.weights_path} does not match {implied}: {key!r} is "
                f"{list(shapes[key])} in the weights, the config implies {list(shape)}"
            )


def _some(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _checked_model_id(
    folder: ModelDir, cfg: Mapping[str, Any], metadata: Mapping[str, str], state: Mapping[str, torch.Tensor]
) -> str:
    """The weights' own id; a different id in config.json or the weights' metadata is an error."""
    model_id = weights_id(state)
    for source, claimed in (
        ("config.json", cfg.get("model_id")),
        ("the weights' metadata", metadata.get("model_id")),
    ):
        if claimed and claimed != model_id:
            raise ModelLoadError(
                f"{folder.root}: {source} names model {claimed!r} but the weights are {model_id!r} "
                "(a file was changed after the model was saved)"
            )
    return model_id


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

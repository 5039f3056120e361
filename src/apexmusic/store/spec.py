"""EmbeddingSpec: what an embedding vector means, and the one rule for when two agree.

Every stage that makes or reads vectors speaks this record: the store manifest and every
shard's schema metadata, the ``encoder`` block of a model's ``config.json``, the predictor's
embedder and both embedding engines. :func:`check_compatible` is the only place that decides
whether vectors made under one spec may be scored by a model trained under another.

The rule:

- architecture, shape, segmenting, compat mode and pooling that differ are errors;
- weights are compared by *content* (:attr:`EmbeddingSpec.fingerprint`) when both sides know
  it: the same weights from a hub id and from a local folder agree, different weights are an
  error; when one side does not know its fingerprint, that is a warning, never a refusal;
- decoder, resampler and arithmetic (precision) differences move vectors only slightly and
  are warnings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from apexmusic.errors import ConfigError

log = logging.getLogger(__name__)

SPEC_FORMAT = 1
REFERENCE = "reference"
# Segment weights in a song's mean: each segment's valid seconds, or 1 each (the reference).
WEIGHTINGS = ("valid_seconds", "uniform")
# Frames a segment vector is pooled over: only valid ones, or all frames of the padded segment.
POOLINGS = ("valid_frames", "all_frames")

# Fields whose difference makes vectors incomparable (an error in check_compatible).
_STRUCTURAL = (
    "encoder",
    "n_layers",
    "dim",
    "sample_rate",
    "segment_seconds",
    "hop_seconds",
    "compat",
    "pad_last",
    "pooling",
    "segment_weighting",
)
# Fields that move vectors only slightly (a warning in check_compatible).
_NUMERICAL = ("decoder", "resampler", "precision")
# Fields that say nothing about the vectors' values.
_INFORMATIONAL = ("weights", "version", "encoder_settings")


class SpecMismatchError(ConfigError):
    """Vectors made under one spec cannot be scored by a model trained under another."""


@dataclass(frozen=True)
class EmbeddingSpec:
    """What one embedding vector is: the encoder, its weights and how songs were cut and pooled.

    ``weights`` says where the weights came from (a hub id, a folder, ``"random"``,
    ``"none"``); ``fingerprint`` says what they are (``"sha256:..."`` of the state dict as
    loaded, see :func:`weights_fingerprint`), or None when unknown.
    """

    encoder: str
    n_layers: int
    dim: int
    sample_rate: int
    segment_seconds: float = 30.0
    hop_seconds: float | None = None  # None: back-to-back segments (hop = segment)
    compat: str | None = None  # "reference": the published pipeline's segmenting and pooling
    weights: str | None = None
    fingerprint: str | None = None
    pad_last: bool = False
    pooling: str = "valid_frames"
    segment_weighting: str = "valid_seconds"
    decoder: str | None = None  # e.g. "pyav", "soundfile"
    resampler: str | None = None  # e.g. "soxr-hq", "sinc-torchaudio"
    precision: str | None = None  # the arithmetic the encoder ran in
    encoder_settings: Mapping[str, Any] = field(default_factory=dict)
    version: str | None = None  # apexmusic version that made the vectors

    def __post_init__(self) -> None:
        # one spelling per meaning, so equal specs compare and key equal
        object.__setattr__(self, "weights", _none_if_blank(self.weights))
        object.__setattr__(self, "fingerprint", _none_if_blank(self.fingerprint))
        if self.hop_seconds is not None and float(self.hop_seconds) == float(self.segment_seconds):
            object.__setattr__(self, "hop_seconds", None)
        if not self.encoder:
            raise ConfigError("an embedding spec needs an encoder name")
        if int(self.n_layers) < 1 or int(self.dim) < 1:
            raise ConfigError(f"embedding shape must be positive, got {self.n_layers}x{self.dim}")
        if self.segment_seconds <= 0 or (self.hop_seconds is not None and self.hop_seconds <= 0):
            raise ConfigError("segment and hop seconds must be positive")
        if self.compat not in (None, REFERENCE):
            raise ConfigError(f"compat must be {REFERENCE!r} or unset, got {self.compat!r}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.segment_weighting not in WEIGHTINGS:
            raise ConfigError(
                f"segment_weighting must be one of {', '.join(WEIGHTINGS)}, got {self.segment_weighting!r}"
            )

    # ---- derived ------------------------------------------------------------------------
    @property
    def hop(self) -> float:
        """The hop between segment starts (the segment length when unset)."""
        return float(self.hop_seconds or self.segment_seconds)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.n_layers), int(self.dim)

    def store_key(self) -> str:
        """A short hash of everything that makes two rows belong in one store.

        Stricter than :func:`check_compatible`: a store never mixes precisions, decoders or
        weights, even ones a model could score together. The weights count by fingerprint
        when known, else by where they came from.
        """
        payload = json.dumps(self._keyed(), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def differences(self, other: EmbeddingSpec) -> list[str]:
        """``"key: mine vs other's"`` for every value that makes the two store keys differ."""
        mine, theirs = self._keyed(), other._keyed()
        return [f"{k}: {mine[k]!r} vs {theirs[k]!r}" for k in sorted(mine) if mine[k] != theirs[k]]

    def _keyed(self) -> dict[str, Any]:
        keyed = {k: _canonical(getattr(self, k)) for k in _STRUCTURAL + _NUMERICAL}
        keyed["hop_seconds"] = self.hop
        keyed["weights"] = self.fingerprint or self.weights
        keyed["encoder_settings"] = _canonical(dict(self.encoder_settings))
        return keyed

    # ---- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["encoder_settings"] = _canonical(dict(self.encoder_settings))
        data["spec_format"] = SPEC_FORMAT
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmbeddingSpec:
        """Read a spec from any of the shapes apexmusic has written.

        Accepts ``encoder`` or the older ``name`` for the encoder, and fills the pooling
        fields of records written before they existed from their compat mode.
        """
        if not data:
            raise ConfigError("empty embedding spec")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["encoder"] = data.get("encoder") or data.get("name")
        if not values["encoder"]:
            raise ConfigError("the embedding spec does not name its encoder")
        for key in ("n_layers", "dim", "sample_rate"):
            if values.get(key) is None:
                raise ConfigError(f"the embedding spec lacks {key!r}")
            values[key] = int(values[key])
        values["segment_seconds"] = float(values.get("segment_seconds") or 30.0)
        hop = values.get("hop_seconds")
        values["hop_seconds"] = None if hop in (None, "", values["segment_seconds"]) else float(hop)
        values["compat"] = values.get("compat") or None
        reference = values["compat"] == REFERENCE
        values.setdefault("pad_last", reference)
        values.setdefault("pooling", "all_frames" if reference else "valid_frames")
        values.setdefault("segment_weighting", "uniform" if reference else "valid_seconds")
        values["weights"] = _none_if_blank(values.get("weights"))
        values["fingerprint"] = _none_if_blank(values.get("fingerprint"))
        values["encoder_settings"] = dict(values.get("encoder_settings") or {})
        return cls(**values)

    @classmethod
    def from_json(cls, text: str | bytes) -> EmbeddingSpec:
        try:
            return cls.from_dict(json.loads(text))
        except ValueError as exc:
            raise ConfigError(f"unreadable embedding spec: {exc}") from exc

    def with_(self, **changes: Any) -> EmbeddingSpec:
        return replace(self, **changes)


def check_compatible(
    model: EmbeddingSpec, data: EmbeddingSpec, *, data_name: str = "the vectors"
) -> list[str]:
    """The one compatibility rule. Raises SpecMismatchError; returns warnings (already logged).

    ``model`` is the spec a model was trained on; ``data`` the spec of the vectors (a store,
    the predictor's encoder, a Ray worker's encoder) it is about to score.
    """
    errors = []
    for key in _STRUCTURAL:
        a, b = _comparable(model, key), _comparable(data, key)
        if a != b:
            errors.append(f"{key}: model {a!r} vs {data_name} {b!r}")
    warnings = []
    if model.fingerprint and data.fingerprint:
        if model.fingerprint != data.fingerprint:
            errors.append(
                f"weights: model {model.weights!r} ({model.fingerprint}) vs {data_name} "
                f"{data.weights!r} ({data.fingerprint}) hold different values"
            )
    elif _canonical(model.weights) != _canonical(data.weights):
        unknown = "model" if not model.fingerprint else data_name
        warnings.append(
            f"cannot verify that {data_name}'s weights {data.weights!r} are the model's "
            f"{model.weights!r} ({unknown} records no weights fingerprint)"
        )
    for key in _NUMERICAL:
        a, b = getattr(model, key), getattr(data, key)
        if a is not None and b is not None and a != b:
            warnings.append(f"{key}: model {a!r} vs {data_name} {b!r} (small numerical differences)")
    if errors:
        raise SpecMismatchError(
            f"{data_name} were not embedded like the model's training data ({'; '.join(errors)})"
        )
    for message in warnings:
        log.warning("%s", message)
    return warnings


def weights_fingerprint(tensors: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
    """``"sha256:<hex>"`` of named arrays (a state dict) as loaded: names, dtypes, shapes, bytes.

    Independent of file format and location: a ``.bin`` and a ``.safetensors`` copy of the
    same weights, from the hub or a local folder, give the same fingerprint.
    """
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    digest = hashlib.sha256()
    for name, value in sorted(items, key=lambda kv: kv[0]):
        array = _as_numpy(value)
        digest.update(f"{name}|{array.dtype.str}|{array.shape}\n".encode())
        digest.update(np.ascontiguousarray(array).view(np.uint8).reshape(-1).data)
    return "sha256:" + digest.hexdigest()


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    detach = getattr(value, "detach", None)
    if detach is not None:  # a torch tensor; bf16 has no numpy dtype, so hash its bits
        tensor = detach().cpu().contiguous()
        if str(tensor.dtype) == "torch.bfloat16":
            import torch

            return tensor.view(torch.int16).numpy()
        return tensor.numpy()
    return np.asarray(value)


def _comparable(spec: EmbeddingSpec, key: str) -> Any:
    if key == "hop_seconds":
        return spec.hop
    return _canonical(getattr(spec, key))


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return _none_if_blank(value)


def _none_if_blank(value: Any) -> Any:
    return None if value in ("", "none", "None") else value

"""``PreferenceComparator``: a preference model shipped with a scoring model (comparator.json).

P(song A preferred over song B) from the two songs' predicted scores, used by
``apexmusic compare`` and the service.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apexmusic.arena.battles import Battles, battles_from_records
from apexmusic.arena.learned import SymmetricLogistic, decisive_differences
from apexmusic.errors import ConfigError, DataError, ModelLoadError
from apexmusic.tasks import ALL_TASKS

_COMPARATOR_TYPE = "apexmusic.arena.PreferenceComparator"


@dataclass
class PreferenceComparator:
    """P(song A preferred over song B) = sigmoid(sum_k coef_k · (a_k - b_k) / scale_k).

    L2 logistic regression (C) without intercept on score differences, fitted on the
    decisive battles (ties and BOTH_BAD are not used) with each battle also seen side-swapped,
    so ``prob_a_wins(a, b) == 1 - prob_a_wins(b, a)``. ``features`` defaults to the APEX
    scores the battles carry (all seven when present), else every score name.
    """

    features: tuple[str, ...] | None = None
    C: float = 1.0
    coef: np.ndarray | None = None
    scale: np.ndarray | None = None
    n_train: int = 0

    def fit(self, battles: Battles | Iterable[Mapping]) -> PreferenceComparator:
        if not isinstance(battles, Battles):
            battles = battles_from_records(battles)
        features = self.features or _default_features(battles.score_names)
        missing = [f for f in features if f not in battles.scores_a]
        if not features or missing:
            raise DataError(f"battles lack scores for {missing or 'any feature'}")
        x, y = decisive_differences(battles, tuple(features))
        if len(y) == 0:
            raise DataError("no decisive (A or B) battle with all feature scores to fit a comparator on")
        model = SymmetricLogistic(self.C).fit(x, y)
        self.features, self.coef, self.scale, self.n_train = tuple(features), model.coef, model.scale, len(y)
        return self

    def prob_a_wins(self, scores_a: Mapping[str, float], scores_b: Mapping[str, float]) -> float:
        if self.coef is None:
            raise ConfigError("PreferenceComparator is not fitted")
        missing = [f for f in self.features if f not in scores_a or f not in scores_b]
        if missing:
            raise DataError(f"scores lack {missing} needed by the comparator")
        diff = np.array([float(scores_a[f]) - float(scores_b[f]) for f in self.features])
        z = float((diff / self.scale) @ self.coef)
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def to_dict(self) -> dict:
        if self.coef is None:
            raise ConfigError("PreferenceComparator is not fitted")
        return {
            "type": _COMPARATOR_TYPE,
            "version": 1,
            "features": list(self.features),
            "C": self.C,
            "coef": [float(c) for c in self.coef],
            "scale": [float(s) for s in self.scale],
            "n_train": self.n_train,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> PreferenceComparator:
        try:
            if d.get("type") != _COMPARATOR_TYPE or d.get("version") != 1:
                raise ValueError(f"not a version-1 comparator (type {d.get('type')!r})")
            features = tuple(str(f) for f in d["features"])
            coef, scale = np.asarray(d["coef"], float), np.asarray(d["scale"], float)
            if not (len(features) == len(coef) == len(scale)) or not np.isfinite(coef).all():
                raise ValueError("features, coef and scale differ in length or are not finite")
            if not (scale > 0).all():
                raise ValueError("scale must be positive")
            return cls(features, float(d.get("C", 1.0)), coef, scale, int(d.get("n_train", 0)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelLoadError(f"invalid comparator: {exc}") from exc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> PreferenceComparator:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read comparator {path}: {exc}") from exc
        return cls.from_dict(data)


def _default_features(names: tuple[str, ...]) -> tuple[str, ...]:
    apex = tuple(t for t in ALL_TASKS if t in names)
    return apex or tuple(names)

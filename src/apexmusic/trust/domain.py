"""A domain-shift alarm: how unlike the training songs a song's model input is.

The distance is the Mahalanobis distance of the head's input vector (standardised, layers mixed:
what the trunk's first layer sees) to the training inputs, under a Ledoit–Wolf shrinkage
covariance, divided by ``√D`` so that training-like songs sit near 1. Shrinkage matters: with
hundreds of songs and hundreds of dimensions the sample covariance is (near) singular and its
inverse blows up along directions the training songs happened not to vary in; Ledoit–Wolf pulls
it towards a scaled identity by the amount that minimises the expected estimation error.

The threshold is calibrated on distances the covariance never saw: the validation split's under
the full fit, and each training song's under a fit on the other folds (:data:`CROSSFIT_FOLDS`).
It is the ``⌈(n + 1)(1 - r)⌉``-th smallest of those ``n`` distances, so that a new song from the
training distribution is flagged with probability about ``r`` (the requested false-alarm rate);
a fold fit has fewer songs than the full one, so its distances run slightly long and the real
rate slightly under ``r``. Cross-fitting matters on small data: the demo has 56 validation songs,
whose 98th percentile is their maximum, one outlier; with the 244 training songs added, the
threshold rests on 300 distances. With too few songs for ``r`` the largest distance is used and
the stated bound is ``1/(n + 1)`` instead. ``benchmarks/bench_trust.py`` compares this distance
with a kNN distance and with the RMS z-score on the demo corpus and real songs (docs/trust.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from apexmusic.errors import ConfigError

DEFAULT_FALSE_ALARM = 0.02
MAX_FIT_ROWS = 50_000  # rows for the covariance fit; more change nothing at D ≤ 1024
CROSSFIT_FOLDS = 5


@dataclass
class DomainModel:
    """Mean and shrinkage precision of training inputs, and a calibrated threshold."""

    mean: np.ndarray  # [D]
    precision: np.ndarray  # [D, D]
    threshold: float | None  # None: no calibration songs, the alarm cannot be stated
    false_alarm_rate: float  # requested
    false_alarm_bound: float | None  # what the calibration set supports
    shrinkage: float
    n_fit: int
    n_calibration: int  # distances the threshold rests on (validation + cross-fitted training)
    measured: dict[str, Any] | None = None  # false-alarm rate on the test split

    @property
    def dim(self) -> int:
        return len(self.mean)

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Normalised Mahalanobis distance ``sqrt(dᵀ P d / D)`` of each row ``[N, D]``."""
        x = np.atleast_2d(np.asarray(features, np.float64))
        if x.shape[1] != self.dim:
            raise ConfigError(f"domain features have dim {x.shape[1]}, the statistics {self.dim}")
        d = x - self.mean
        sq = np.einsum("nd,de,ne->n", d, self.precision, d)
        return np.sqrt(np.maximum(sq, 0.0) / self.dim)

    def in_domain(self, distances: np.ndarray) -> np.ndarray | None:
        """``True`` where the distance is within the threshold; ``None`` without a threshold."""
        if self.threshold is None:
            return None
        return np.asarray(distances) <= self.threshold

    def metadata(self) -> dict[str, Any]:
        return {
            "method": "Ledoit-Wolf shrinkage Mahalanobis on the head input / sqrt(dim); threshold on "
            "validation and cross-fitted training distances",
            "dim": self.dim,
            "threshold": self.threshold,
            "false_alarm_rate": self.false_alarm_rate,
            "false_alarm_bound": self.false_alarm_bound,
            "shrinkage": self.shrinkage,
            "n_fit": self.n_fit,
            "n_calibration": self.n_calibration,
            "measured_test": self.measured,
        }

    @classmethod
    def from_parts(cls, meta: dict[str, Any], mean: np.ndarray, precision: np.ndarray) -> DomainModel:
        if mean.shape != (meta["dim"],) or precision.shape != (meta["dim"], meta["dim"]):
            raise ConfigError(f"domain arrays {mean.shape}, {precision.shape} do not match dim {meta['dim']}")
        return cls(
            mean=mean.astype(np.float64),
            precision=precision.astype(np.float64),
            threshold=None if meta["threshold"] is None else float(meta["threshold"]),
            false_alarm_rate=float(meta["false_alarm_rate"]),
            false_alarm_bound=meta.get("false_alarm_bound"),
            shrinkage=float(meta["shrinkage"]),
            n_fit=int(meta["n_fit"]),
            n_calibration=int(meta["n_calibration"]),
            measured=meta.get("measured_test"),
        )


def fit_domain(
    train_features: np.ndarray,
    calibration_features: np.ndarray,
    false_alarm_rate: float = DEFAULT_FALSE_ALARM,
    seed: int = 0,
) -> DomainModel:
    """Fit the covariance on ``train_features``; the threshold on ``calibration_features`` and
    cross-fitted training distances."""
    from sklearn.covariance import LedoitWolf

    if not 0.0 < false_alarm_rate < 1.0:
        raise ConfigError(f"false-alarm rate must be in (0, 1), not {false_alarm_rate}")
    x = np.asarray(train_features, np.float64)
    if len(x) < 2:
        raise ConfigError(f"the domain statistics need at least 2 training songs, got {len(x)}")
    if len(x) > MAX_FIT_ROWS:
        x = x[np.random.default_rng(seed).choice(len(x), MAX_FIT_ROWS, replace=False)]
    lw = LedoitWolf().fit(x)
    model = DomainModel(
        mean=lw.location_,
        precision=lw.precision_,
        threshold=None,
        false_alarm_rate=false_alarm_rate,
        false_alarm_bound=None,
        shrinkage=float(lw.shrinkage_),
        n_fit=len(x),
        n_calibration=0,
    )
    held_out = [model.distance(calibration_features)] if len(calibration_features) else []
    held_out += _crossfit_distances(x, seed)
    d = np.sort(np.concatenate(held_out)) if held_out else np.zeros(0)
    model.n_calibration = n = len(d)
    if n:
        k = min(math.ceil((n + 1) * (1.0 - false_alarm_rate)), n)
        model.threshold = float(d[k - 1])
        model.false_alarm_bound = 1.0 - k / (n + 1)
    return model


def _crossfit_distances(x: np.ndarray, seed: int) -> list[np.ndarray]:
    """Each training row's distance under a covariance fitted on the other folds."""
    from sklearn.covariance import LedoitWolf

    if len(x) < 2 * CROSSFIT_FOLDS:
        return []
    folds = np.array_split(np.random.default_rng(seed).permutation(len(x)), CROSSFIT_FOLDS)
    out = []
    for fold in folds:
        rest = np.ones(len(x), bool)
        rest[fold] = False
        lw = LedoitWolf().fit(x[rest])
        out.append(np.sqrt(np.maximum(lw.mahalanobis(x[fold]), 0.0) / x.shape[1]))
    return out


def measure_false_alarms(model: DomainModel, features: np.ndarray) -> dict[str, Any] | None:
    """Share of in-domain songs ``features`` flagged out of domain (recorded on the model)."""
    if model.threshold is None or not len(features):
        return None
    flagged = ~model.in_domain(model.distance(features))
    model.measured = {"n": len(features), "flagged": int(flagged.sum()), "rate": float(flagged.mean())}
    return model.measured


def head_inputs(
    model: Any, layers: np.ndarray, index: np.ndarray | None = None, batch_size: int = 8192
) -> np.ndarray:
    """The vectors the head's trunk receives for song ``layers`` ``[N, L, D]`` (rows ``index``
    only, gathered batch by batch): standardised and mixed, ``[n, D]`` float64. ``model`` is a
    :class:`apexmusic.model.ScoringModel`."""
    import torch

    net = model.net
    rows = np.arange(len(layers)) if index is None else np.asarray(index)
    out = []
    with torch.no_grad():
        for s in range(0, len(rows), batch_size):
            chunk = np.asarray(layers[rows[s : s + batch_size]], np.float32)
            if chunk.ndim == 2:
                chunk = chunk[:, None, :]
            x = torch.from_numpy(np.ascontiguousarray(chunk)).to(model.device)
            out.append(net.mixer(net.prepare(x)).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.dim))

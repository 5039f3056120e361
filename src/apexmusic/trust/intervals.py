"""Split-conformal prediction intervals per task.

Fitted on songs the network never trained on (the validation split): for a level ``1 - α`` the
half-width ``q`` is the ``⌈(n + 1)(1 - α)⌉``-th smallest absolute residual of the ``n``
labelled validation songs. For a new song exchangeable with them, ``[ŷ - q, ŷ + q]`` holds the
true value with probability at least ``1 - α`` (and below ``1 - α + 1/(n + 1)``). Too few
validation labels for the level (``n < 1/α - 1``) make ``q`` infinite: the interval is the
task's whole range, which is what the evidence supports. Intervals are clipped to the range.

The validation split also chose the early-stopping epoch; that selection is one number out of
tens of epochs, and the test-split coverage stored next to ``q`` measures what it costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from apexmusic.errors import ConfigError
from apexmusic.tasks import TASKS

DEFAULT_LEVEL = 0.9


def conformal_quantile(residuals: np.ndarray, level: float) -> float:
    """The finite-sample-corrected ``level`` quantile of ``residuals`` (``inf`` if too few)."""
    r = np.sort(np.asarray(residuals, np.float64)[np.isfinite(residuals)])
    k = math.ceil((len(r) + 1) * level)
    return float(r[k - 1]) if 1 <= k <= len(r) else math.inf


@dataclass
class Intervals:
    """Half-widths per task at one level; ``coverage``/``width`` are measured on the test split."""

    level: float = DEFAULT_LEVEL
    half_width: dict[str, float] = field(default_factory=dict)
    n_calibration: dict[str, int] = field(default_factory=dict)
    coverage: dict[str, float | None] = field(default_factory=dict)
    mean_width: dict[str, float | None] = field(default_factory=dict)
    n_test: dict[str, int] = field(default_factory=dict)
    method: str = "split-conformal, absolute residuals, fitted on the validation split"
    cv_coverage: dict[str, float | None] = field(default_factory=dict)  # cross-conformal only
    n_cv: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.level < 1.0:
            raise ConfigError(f"interval level must be in (0, 1), not {self.level}")

    def bounds(self, task: str, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``lo``, ``hi`` arrays for ``scores`` of ``task``, clipped to the task's range."""
        spec = TASKS[task]
        s = np.asarray(scores, np.float64)
        q = self.half_width[task]
        return np.clip(s - q, spec.low, spec.high), np.clip(s + q, spec.low, spec.high)

    def apply(self, scores: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """``{task: {"lo": ..., "hi": ...}}`` for every task in ``scores`` that has intervals
        (scalars in, floats out; arrays in, arrays out)."""
        out = {}
        for task, value in scores.items():
            if task not in self.half_width or value is None:
                continue
            lo, hi = self.bounds(task, np.atleast_1d(value))
            scalar = np.ndim(value) == 0
            out[task] = {"lo": float(lo[0]) if scalar else lo, "hi": float(hi[0]) if scalar else hi}
        return out

    def heldout_coverage(self) -> dict[str, tuple[float | None, int]]:
        """Per task ``(coverage, n)`` over every held-out song measured: the test split, plus for
        cross-conformal intervals each training/validation song out of fold. Both kinds were
        scored by a network that never trained on them, against a half-width fitted without
        them, so they pool; the pooled count is what makes a per-task figure tight."""
        out = {}
        for task in self.half_width:
            parts = [
                (self.coverage.get(task), self.n_test.get(task, 0)),
                (self.cv_coverage.get(task), self.n_cv.get(task, 0)),
            ]
            parts = [(c, n) for c, n in parts if c is not None and n > 0]
            n = sum(n for _, n in parts)
            out[task] = (sum(c * n for c, n in parts) / n if n else None, n)
        return out

    def to_dict(self) -> dict[str, Any]:
        heldout = self.heldout_coverage()
        return {
            "method": self.method,
            "level": self.level,
            "half_width": {t: _json_float(q) for t, q in self.half_width.items()},
            "n_calibration": self.n_calibration,
            "coverage_test": self.coverage,
            "mean_width_test": self.mean_width,
            "n_test": self.n_test,
            **({"coverage_cv": self.cv_coverage, "n_cv": self.n_cv} if self.cv_coverage else {}),
            "coverage_heldout": {t: c for t, (c, _) in heldout.items()},
            "n_heldout": {t: n for t, (_, n) in heldout.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Intervals:
        return cls(
            level=float(d["level"]),
            half_width={t: math.inf if q is None else float(q) for t, q in d["half_width"].items()},
            n_calibration={t: int(n) for t, n in d.get("n_calibration", {}).items()},
            coverage=dict(d.get("coverage_test", {})),
            mean_width=dict(d.get("mean_width_test", {})),
            n_test={t: int(n) for t, n in d.get("n_test", {}).items()},
            method=str(d.get("method", cls.method)),
            cv_coverage=dict(d.get("coverage_cv", {})),
            n_cv={t: int(n) for t, n in d.get("n_cv", {}).items()},
        )


def fit_intervals(
    tasks: tuple[str, ...], y_cal: np.ndarray, pred_cal: np.ndarray, level: float = DEFAULT_LEVEL
) -> Intervals:
    """Half-widths from calibration labels ``y_cal`` (NaN = missing) and predictions ``[N, T]``."""
    intervals = Intervals(level=level)
    for i, task in enumerate(tasks):
        ok = np.isfinite(y_cal[:, i])
        intervals.half_width[task] = conformal_quantile(np.abs(y_cal[ok, i] - pred_cal[ok, i]), level)
        intervals.n_calibration[task] = int(ok.sum())
    return intervals


def fit_cross_conformal(
    tasks: tuple[str, ...],
    y: np.ndarray,
    oof_pred: np.ndarray,
    fold: np.ndarray,
    level: float = DEFAULT_LEVEL,
) -> Intervals:
    """Half-widths from out-of-fold residuals: ``oof_pred[i]`` comes from a model trained without
    song ``i`` (its ``fold``). Every labelled song calibrates, not just a validation split, so
    the half-width rests on several times more residuals. ``cv_coverage`` is measured the same
    way, out of fold: each fold's songs against the half-width of the other folds' residuals."""
    intervals = fit_intervals(tasks, y, oof_pred, level)
    folds = np.unique(fold)
    intervals.method = f"cross-conformal, absolute out-of-fold residuals of {len(folds)} fold models"
    for i, task in enumerate(tasks):
        r = np.abs(y[:, i] - oof_pred[:, i])
        ok = np.isfinite(r)
        covered = [r[ok & (fold == k)] <= conformal_quantile(r[ok & (fold != k)], level) for k in folds]
        hits = np.concatenate(covered) if covered else np.zeros(0, bool)
        intervals.n_cv[task] = len(hits)
        intervals.cv_coverage[task] = float(hits.mean()) if len(hits) else None
    return intervals


def measure(intervals: Intervals, tasks: tuple[str, ...], y: np.ndarray, pred: np.ndarray) -> Intervals:
    """Record each task's coverage and mean width on labelled songs ``y`` / ``pred`` ``[N, T]``."""
    for i, task in enumerate(tasks):
        ok = np.isfinite(y[:, i])
        intervals.n_test[task] = int(ok.sum())
        if not ok.any() or task not in intervals.half_width:
            intervals.coverage[task] = intervals.mean_width[task] = None
            continue
        lo, hi = intervals.bounds(task, pred[ok, i])
        inside = (y[ok, i] >= lo) & (y[ok, i] <= hi)
        intervals.coverage[task] = float(inside.mean())
        intervals.mean_width[task] = float((hi - lo).mean())
    return intervals


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no inf: null = the whole range

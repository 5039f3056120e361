"""Regression and ranking metrics with bootstrap 95% intervals, and the evaluation report.

Per task: MSE, MAE, Pearson, Spearman, Kendall (tau-b) and R². Point values come from scipy
on all labelled songs; intervals are percentile intervals over ``n_boot`` bootstrap resamples
of songs, computed for all resamples at once (index matrix ``[B, n]``; Kendall through pair
counts weighted by each song's multiplicity, which is exactly tau-b of the resample).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from apexmusic.jsonio import write_json
from apexmusic.paths import output_dir

log = logging.getLogger(__name__)

METRICS = ("mse", "mae", "pearson", "spearman", "kendall", "r2")
KENDALL_MATRIX_MAX_N = 2500  # above this, bootstrap Kendall loops over scipy (O(n log n) each)


def regression_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Metrics of one task; pairs with a missing label are ignored.

    Returns ``{metric: value, metric_ci_low: ..., metric_ci_high: ..., "n": count}``; values
    that are undefined (e.g. a correlation with a constant prediction) are NaN.
    """
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    ok = np.isfinite(y_true) & np.isfinite(y_pred)
    t, p = y_true[ok], y_pred[ok]
    out: dict[str, float] = {"n": int(len(t))}
    out.update(_point_metrics(t, p))
    if n_boot > 0 and len(t) >= 3:
        boot = _bootstrap_metrics(t, p, n_boot, np.random.default_rng(seed))
        alpha = (1.0 - level) / 2.0
        for name in METRICS:
            values = boot[name][np.isfinite(boot[name])]
            lo, hi = np.quantile(values, [alpha, 1 - alpha]) if len(values) else (np.nan, np.nan)
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = float(lo), float(hi)
    return out


def _point_metrics(t: np.ndarray, p: np.ndarray) -> dict[str, float]:
    n = len(t)
    if n == 0:
        return dict.fromkeys(METRICS, math.nan)
    err = p - t
    varying = n >= 2 and np.ptp(t) > 0 and np.ptp(p) > 0
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    return {
        "mse": float(np.mean(err**2)),
        "mae": float(np.mean(np.abs(err))),
        "pearson": float(stats.pearsonr(t, p)[0]) if varying else math.nan,
        "spearman": float(stats.spearmanr(t, p)[0]) if varying else math.nan,
        "kendall": float(stats.kendalltau(t, p)[0]) if varying else math.nan,
        "r2": 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else math.nan,
    }


def _bootstrap_metrics(t: np.ndarray, p: np.ndarray, n_boot: int, rng: np.random.Generator) -> dict:
    n = len(t)
    idx = rng.integers(0, n, size=(n_boot, n))
    bt, bp = t[idx], p[idx]
    err = bp - bt
    ss_res = np.sum(err**2, axis=1)
    ss_tot = np.sum((bt - bt.mean(1, keepdims=True)) ** 2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "mse": ss_res / n,
            "mae": np.mean(np.abs(err), axis=1),
            "r2": np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.nan),
            "pearson": _rowwise_pearson(bt, bp),
            "spearman": rowwise_spearman(bt, bp),
        }
    counts = np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float64)
    out["kendall"] = (
        _kendall_from_counts(t, p, counts)
        if n <= KENDALL_MATRIX_MAX_N
        else np.array([stats.kendalltau(a, b)[0] for a, b in zip(bt, bp, strict=True)])
    )
    return out


def rowwise_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row pair of ``[R, n]`` arrays (average ranks for ties;
    NaN where a row is constant)."""
    return _rowwise_pearson(stats.rankdata(a, axis=1), stats.rankdata(b, axis=1))


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    denom = np.sqrt(np.sum(a * a, 1) * np.sum(b * b, 1))
    return np.where(denom > 0, np.sum(a * b, 1) / np.where(denom > 0, denom, 1.0), np.nan)


def _kendall_from_counts(t: np.ndarray, p: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Kendall tau-b of every resample, given each song's multiplicity ``counts [B, n]``.

    Pairs of distinct songs are concordant/discordant/tied by the sign matrices; copies of the
    same song form pairs tied in both variables.
    """
    sx, sy = np.sign(t[:, None] - t[None, :]), np.sign(p[:, None] - p[None, :])
    m = counts.shape[1]

    def pair_sum(matrix: np.ndarray) -> np.ndarray:  # sum over i != j of c_i c_j M_ij, halved
        return 0.5 * np.einsum("bi,bi->b", counts @ matrix, counts)

    s = pair_sum(sx * sy)
    same_x = pair_sum((sx == 0).astype(np.float64)) - 0.5 * m  # includes copies of a song
    same_y = pair_sum((sy == 0).astype(np.float64)) - 0.5 * m
    n0 = m * (m - 1) / 2.0
    denom = np.sqrt((n0 - same_x) * (n0 - same_y))
    return np.where(denom > 0, s / np.where(denom > 0, denom, 1.0), np.nan)


# ---- the evaluation report -----------------------------------------------------------------


@dataclass
class Evaluation:
    """Held-out metrics of a model, ranked lists and per-platform breakdowns."""

    metrics: dict[str, dict[str, float]]
    rankings: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    per_platform: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def summary(self, metric: str = "spearman") -> dict[str, float]:
        return {task: m.get(metric, math.nan) for task, m in self.metrics.items()}


def evaluate_predictions(
    ids: list[str],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    tasks: tuple[str, ...],
    platforms: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    top_k: int = 10,
) -> Evaluation:
    """Metrics per task (labelled songs only), top/bottom-k by prediction, per platform."""
    metrics, rankings, per_platform = {}, {}, {}
    for i, task in enumerate(tasks):
        metrics[task] = regression_metrics(y_true[:, i], y_pred[:, i], n_boot=n_boot, seed=seed)
        rankings[task] = _ranked(ids, y_true[:, i], y_pred[:, i], top_k)
        if platforms is not None:
            names = sorted({str(x) for x in platforms})
            if len(names) > 1:
                per_platform[task] = {
                    name: regression_metrics(
                        y_true[platforms == name, i], y_pred[platforms == name, i], n_boot=0
                    )
                    for name in names
                }
    return Evaluation(metrics, rankings, per_platform)


def _ranked(ids: list[str], y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict[str, list[dict]]:
    order = np.argsort(-y_pred, kind="stable")

    def rows(index: np.ndarray) -> list[dict[str, Any]]:
        return [
            {
                "id": ids[j],
                "predicted": float(y_pred[j]),
                "actual": float(y_true[j]) if np.isfinite(y_true[j]) else None,
            }
            for j in index
        ]

    return {"top": rows(order[:k]), "bottom": rows(order[::-1][:k])}


def write_evaluation(evaluation: Evaluation, out_dir: str | Path) -> Path:
    """``metrics.json`` (``{task: {metric: value}}``), ``rankings.json``, ``per_platform.json``."""
    out_dir = Path(out_dir)
    output_dir(out_dir)
    write_json(evaluation.metrics, out_dir / "metrics.json")
    write_json(evaluation.rankings, out_dir / "rankings.json")
    if evaluation.per_platform:
        write_json(evaluation.per_platform, out_dir / "per_platform.json")
    return out_dir / "metrics.json"

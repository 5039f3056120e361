"""Metrics equal independent computations; bootstrap intervals behave; reports are strict JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from apexmusic.metrics import _kendall_from_counts, evaluate_predictions, regression_metrics, write_evaluation


def _data(n=300, seed=0, noise=1.0, ties=True):
    rng = np.random.default_rng(seed)
    t = rng.normal(3, 1, n)
    if ties:
        t = np.round(t * 2) / 2  # SongEval half steps: many ties
    return t, t + rng.normal(0, noise, n)


def test_point_metrics_equal_scipy_and_sklearn():
    t, p = _data()
    m = regression_metrics(t, p, n_boot=0)
    assert m["n"] == 300
    assert m["mse"] == pytest.approx(mean_squared_error(t, p))
    assert m["mae"] == pytest.approx(mean_absolute_error(t, p))
    assert m["r2"] == pytest.approx(r2_score(t, p))
    assert m["pearson"] == pytest.approx(stats.pearsonr(t, p)[0])
    assert m["spearman"] == pytest.approx(stats.spearmanr(t, p)[0])
    assert m["kendall"] == pytest.approx(stats.kendalltau(t, p)[0])


def test_vectorised_bootstrap_kendall_equals_scipy_per_resample():
    t, p = _data(n=120, seed=1)
    rng = np.random.default_rng(2)
    idx = rng.integers(0, 120, (20, 120))
    counts = np.stack([np.bincount(r, minlength=120) for r in idx]).astype(float)
    expected = [stats.kendalltau(t[r], p[r])[0] for r in idx]
    np.testing.assert_allclose(_kendall_from_counts(t, p, counts), expected, rtol=1e-10)


def test_bootstrap_intervals_cover_and_shrink_with_more_songs():
    small = regression_metrics(*_data(n=100, seed=3), n_boot=500, seed=1)
    large = regression_metrics(*_data(n=2000, seed=3), n_boot=300, seed=1)
    for name in ("mse", "mae", "pearson", "spearman", "kendall", "r2"):
        assert small[f"{name}_ci_low"] <= small[name] <= small[f"{name}_ci_high"], name
        width = lambda m, k=name: m[f"{k}_ci_high"] - m[f"{k}_ci_low"]  # noqa: E731
        assert width(large) < width(small), name
    # Bootstrap spread matches the textbook standard error of a mean absolute error.
    t, p = _data(n=2000, seed=3)
    se = np.abs(p - t).std() / np.sqrt(2000)
    assert large["mae_ci_high"] - large["mae_ci_low"] == pytest.approx(2 * 1.96 * se, rel=0.25)
    same = regression_metrics(*_data(n=100, seed=3), n_boot=500, seed=1)
    assert same == small


def test_missing_labels_are_ignored_and_undefined_values_are_nan():
    t, p = _data(n=50)
    t_missing = t.copy()
    t_missing[::5] = np.nan
    m = regression_metrics(t_missing, p, n_boot=0)
    keep = np.isfinite(t_missing)
    assert m["n"] == keep.sum() and m["spearman"] == pytest.approx(stats.spearmanr(t[keep], p[keep])[0])
    const = regression_metrics(t, np.full(50, 3.0), n_boot=50)
    assert np.isnan(const["spearman"]) and np.isfinite(const["mae"])


def test_evaluation_report_files(tmp_path):
    rng = np.random.default_rng(4)
    n = 60
    y = np.column_stack([rng.uniform(0, 100, n), rng.uniform(1, 5, n)])
    pred = y + rng.normal(0, [10, 0.5], (n, 2))
    pred[:, 1] = 3.0  # constant prediction: undefined correlations become null
    y[:5, 0] = np.nan
    platforms = np.array(["suno", "udio"] * 30, dtype=object)
    ids = [f"s{i}" for i in range(n)]
    ev = evaluate_predictions(ids, y, pred, ("score_streams", "clarity"), platforms, n_boot=50)
    write_evaluation(ev, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"score_streams", "clarity"} and metrics["clarity"]["spearman"] is None
    assert metrics["score_streams"]["n"] == 55
    ranked = json.loads((tmp_path / "rankings.json").read_text())["score_streams"]
    assert [r["id"] for r in ranked["top"]] == [ids[i] for i in np.argsort(-pred[:, 0])[:10]]
    assert [r["id"] for r in ranked["bottom"]] == [ids[i] for i in np.argsort(pred[:, 0])[:10]]
    per = json.loads((tmp_path / "per_platform.json").read_text())
    suno = platforms == "suno"
    ok = suno & np.isfinite(y[:, 0])
    assert per["score_streams"]["suno"]["spearman"] == pytest.approx(
        stats.spearmanr(y[ok, 0], pred[ok, 0])[0]
    )

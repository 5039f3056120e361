"""Held-out evaluation of the demo's models: test songs and held-out styles, the mean-predictor
baseline, the label ceiling, per-style metrics, predictions.csv."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from apexmusic.tasks import ALL_TASKS, POPULARITY_TASKS


def _evaluate(out: Path, corpus, config, ds_in, ds_held, styles_in, styles_held, full, pop) -> dict:
    from apexmusic.metrics import evaluate_predictions, regression_metrics
    from apexmusic.train import predict_dataset

    test = full.split.test
    ds_test = ds_in.subset(test)
    y_test = ds_test.targets  # full task order = ALL_TASKS
    pred_full = predict_dataset(full.model, ds_test)
    pred_pop = predict_dataset(pop.model, replace(ds_test, tasks=pop.model.tasks))
    train_mean = np.nanmean(ds_in.subset(full.split.train).targets, axis=0)

    held_full = predict_dataset(full.model, ds_held)
    held_pop = predict_dataset(pop.model, replace(ds_held, tasks=pop.model.tasks))
    y_held = ds_held.targets
    held_eval = evaluate_predictions(
        ds_held.labels.ids,
        y_held,
        held_full,
        ALL_TASKS,
        np.asarray(styles_held, dtype=object),
        n_boot=config.n_boot,
        seed=config.train_seed,
    )
    held_pop_eval = evaluate_predictions(
        ds_held.labels.ids,
        y_held[:, :2],
        held_pop,
        POPULARITY_TASKS,
        n_boot=config.n_boot,
        seed=config.train_seed,
    )

    mean_baseline = {}
    for i, task in enumerate(ALL_TASKS):
        constant = np.full(len(y_test), train_mean[i])
        mse_model = regression_metrics(y_test[:, i], pred_full[:, i], n_boot=0)["mse"]
        mse_mean = regression_metrics(y_test[:, i], constant, n_boot=0)["mse"]
        mean_baseline[task] = {
            "mse_model": mse_model,
            "mse_mean_predictor": mse_mean,
            "skill": 1.0 - mse_model / mse_mean if mse_mean > 0 else math.nan,
        }

    truth = _truth_table(corpus)
    ceiling = _label_ceiling(truth, ds_test.labels.ids, y_test, pred_full)
    per_style = _per_style(
        np.concatenate([styles_in[test], styles_held]),
        np.concatenate([y_test, y_held]),
        np.concatenate([pred_full, held_full]),
    )
    _write_predictions(
        out / "predictions.csv",
        ds_test,
        ds_held,
        styles_in[test],
        styles_held,
        y_test,
        y_held,
        pred_full,
        held_full,
        pred_pop,
        held_pop,
    )
    return {
        "test_songs": {
            "n": len(test),
            "multi_task": full.evaluation.metrics,
            "popularity_only": pop.evaluation.metrics,
            "mean_predictor": mean_baseline,
        },
        "heldout_styles": {
            "n": len(ds_held),
            "styles": list(corpus.heldout_styles),
            "multi_task": held_eval.metrics,
            "popularity_only": held_pop_eval.metrics,
        },
        "per_style_spearman": per_style,
        "label_ceiling": ceiling,
    }


def _truth_table(corpus) -> dict[str, dict[str, str]]:
    return _rows_by_id(corpus.truth_path)


def _rows_by_id(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {r["id"]: r for r in csv.DictReader(f)}


def _label_ceiling(truth, ids, y, pred) -> dict[str, dict[str, float]]:
    """How well the hidden (noise-free) factor itself ranks the noisy rater means, next to how
    well the model's prediction ranks the hidden factor: the ratings' noise caps any model."""
    from scipy.stats import spearmanr

    out = {}
    for i, task in enumerate(ALL_TASKS[2:], start=2):
        z = np.array([float(truth[s][f"z_{task}"]) for s in ids])
        ok = np.isfinite(y[:, i])
        out[task] = {
            "hidden_vs_label": float(spearmanr(z[ok], y[ok, i])[0]),
            "model_vs_hidden": float(spearmanr(z, pred[:, i])[0]),
        }
    return out


def _per_style(styles: np.ndarray, y: np.ndarray, pred: np.ndarray) -> dict[str, dict[str, Any]]:
    from scipy.stats import spearmanr

    out: dict[str, dict[str, Any]] = {}
    for style in sorted(set(styles.tolist())):
        m = styles == style
        row: dict[str, Any] = {"n": int(m.sum())}
        for i, task in enumerate(ALL_TASKS):
            ok = m & np.isfinite(y[:, i])
            rho = spearmanr(y[ok, i], pred[ok, i])[0] if ok.sum() >= 5 and np.ptp(pred[ok, i]) > 0 else None
            row[task] = None if rho is None or not np.isfinite(rho) else float(rho)
        out[style] = row
    return out


def _write_predictions(
    path: Path, ds_test, ds_held, st_test, st_held, y_test, y_held, p_full, h_full, p_pop, h_pop
) -> None:
    header = ["id", "style", "group"]
    header += [f"true_{t}" for t in ALL_TASKS] + [f"pred_{t}" for t in ALL_TASKS]
    header += [f"poponly_{t}" for t in POPULARITY_TASKS]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for group, ds, st, y, p, pp in (
            ("test", ds_test, st_test, y_test, p_full, p_pop),
            ("heldout_style", ds_held, st_held, y_held, h_full, h_pop),
        ):
            for k, song_id in enumerate(ds.labels.ids):
                w.writerow([song_id, st[k], group, *_fmt_row(y[k]), *_fmt_row(p[k]), *_fmt_row(pp[k])])


def _fmt_row(values) -> list[str]:
    return ["" if not np.isfinite(v) else f"{float(v):.4f}" for v in values]

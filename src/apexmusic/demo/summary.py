"""The demo's headline numbers and the comparison of encoders (paired bootstrap differences)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from apexmusic.demo.evaluation import _rows_by_id
from apexmusic.metrics import rowwise_spearman
from apexmusic.tasks import AESTHETIC_TASKS, ALL_TASKS, POPULARITY_TASKS


def _headline(evaluation: dict, arena: dict) -> dict[str, Any]:
    test = evaluation["test_songs"]
    held = evaluation["heldout_styles"]

    def spearman(metrics: dict, tasks) -> dict[str, float]:
        return {t: metrics[t]["spearman"] for t in tasks if t in metrics}

    aes_test = spearman(test["multi_task"], AESTHETIC_TASKS)
    rules = arena["rules"]
    learned = arena["learned"]
    return {
        "test_spearman": spearman(test["multi_task"], ALL_TASKS),
        "test_spearman_ci": {
            t: [test["multi_task"][t].get("spearman_ci_low"), test["multi_task"][t].get("spearman_ci_high")]
            for t in ALL_TASKS
        },
        "test_aesthetic_spearman_mean": float(np.mean(list(aes_test.values()))),
        "test_popularity_spearman_multi_task": spearman(test["multi_task"], POPULARITY_TASKS),
        "test_popularity_spearman_popularity_only": spearman(test["popularity_only"], POPULARITY_TASKS),
        "test_skill_vs_mean_predictor": {t: v["skill"] for t, v in test["mean_predictor"].items()},
        "heldout_style_spearman": spearman(held["multi_task"], ALL_TASKS),
        "heldout_style_aesthetic_spearman_mean": float(
            np.mean(list(spearman(held["multi_task"], AESTHETIC_TASKS).values()))
        ),
        "arena_rule_accuracy": {
            k: rules[k]["accuracy"]
            for k in ("apex_popularity_z", "apex_aesthetics_z", "apex_all_z")
            if k in rules
        },
        "arena_rule_accuracy_ci": {
            k: rules[k]["accuracy_ci"]
            for k in ("apex_popularity_z", "apex_aesthetics_z", "apex_all_z")
            if k in rules
        },
        "arena_learned_auc": {
            name: {m: v["auc_mean"] for m, v in entry.items()} for name, entry in learned.items()
        },
        "arena_learned_accuracy": {
            name: {m: v["accuracy_mean"] for m, v in entry.items()} for name, entry in learned.items()
        },
        "arena_hidden_preference_accuracy": arena["hidden_preference_accuracy"],
    }


def _compare(primary: str, main: dict, others: dict, out: Path, n_boot: int) -> dict[str, Any]:
    """Per encoder the held-out headline numbers, and which encoder wins each."""
    encoders = {primary: main, **{k: v["headline"] for k, v in others.items()}}
    keys = {
        "test_aesthetic_spearman_mean": lambda h: h["test_aesthetic_spearman_mean"],
        "test_streams_spearman": lambda h: h["test_spearman"]["score_streams"],
        "test_likes_spearman": lambda h: h["test_spearman"]["score_likes"],
        "heldout_style_aesthetic_spearman_mean": lambda h: h["heldout_style_aesthetic_spearman_mean"],
        "arena_lr_auc_with_aesthetics": lambda h: (
            h["arena_learned_auc"].get("popularity+aesthetics", {}).get("logistic_regression")
        ),
    }
    table = {name: {k: f(h) for k, f in keys.items()} for name, h in encoders.items()}
    winners = {}
    for k in keys:
        vals = {n: v[k] for n, v in table.items() if v[k] is not None and np.isfinite(v[k])}
        winners[k] = max(vals, key=vals.get) if vals else None
    differences = {
        name: _paired_difference(out / "predictions.csv", out / "compare" / name / "predictions.csv", n_boot)
        for name in others
    }
    return {
        "metrics": table,
        "best": winners,
        "paired_difference_vs_" + primary: differences,
        "timings_s": {k: v["timings_s"] for k, v in others.items()},
    }


def _paired_difference(primary_csv: Path, other_csv: Path, n_boot: int, seed: int = 0) -> dict[str, Any]:
    """Spearman(other) - Spearman(primary) on the same songs, with a paired bootstrap 95% interval
    (songs resampled once for both encoders), per group (test songs, held-out styles) and for the
    mean over the aesthetic tasks and each popularity task."""
    a, b = _rows_by_id(primary_csv), _rows_by_id(other_csv)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for group in ("test", "heldout_style"):
        ids = sorted(i for i in a if i in b and a[i]["group"] == group == b[i]["group"])
        if len(ids) < 5:
            continue
        boot = rng.integers(0, len(ids), (n_boot, len(ids)))
        result: dict[str, Any] = {"n": len(ids)}
        for name, tasks in (("aesthetic_mean", AESTHETIC_TASKS), *((t, (t,)) for t in POPULARITY_TASKS)):
            diffs = []
            for rows in (np.arange(len(ids))[None, :], boot):
                per_task = []
                for t in tasks:
                    y = np.array([float(a[i][f"true_{t}"]) for i in ids])
                    pa = np.array([float(a[i][f"pred_{t}"]) for i in ids])
                    pb = np.array([float(b[i][f"pred_{t}"]) for i in ids])
                    per_task.append(rowwise_spearman(y[rows], pb[rows]) - rowwise_spearman(y[rows], pa[rows]))
                diffs.append(np.mean(per_task, axis=0))
            lo, hi = np.nanquantile(diffs[1], [0.025, 0.975])
            result[name] = {"difference": float(diffs[0][0]), "ci": [float(lo), float(hi)]}
        out[group] = result
    return out

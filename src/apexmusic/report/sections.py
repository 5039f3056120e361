"""Report sections for any evaluation folder: scatter, metric bars, per-platform table,
training curves, arena accuracy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from apexmusic.report.reading import _read_csv
from apexmusic.report.render import (
    LEGEND_PT,
    TICK_PT,
    _bars_with_ci,
    _ci,
    _figure,
    _img,
    _legend_outside,
    _nan,
    _num,
    _table,
)
from apexmusic.tasks import AESTHETIC_TASKS, ALL_TASKS, POPULARITY_TASKS, TASKS


def _scatter_section(path: Path) -> str:
    rows = _read_csv(path)
    if not rows or f"true_{ALL_TASKS[0]}" not in rows[0]:
        return ""
    tasks = [t for t in ALL_TASKS if f"pred_{t}" in rows[0]]
    fig = _figure(figsize=(12, 6.5))  # shown at its pixel size in the 1100 px page column
    axes = fig.subplots(2, math.ceil(len(tasks) / 2))
    groups = sorted({r.get("group", "") for r in rows})
    colours = {"test": "#4c72b0", "heldout_style": "#dd8452"}
    for ax, task in zip(axes.ravel(), tasks, strict=False):
        for g in groups:
            sel = [r for r in rows if r.get("group", "") == g and r[f"true_{task}"] and r[f"pred_{task}"]]
            x = np.array([float(r[f"true_{task}"]) for r in sel])
            y = np.array([float(r[f"pred_{task}"]) for r in sel])
            ax.scatter(x, y, s=9, alpha=0.6, color=colours.get(g), label=g.replace("_", " ") or "songs")
        lo, hi = TASKS[task].low, TASKS[task].high
        ax.plot([lo, hi], [lo, hi], color="#999", lw=0.8)
        ax.set_title(TASKS[task].label, fontsize=10)
        ax.set_xlabel("true", fontsize=8)
        ax.set_ylabel("predicted", fontsize=8)
    for ax in axes.ravel()[len(tasks) :]:
        ax.axis("off")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=max(len(labels), 1), fontsize=LEGEND_PT)
    return "<h2>Predicted vs true</h2>" + _img(fig)


def _metric_bars_section(metrics: dict, name: str) -> str:
    if not metrics:
        return ""
    groups = {name: metrics}
    rows = [
        [
            TASKS[t].label if t in TASKS else t,
            _ci(m, "spearman"),
            _ci(m, "pearson"),
            _num(m.get("mae")),
            _num(m.get("r2")),
            str(m.get("n", "")),
        ]
        for t, m in metrics.items()
    ]
    return (
        "<h2>Metrics</h2>"
        + _table(["task", "Spearman", "Pearson", "MAE", "R²", "n"], rows)
        + _img(_bars_with_ci(groups, "spearman", tasks=tuple(metrics)))
    )


def _per_platform_section(per_platform: dict) -> str:
    if not per_platform:
        return ""
    platforms = sorted({p for by_task in per_platform.values() for p in by_task})
    rows = []
    for task, by_platform in per_platform.items():
        label = TASKS[task].label if task in TASKS else task
        rows.append([label, *[_num(by_platform.get(p, {}).get("spearman")) for p in platforms]])
    header = ["task", *[f"{p} (n={_platform_n(per_platform, p)})" for p in platforms]]
    return "<h2>Spearman per platform</h2>" + _table(header, rows)


def _platform_n(per_platform: dict, platform: str) -> int:
    return max(int(by.get(platform, {}).get("n", 0)) for by in per_platform.values())


def _training_section(logs: list[Path]) -> str:
    from matplotlib.lines import Line2D

    fig = _figure(figsize=(12, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    styles = ["-", "--", ":", "-."]
    colours = {task: f"C{i}" for i, task in enumerate(ALL_TASKS)}
    runs, tasks = [], []
    for k, path in enumerate(logs):
        recs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        name, style = path.stem.replace("train_", ""), styles[k % len(styles)]
        runs.append((name, style))
        epochs = [r["epoch"] for r in recs]
        ax1.plot(epochs, [r.get("train_loss") for r in recs], color=f"C{k}", label=f"{name} train")
        if any("val_loss" in r for r in recs):
            ax1.plot(
                epochs, [r.get("val_loss") for r in recs], color=f"C{k}", ls="--", label=f"{name} validation"
            )
        for task in recs[-1].get("val_spearman") or {}:
            tasks += [task] if task not in tasks else []
            values = [_nan((r.get("val_spearman") or {}).get(task)) for r in recs]
            ax2.plot(epochs, values, color=colours.get(task, "k"), ls=style, lw=1.2)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss (uncertainty-weighted)")
    ax1.set_title("Loss")
    _legend_outside(ax1)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation Spearman")
    ax2.set_title("Validation Spearman per task")
    # one entry per task (colour) and per run (line style), not one per line
    handles = [
        Line2D([], [], color=colours.get(t, "k"), label=TASKS[t].label if t in TASKS else t) for t in tasks
    ]
    if len(runs) > 1:
        handles += [Line2D([], [], color="#444", ls=style, label=name) for name, style in runs]
    if handles:
        ax2.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=LEGEND_PT)
    return "<h2>Training curves</h2>" + _img(fig)


def _arena_section(arena: dict, summary: dict | None) -> str:
    rules = arena.get("rules", {})
    names = [n for n in rules if rules[n].get("accuracy") is not None]
    fig = _figure(figsize=(12, 3.8))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    acc = np.array([rules[n]["accuracy"] for n in names])
    ci = np.array([rules[n].get("accuracy_ci") or [a, a] for n, a in zip(names, acc, strict=True)])
    colours = [
        "#55a868"
        if n in AESTHETIC_TASKS or "aesthetic" in n
        else "#4c72b0"
        if n in POPULARITY_TASKS or "popularity" in n
        else "#8172b2"
        for n in names
    ]
    ax1.bar(range(len(names)), acc, yerr=[acc - ci[:, 0], ci[:, 1] - acc], color=colours, capsize=3)
    ax1.axhline(0.5, color="#999", ls=":", label="chance")
    oracle = (summary or {}).get("arena", {}).get("hidden_preference_accuracy")
    if oracle:
        ax1.axhline(oracle, color="#c44e52", ls="--", label="hidden preference (ceiling)")
    ax1.set_xticks(
        range(len(names)), names, rotation=35, ha="right", rotation_mode="anchor", fontsize=TICK_PT
    )
    ax1.set_ylabel("accuracy (ties = 0.5)")
    ax1.set_title("Zero-shot rule: the higher score wins (95% CI)")
    _legend_outside(ax1, below=True)
    ax1.set_ylim(0.3, 1.0)
    learned = arena.get("learned", {})
    sets = [s for s in learned if "logistic_regression" in learned[s]]
    width = 0.38
    for k, model in enumerate(("logistic_regression", "gradient_boosting")):
        vals = [learned[s].get(model, {}).get("auc_mean", np.nan) for s in sets]
        errs = [learned[s].get(model, {}).get("auc_sd", 0.0) for s in sets]
        ax2.bar(
            np.arange(len(sets)) + (k - 0.5) * width,
            vals,
            width,
            yerr=errs,
            capsize=3,
            label=model.replace("_", " "),
        )
    ax2.axhline(0.5, color="#999", ls=":")
    ax2.set_xticks(range(len(sets)), sets, fontsize=TICK_PT)
    ax2.set_ylim(0.3, 1.0)
    ax2.set_ylabel("AUC (k-fold CV mean ± sd)")
    ax2.set_title("Learned on score differences")
    _legend_outside(ax2, below=True)
    rows = []
    for s in sets:
        for model in ("logistic_regression", "gradient_boosting"):
            m = learned[s].get(model)
            if m:
                rows.append(
                    [
                        f"{s} · {model.replace('_', ' ')}",
                        f"{m['accuracy_mean']:.3f} ± {m['accuracy_sd']:.3f}",
                        f"{m['auc_mean']:.3f} ± {m['auc_sd']:.3f}",
                    ]
                )
    paper = arena.get("paper_protocol", {})
    for model, m in paper.get("models", {}).items():
        if "skipped" in m:
            continue
        published = paper["published"][model]
        auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
        rows.append(
            [
                f"paper protocol · {model.replace('_', ' ')}",
                f"{m['accuracy']:.3f}",
                f"{auc} (paper {published['auc']:.3f})",
            ]
        )
    data = arena.get("data", {})
    return (
        f"<h2>Arena: pairwise preferences</h2><p>{data.get('n_battles', data.get('n', ''))} battles "
        "between songs of styles the model never saw. Left: each score used alone as a zero-shot "
        "rule. Right: with and without the aesthetic scores as features. The paper's five "
        "classifiers (its protocol: out-of-fold AUC) stand beside its published AUC.</p>"
        + _img(fig)
        + _table(["features · model", "accuracy", "AUC"], rows)
    )

"""Self-contained HTML reports: plots as inline PNGs (matplotlib, Agg), no external assets.

``write_report(source_dir, out_file)`` reads whatever evaluation outputs ``source_dir`` holds
and draws a section for each:

- ``summary.json`` (from ``apexmusic demo``): headline table, mean-predictor and label-ceiling
  comparisons, per-style breakdown, encoder comparison, and the framing of simulated data;
- ``predictions.csv``: predicted vs true scatter per task;
- ``metrics.json`` (``apexmusic evaluate``, also ``model/eval/``): metric bars with intervals;
- ``logs/*.jsonl`` or ``*.jsonl`` training logs: loss and validation-Spearman curves;
- ``arena/arena_metrics.json`` or ``arena_metrics.json``: arena accuracy with intervals, with
  and without aesthetic scores.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from apexmusic.errors import InputError
from apexmusic.paths import output_dir
from apexmusic.tasks import AESTHETIC_TASKS, ALL_TASKS, POPULARITY_TASKS, TASKS

log = logging.getLogger(__name__)

# Figures are shown at their pixel size (dpi 90); below ~8 pt text is hard to read there.
TICK_PT, LEGEND_PT = 9, 9

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em} th,td{border:1px solid #ddd;padding:.3em .6em;
text-align:right} th:first-child,td:first-child{text-align:left} th{background:#f4f4f4}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.6em 1em;margin:1em 0}
img{max-width:100%;height:auto;display:block;margin:.8em 0} .muted{color:#666;font-size:.9em}
"""


def write_report(source: str | Path, out_file: str | Path) -> Path:
    """Write one HTML page about the evaluation outputs in ``source``; return its path."""
    source = Path(source)
    if not source.is_dir():
        raise InputError(f"{source} is not a folder of evaluation outputs")
    parts = _sections(source)
    if not parts:
        raise InputError(
            f"nothing to report in {source}: expected summary.json, predictions.csv, metrics.json, "
            "training logs (*.jsonl) or arena_metrics.json"
        )
    title = (
        "apexmusic demo report" if (source / "summary.json").is_file() else f"apexmusic report: {source.name}"
    )
    page = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>" + "".join(parts) + "</body></html>"
    )
    out_file = Path(out_file)
    output_dir(out_file.parent)
    out_file.write_text(page, encoding="utf-8")
    return out_file


def _sections(source: Path) -> list[str]:
    parts: list[str] = []
    summary = _read_json(source / "summary.json")
    if summary:
        parts += [_framing(summary), _headline_section(summary)]
    predictions = _first(source, ["predictions.csv"])
    if predictions:
        parts.append(_scatter_section(predictions))
    if summary:
        parts += [
            _metric_bars_from_summary(summary),
            _trust_section(summary.get("trust")),
            _baseline_section(summary),
            _popularity_section(summary),
        ]
    else:
        metrics_file = _first(source, ["metrics.json", "eval/metrics.json"])
        if metrics_file:
            parts.append(_metric_bars_section(_read_json(metrics_file), metrics_file.parent.name))
            parts.append(_per_platform_section(_read_json(metrics_file.parent / "per_platform.json")))
    logs = sorted(source.glob("logs/*.jsonl")) + sorted(source.glob("*.jsonl"))
    logs = [p for p in logs if _is_training_log(p)]
    if logs:
        parts.append(_training_section(logs))
    arena = _read_json(_first(source, ["arena/arena_metrics.json", "arena_metrics.json"]))
    if arena:
        parts.append(_arena_section(arena, summary))
    if summary:
        parts += [
            _per_style_section(summary),
            _ceiling_section(summary),
            _encoder_section(summary),
            _data_section(summary),
            _meaning_section(),
        ]
    return [p for p in parts if p]


# --- demo-only sections ---------------------------------------------------------------------


def _framing(summary: dict) -> str:
    corpus = summary.get("corpus", {})
    return (
        "<div class='note'><b>Simulated data.</b> Every song here was synthesised by "
        "<code>apexmusic.synth</code> (numpy melodies, chords, bass and drums from "
        f"{len(corpus.get('train_styles', [])) + len(corpus.get('heldout_styles', []))} simulated "
        "generator styles) with hidden, audible quality factors; ratings, plays, likes and arena votes "
        "are simulated from those factors with statistics calibrated to real SongEval ratings and a "
        "real Suno sample. The numbers show that the whole pipeline runs and learns what can be "
        "learned from audio; they are <b>not</b> predictions for real songs and say nothing about "
        "how well a model trained on real data would do.</div>"
        f"<p class='muted'>Encoder: <code>{html.escape(str(summary.get('encoder')))}</code> · "
        f"{corpus.get('n_songs')} songs (seed {corpus.get('seed')}) · held-out styles: "
        f"{html.escape(', '.join(corpus.get('heldout_styles', [])))} · total time "
        f"{summary.get('timings_s', {}).get('total', float('nan')):.0f} s</p>"
    )


def _headline_section(summary: dict) -> str:
    ev = summary["evaluation"]
    test, held = ev["test_songs"], ev["heldout_styles"]
    rows = []
    for task in ALL_TASKS:
        m = test["multi_task"].get(task, {})
        h = held["multi_task"].get(task, {})
        skill = test["mean_predictor"].get(task, {}).get("skill")
        rows.append(
            [TASKS[task].label, _ci(m, "spearman"), _num(m.get("r2")), _num(skill), _ci(h, "spearman")]
        )
    table = _table(
        [
            "task",
            f"Spearman, test songs (n={test['n']})",
            "R², test",
            "MSE skill vs mean",
            f"Spearman, held-out styles (n={held['n']})",
        ],
        rows,
    )
    return (
        "<h2>Headline</h2>"
        + table
        + (
            "<p class='muted'>Intervals: 95% bootstrap over songs. Skill = 1 − MSE(model) / MSE(training-set "
            "mean); above 0 beats the mean predictor. Test songs come from the training styles but were "
            "never trained on; held-out styles were never seen at all.</p>"
        )
    )


def _metric_bars_from_summary(summary: dict) -> str:
    ev = summary["evaluation"]
    groups = {
        "test songs": ev["test_songs"]["multi_task"],
        "held-out styles": ev["heldout_styles"]["multi_task"],
    }
    return (
        "<h2>Metric bars</h2>" + _img(_bars_with_ci(groups, "spearman")) + _img(_bars_with_ci(groups, "r2"))
    )


def _trust_section(trust: dict | None) -> str:
    """Which scores are served, their calibrated intervals' measured coverage, the domain alarm."""
    if not trust:
        return ""
    basis, iv, domain = trust["basis"], trust["intervals"], trust.get("domain")
    level = iv["level"]
    cv = iv.get("coverage_cv") or {}
    rows = []
    for task, b in basis["tasks"].items():
        q = iv["half_width"].get(task)
        cov = iv["coverage_test"].get(task)
        row = [
            TASKS[task].label,
            basis["status"][task].replace("_", " "),
            f"{b['n_train']} / {b['n_val']} / {b['n_test']}",
            "whole range" if q is None else f"± {q:.3g}",
            "–" if cov is None else f"{100 * cov:.0f}% (n={iv['n_test'].get(task)})",
        ]
        if cv:
            c = cv.get(task)
            row.append("–" if c is None else f"{100 * c:.1f}% (n={iv['n_cv'].get(task)})")
        rows.append(row + [_num(iv["mean_width_test"].get(task))])
    header = ["task", "status", "labelled songs train / val / test", f"{100 * level:.0f}% interval"]
    header += ["coverage, test songs"] + (["coverage, out of fold"] if cv else []) + ["mean width, test"]
    table = _table(header, rows)
    method = iv.get("method", "split-conformal on the validation split")
    text = (
        f"<p class='muted'>Intervals at {100 * level:.0f}%: {html.escape(method)}. Coverage is measured on "
        "test songs no fit saw"
        + (
            ", and out of fold on every training and validation song (each against the half-width "
            "of the other folds)"
            if cv
            else ""
        )
        + f". A task needs {basis['min_train']} labelled training and {basis['min_heldout']} "
        "held-out songs to be served."
    )
    if domain and domain.get("threshold") is not None:
        measured = domain.get("measured_test") or {}
        text += (
            f" Domain alarm: distance threshold {domain['threshold']:.3g} for a "
            f"{100 * domain['false_alarm_rate']:.0f}% false-alarm rate; it flags "
            f"{100 * measured.get('rate', math.nan):.1f}% of test songs"
        )
        held = domain.get("heldout_styles_flagged")
        text += "." if held is None else f" and {100 * held:.0f}% of songs from the held-out styles."
    return "<h2>Scores you can trust</h2>" + table + text + "</p>"


def _baseline_section(summary: dict) -> str:
    base = summary["evaluation"]["test_songs"]["mean_predictor"]
    fig = _figure(figsize=(9, 3.2))
    ax = fig.subplots()
    x = np.arange(len(ALL_TASKS))
    model = [base[t]["mse_model"] / max(base[t]["mse_mean_predictor"], 1e-12) for t in ALL_TASKS]
    ax.bar(x, model, color="#4c72b0", label="model")
    ax.axhline(1.0, color="#c44e52", ls="--", label="mean predictor")
    _task_ticks(ax, ALL_TASKS)
    ax.set_ylabel("MSE / MSE of the mean")
    ax.set_title("Held-out error relative to predicting the training mean (lower is better)")
    _legend_outside(ax)
    return "<h2>Against a mean predictor</h2>" + _img(fig)


def _popularity_section(summary: dict) -> str:
    ev = summary["evaluation"]
    groups = {
        "multi-task, test": ev["test_songs"]["multi_task"],
        "popularity-only, test": ev["test_songs"]["popularity_only"],
        "multi-task, held-out styles": ev["heldout_styles"]["multi_task"],
        "popularity-only, held-out styles": ev["heldout_styles"]["popularity_only"],
    }
    fig = _bars_with_ci(groups, "spearman", tasks=POPULARITY_TASKS)
    return (
        "<h2>Popularity-only vs multi-task</h2><p>The published ablation: the same head trained on "
        "the two popularity targets alone, on the same split.</p>" + _img(fig)
    )


def _per_style_section(summary: dict) -> str:
    per_style = summary["evaluation"].get("per_style_spearman") or {}
    if not per_style:
        return ""
    styles = list(per_style)
    heldout = set(summary.get("corpus", {}).get("heldout_styles", []))
    grid = np.array([[_nan(per_style[s].get(t)) for t in ALL_TASKS] for s in styles])
    fig = _figure(figsize=(9, 0.45 * len(styles) + 1.5))
    ax = fig.subplots()
    im = ax.imshow(grid, cmap="RdYlGn", vmin=-1, vmax=1, aspect="auto")
    _task_ticks(ax, ALL_TASKS)
    ax.set_yticks(
        range(len(styles)), [f"{s} (n={per_style[s]['n']})" + (" *" if s in heldout else "") for s in styles]
    )
    for i in range(len(styles)):
        for j in range(len(ALL_TASKS)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="Spearman")
    ax.set_title("Spearman per generator style (* = held-out style)")
    return (
        "<h2>Per-style breakdown</h2><p class='muted'>Within one style the spread of quality is "
        "smaller and n is small, so per-style correlations are lower and noisier than pooled ones."
        "</p>" + _img(fig)
    )


def _ceiling_section(summary: dict) -> str:
    ceiling = summary["evaluation"].get("label_ceiling") or {}
    if not ceiling:
        return ""
    rows = [
        [TASKS[t].label, _num(v["hidden_vs_label"]), _num(v["model_vs_hidden"])] for t, v in ceiling.items()
    ]
    return (
        "<h2>How far up can a model go?</h2><p>Four simulated raters disagree, as real ones do. "
        "The first column ranks the noisy rater means by the simulator's hidden quality itself — "
        "the best any model could do against these labels. The second ranks the hidden quality "
        "by the model's prediction.</p>"
        + _table(["task", "hidden quality vs rater mean", "model vs hidden quality"], rows)
    )


def _encoder_section(summary: dict) -> str:
    comp = summary.get("encoder_comparison")
    if not comp:
        return ""
    metrics = comp["metrics"]
    keys = list(next(iter(metrics.values())))
    rows = [[name, *[_num(v[k]) for k in keys]] for name, v in metrics.items()]
    rows.append(["best", *[html.escape(str(comp["best"].get(k))) for k in keys]])
    page = "<h2>Encoder comparison</h2>" + _table(["encoder", *keys], rows, escape_cells=False)
    paired = next((v for k, v in comp.items() if k.startswith("paired_difference_vs_")), {})
    diff_rows = []
    for name, groups in paired.items():
        for group, result in groups.items():
            for metric, d in result.items():
                if isinstance(d, dict):
                    diff_rows.append(
                        [
                            f"{name} · {group} · {metric}",
                            _num(d["difference"]),
                            f"[{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]",
                            str(result["n"]),
                        ]
                    )
    if diff_rows:
        page += (
            "<p>Spearman difference (other encoder minus the demo's encoder) on the same songs, with a "
            "paired bootstrap 95% interval: an interval that excludes 0 is a real difference on this "
            "corpus.</p>" + _table(["encoder · songs · metric", "difference", "95% CI", "n"], diff_rows)
        )
    return page


def _data_section(summary: dict) -> str:
    stats = summary.get("corpus", {}).get("label_stats") or {}
    r, p = stats.get("ratings"), stats.get("popularity")
    if not r or not p:
        return ""
    rows = [
        ["mean rating per dimension", ", ".join(f"{v:.2f}" for v in r["mean"])],
        ["sd of song means", ", ".join(f"{v:.2f}" for v in r["sd_song_mean"])],
        ["within-song rater sd", ", ".join(f"{v:.2f}" for v in r["sd_within_song"])],
        ["inter-dimension r (song means)", f"{r['corr_song_mean']:.3f}"],
        ["log10 plays 10/25/50/75/90 %", ", ".join(f"{v:.2f}" for v in p["log10_plays_quantiles"])],
        ["log10 likes 10/25/50/75/90 %", ", ".join(f"{v:.2f}" for v in p["log10_likes_quantiles"])],
        ["r(log plays, log likes)", f"{p['corr_log_plays_likes']:.3f}"],
    ]
    return (
        "<h2>The simulated labels</h2><p class='muted'>Calibrated against real data (SongEval: means "
        "3.1–3.4, song-mean sd ≈ 1.1, within-song sd ≈ 0.8, inter-dimension r ≈ 0.96; Suno: median "
        "679 plays and 144 likes, r ≈ 0.97); the test suite holds them within stated tolerances.</p>"
        + _table(["statistic", "simulated corpus"], rows)
    )


def _meaning_section() -> str:
    return (
        "<h2>What these numbers mean — and do not</h2><ul>"
        "<li>They show that audio → embeddings → multi-task head → evaluation → arena runs end to end "
        "and that the head learns audible quality from the encoder's embeddings on held-out songs.</li>"
        "<li>The simulator makes quality audible by construction (noise, clipping, off-key notes, "
        "glitches, incoherent sections); real generated music is far subtler, so real-data "
        "correlations will be lower.</li>"
        "<li>Popularity is simulated as part quality, part style, creator reach and luck; how much "
        "of it any model can predict is a property of the simulator, not of real platforms.</li>"
        "<li>Arena votes come from a hidden listener preference plus per-vote noise; the hidden "
        "preference's own accuracy is the ceiling shown above.</li>"
        "<li>To score real songs use real MERT weights and a head trained on real labels (or the "
        "published APEX head via <code>apexmusic import-reference</code>).</li></ul>"
    )


# --- sections for any evaluation folder ------------------------------------------------------


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


# --- small helpers ----------------------------------------------------------------------------


def _bars_with_ci(groups: dict[str, dict], metric: str, tasks: tuple[str, ...] = ALL_TASKS):
    fig = _figure(figsize=(11, 3.6))
    ax = fig.subplots()
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(tasks))
    for k, (name, metrics) in enumerate(groups.items()):
        vals = np.array([_nan(metrics.get(t, {}).get(metric)) for t in tasks])
        lo = np.array([_nan(metrics.get(t, {}).get(f"{metric}_ci_low")) for t in tasks])
        hi = np.array([_nan(metrics.get(t, {}).get(f"{metric}_ci_high")) for t in tasks])
        err = np.nan_to_num(np.stack([vals - lo, hi - vals]), nan=0.0).clip(min=0)
        ax.bar(x + (k - (len(groups) - 1) / 2) * width, vals, width, yerr=err, capsize=3, label=name)
    ax.axhline(0, color="#666", lw=0.8)
    _task_ticks(ax, tasks)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per task with 95% bootstrap intervals")
    _legend_outside(ax)
    return fig


def _figure(figsize: tuple[float, float]):
    """A figure whose layout keeps every label, tick and legend inside it."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _task_ticks(ax, tasks: tuple[str, ...]) -> None:
    labels = [TASKS[t].label if t in TASKS else t for t in tasks]
    ax.set_xticks(
        range(len(tasks)), labels, rotation=20, ha="right", rotation_mode="anchor", fontsize=TICK_PT
    )


def _legend_outside(ax, below: bool = False) -> None:
    """The legend beside (or below) the plot, never over its bars."""
    if below:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.32), ncols=2, fontsize=LEGEND_PT, frameon=False)
    else:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=LEGEND_PT)


def _img(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode('ascii')}'>"


def _table(header: list[str], rows: list[list[Any]], escape_cells: bool = True) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c)) if escape_cells else c}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _ci(m: dict, metric: str) -> str:
    v, lo, hi = m.get(metric), m.get(f"{metric}_ci_low"), m.get(f"{metric}_ci_high")
    if v is None:
        return "–"
    return f"{v:.3f} [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else f"{v:.3f}"


def _num(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{float(v):.3f}"


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _read_json(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return {}


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _first(source: Path, names: list[str]) -> Path | None:
    return next((source / n for n in names if (source / n).is_file()), None)


def _is_training_log(path: Path) -> bool:
    try:
        with path.open() as f:
            first = json.loads(f.readline() or "{}")
    except (OSError, ValueError):
        return False
    return isinstance(first, dict) and "epoch" in first and "train_loss" in first


__all__ = ["write_report"]

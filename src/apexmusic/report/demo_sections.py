"""Report sections drawn only for a demo folder (its ``summary.json``)."""

from __future__ import annotations

import html

import numpy as np

from apexmusic.report.render import (
    _bars_with_ci,
    _ci,
    _figure,
    _img,
    _legend_outside,
    _nan,
    _num,
    _table,
    _task_ticks,
)
from apexmusic.tasks import ALL_TASKS, POPULARITY_TASKS, TASKS


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

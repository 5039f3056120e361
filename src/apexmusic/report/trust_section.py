"""The report's "Scores you can trust" section, from a model's ``trust.json`` (or the demo
summary's copy): which tasks are served, the intervals' measured coverage with a picture, and
the domain alarm."""

from __future__ import annotations

import html
import math

import numpy as np

from apexmusic.report.render import _figure, _img, _legend_outside, _num, _table, _task_ticks
from apexmusic.tasks import TASKS

# A calibrated interval at level L covers L on average; the report marks L ± 5 points as the
# band one run should land in when it measures enough songs.
COVERAGE_BAND = 0.05


def _trust_section(trust: dict | None) -> str:
    if not trust:
        return ""
    basis, iv, domain = trust["basis"], trust["intervals"], trust.get("domain")
    cv = iv.get("coverage_cv") or {}
    heldout, n_heldout = _heldout(iv)
    header = ["task", "status", "labelled songs train / val / test", f"{100 * iv['level']:.0f}% interval"]
    header += ["coverage, all held-out songs", "coverage, test songs"]
    header += (["coverage, out of fold"] if cv else []) + ["mean width, test"]
    rows = []
    for task, b in basis["tasks"].items():
        q = iv["half_width"].get(task)
        row = [
            TASKS[task].label,
            basis["status"][task].replace("_", " "),
            f"{b['n_train']} / {b['n_val']} / {b['n_test']}",
            "whole range" if q is None else f"± {q:.3g}",
            _share(heldout.get(task), n_heldout.get(task)),
            _share(iv["coverage_test"].get(task), iv["n_test"].get(task), digits=0),
        ]
        if cv:
            row.append(_share(cv.get(task), iv["n_cv"].get(task)))
        rows.append(row + [_num(iv["mean_width_test"].get(task))])
    figure = _coverage_figure(iv["level"], heldout, n_heldout)
    return (
        "<h2>Scores you can trust</h2>"
        + _table(header, rows)
        + (_img(figure) if figure is not None else "")
        + _explanation(basis, iv, bool(cv))
        + _domain_text(domain)
        + "</p>"
    )


def _heldout(iv: dict) -> tuple[dict, dict]:
    """Pooled held-out coverage and counts per task, recomputed from the stored test and
    out-of-fold figures (so a ``trust.json`` written before the pooled figure was kept works)."""
    from apexmusic.trust import Intervals

    pooled = Intervals.from_dict(iv).heldout_coverage()
    return {t: c for t, (c, _) in pooled.items()}, {t: n for t, (_, n) in pooled.items()}


def _share(value: float | None, n: int | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}% (n={n})"


def _coverage_figure(level: float, coverage: dict, n: dict):
    """Measured coverage per task with its 95 % binomial interval, against the stated level."""
    from scipy.stats import binomtest

    tasks = [t for t, c in coverage.items() if c is not None and n.get(t)]
    if not tasks:
        return None
    values = np.array([coverage[t] for t in tasks])
    bounds = [binomtest(round(coverage[t] * n[t]), n[t]).proportion_ci() for t in tasks]
    err = np.array(
        [
            [v - b.low for v, b in zip(values, bounds, strict=True)],
            [b.high - v for v, b in zip(values, bounds, strict=True)],
        ]
    )
    fig = _figure(figsize=(9, 3.4))
    ax = fig.subplots()
    x = np.arange(len(tasks))
    ax.axhspan(
        level - COVERAGE_BAND, level + COVERAGE_BAND, color="#dfeedd", label=f"{100 * level:.0f}% ± 5 points"
    )
    ax.axhline(level, color="#2b7a3b", ls="--", lw=1, label=f"stated level {100 * level:.0f}%")
    ax.errorbar(
        x, values, yerr=err.clip(min=0), fmt="o", color="#4c72b0", capsize=4, label="measured, 95% CI"
    )
    _task_ticks(ax, tuple(tasks))
    ax.set_ylim(min(0.7, float(values.min()) - 0.05), 1.0)
    ax.set_ylabel("share of true values inside")
    ax.set_title(f"Interval coverage on the held-out songs (n = {max(n[t] for t in tasks)} per task)")
    _legend_outside(ax)
    return fig


def _explanation(basis: dict, iv: dict, cross: bool) -> str:
    method = iv.get("method", "split-conformal on the validation split")
    where = (
        "test songs no fit saw, and out of fold on every training and validation song (each scored "
        "by a fold model that never trained on it, against the half-width of the other folds); "
        "both are held out, so they pool into the first coverage column"
        if cross
        else "test songs no fit saw"
    )
    return (
        f"<p class='muted'>Intervals at {100 * iv['level']:.0f}%: {html.escape(method)}. Coverage is "
        f"measured on {where}. A task needs {basis['min_train']} labelled training and "
        f"{basis['min_heldout']} held-out songs to be served."
    )


def _domain_text(domain: dict | None) -> str:
    if not domain or domain.get("threshold") is None:
        return ""
    measured = domain.get("measured_test") or {}
    text = (
        f" Domain alarm: distance threshold {domain['threshold']:.3g} for a "
        f"{100 * domain['false_alarm_rate']:.0f}% false-alarm rate; it flags "
        f"{100 * measured.get('rate', math.nan):.1f}% of test songs"
    )
    held = domain.get("heldout_styles_flagged")
    return text + ("." if held is None else f" and {100 * held:.0f}% of songs from the held-out styles.")

"""Report building blocks: figures that keep their labels inside, inline PNGs, HTML tables,
numbers as text."""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

import numpy as np

from apexmusic.tasks import ALL_TASKS, TASKS

# Figures are shown at their pixel size (dpi 90); below ~8 pt text is hard to read there.
TICK_PT, LEGEND_PT = 9, 9


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

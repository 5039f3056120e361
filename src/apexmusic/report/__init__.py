"""Self-contained HTML reports: plots as inline PNGs (matplotlib, Agg), no external assets.

``write_report(source_dir, out_file)`` reads whatever evaluation outputs ``source_dir`` holds
and draws a section for each:

- ``summary.json`` (from ``apexmusic demo``): headline table, mean-predictor and label-ceiling
  comparisons, per-style breakdown, encoder comparison, and the framing of simulated data;
- ``predictions.csv``: predicted vs true scatter per task;
- ``metrics.json`` (``apexmusic evaluate``, also ``model/eval/``): metric bars with intervals;
- ``trust.json`` (a model directory, or ``model/`` of a training run): served tasks, interval
  coverage on the held-out songs with a picture, the domain alarm;
- ``logs/*.jsonl`` or ``*.jsonl`` training logs: loss and validation-Spearman curves;
- ``arena/arena_metrics.json`` or ``arena_metrics.json``: arena accuracy with intervals, with
  and without aesthetic scores.
"""

from __future__ import annotations

import html
from pathlib import Path

from apexmusic.errors import InputError
from apexmusic.paths import output_dir
from apexmusic.report.demo_sections import (
    _baseline_section,
    _ceiling_section,
    _data_section,
    _encoder_section,
    _framing,
    _headline_section,
    _meaning_section,
    _metric_bars_from_summary,
    _per_style_section,
    _popularity_section,
)
from apexmusic.report.reading import _first, _is_training_log, _read_json
from apexmusic.report.sections import (
    _arena_section,
    _metric_bars_section,
    _per_platform_section,
    _scatter_section,
    _training_section,
)
from apexmusic.report.trust_section import _trust_section

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
        parts.append(_trust_section(_read_json(_first(source, ["trust.json", "model/trust.json"]))))
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


__all__ = ["write_report"]

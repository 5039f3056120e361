"""The model card (``README.md`` of a model directory), rendered from the model's config."""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any

from apexmusic.tasks import TASKS

if TYPE_CHECKING:
    from apexmusic.model.scoring import ScoringModel
    from apexmusic.store.spec import EmbeddingSpec
    from apexmusic.trust import Trust


def render_model_card(model: ScoringModel, trust: Trust | None = None) -> str:
    """A markdown model card from the model's config (and its trust statistics): provenance,
    data, what each score stands on, metrics, intended use, limits."""
    from apexmusic.model.provenance import describe

    cfg, card = model.config, model.card
    enc = model.encoder_spec
    notice = describe(model.provenance)
    if model.provenance.get("simulated"):
        notice = notice.upper()
    lines = [
        f"# {card.get('title', 'APEX scoring model')} (`{model.model_id}`)",
        "",
        f"> **Provenance: {notice}.** Labels: {model.provenance.get('labels', 'not recorded')}; "
        f"simulated: {str(model.provenance.get('simulated', 'not recorded')).lower()}.",
        "",
        "Predicts, from audio embeddings alone, popularity scores (0–100) and/or perceptual",
        "aesthetic scores (1–5) of AI-generated songs. Architecture: the APEX multi-task head",
        "(Husain & Herremans, 2026) on a frozen music encoder.",
        "",
        "## Model",
        f"- Tasks: {', '.join(f'`{t}` ({TASKS[t].low:g}–{TASKS[t].high:g})' for t in cfg.tasks)}",
        f"- Shared trunk: {cfg.dim}→{'→'.join(map(str, cfg.trunk_dims))}; branches 256→128→64→1",
        f"- Input: {cfg.n_layers} layer(s) × {cfg.dim} from {_describe_spec(enc)}; "
        f"layer mixing `{cfg.mixing}`; pooling `{model.pooling}`; "
        f"standardisation {'fitted on the training split' if cfg.standardize else 'none'}",
        f"- Created: {card.get('created', time.strftime('%Y-%m-%d'))}; "
        f"source: {card.get('source', 'trained with apexmusic')}",
        "",
        "## Training data",
    ]
    data = card.get("data", {})
    if data:
        lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in data.items()]
    else:
        lines.append("- not recorded")
    if model.training:
        keys = ("loss", "mode", "epochs", "best_epoch", "batch_size", "lr", "split", "seed")
        shown = [f"{k}={model.training[k]}" for k in keys if k in model.training]
        lines.append("- training: " + ", ".join(shown))
    if model.targets:
        lines.append(f"- targets: {json.dumps(model.targets, default=str)}")
    lines += ["", "## Held-out metrics"]
    metrics = card.get("metrics", {})
    if metrics:
        lines += ["| task | Spearman | Pearson | MAE | R² |", "|---|---|---|---|---|"]
        for task, m in metrics.items():
            if trust is not None and task not in trust.served():
                lines.append(f"| {task} | not trained | – | – | – |")
                continue
            lines.append(
                f"| {task} | {_fmt(m.get('spearman'))} | {_fmt(m.get('pearson'))} | "
                f"{_fmt(m.get('mae'))} | {_fmt(m.get('r2'))} |"
            )
    else:
        lines.append("No held-out evaluation recorded with this model.")
    lines += trust_lines(trust, cfg.tasks)
    lines += [
        "",
        "## Intended use",
        "Ranking and triaging AI-generated songs in a catalogue, research on what listeners",
        "respond to, and comparing generators. Scores are relative within the population the",
        "model was trained on (popularity is a within-platform percentile, not a count).",
        "",
        "## Limitations",
        "- Popularity depends on much more than audio (promotion, creator following, timing);",
        "  the audio-only signal explains only part of it.",
        "- Aesthetic scores imitate a small pool of expert raters; their spread between raters",
        "  is large. Scores outside the training distribution (new generators, genres, lengths)",
        "  are less reliable: `in_domain: false` marks them, and their intervals do not hold there.",
        "- Intervals (`<task>_lo`/`<task>_hi`) are calibrated on songs like the training songs;",
        "  MC-dropout spreads (`<task>_std`) are a rough, uncalibrated uncertainty.",
        "- Embeddings must come from the same encoder, weights and segment settings as",
        "  recorded above.",
        "",
    ]
    return "\n".join(lines)


def trust_lines(trust: Trust | None, tasks: tuple[str, ...]) -> list[str]:
    """The card's section on what each score stands on: status, intervals, domain alarm."""
    lines = ["", "## What each score stands on"]
    if trust is None:
        return lines + ["No trust statistics recorded: no basis check, intervals or domain alarm."]
    basis, iv = trust.basis, trust.intervals
    if basis.allow_small:
        lines.append(
            "- **Trained with `--allow-small`**: splits below the minimums "
            f"({basis.min_train} labelled training songs, {basis.min_heldout} held-out) were allowed."
        )
    lines += [
        f"- A task is served with at least {basis.min_train} labelled training songs and "
        f"{basis.min_heldout} labelled test songs; otherwise its score is absent (null), never a number.",
        f"- Intervals at {iv.level:.0%}: {iv.method}; coverage measured on the test split.",
        "",
        "| task | status | train / val / test labels | interval (±) | test coverage |",
        "|---|---|---|---|---|",
    ]
    for task in tasks:
        b = basis.tasks.get(task)
        status = basis.status(task) if b else "not_served"
        shown = {"served": "served", "below_minimum": "served below the minimum", "not_served": "not trained"}
        counts = f"{b.n_train} / {b.n_val} / {b.n_test}" if b else "–"
        half = iv.half_width.get(task)
        width = "whole range" if half is not None and math.isinf(half) else _fmt(half)
        cov = iv.coverage.get(task)
        coverage = f"{cov:.0%} of {iv.n_test.get(task, 0)}" if cov is not None else "–"
        if status == "not_served":
            width = coverage = "–"
        lines.append(f"| {task} | {shown[status]} | {counts} | {width} | {coverage} |")
    if iv.cv_coverage:
        shown_cv = ", ".join(f"{t} {c:.1%}" for t, c in iv.cv_coverage.items() if c is not None)
        heldout = iv.heldout_coverage()
        shown_all = ", ".join(f"{t} {c:.1%}" for t, (c, _) in heldout.items() if c is not None)
        n_all = max((n for _, n in heldout.values()), default=0)
        lines += [
            "",
            f"- Coverage out of fold ({max(iv.n_cv.values(), default=0)} songs): {shown_cv}.",
            f"- Coverage on all {n_all} held-out songs (test and out of fold): {shown_all}.",
        ]
    lines.append("")
    dom = trust.domain
    if dom is None or dom.threshold is None:
        lines.append("- Domain alarm: not calibrated (too few songs); `in_domain` is null.")
    else:
        measured = dom.measured or {}
        rate = (
            f"measured {measured['rate']:.1%} ({measured['flagged']} of {measured['n']} test songs)"
            if measured
            else "not measured (no test songs)"
        )
        lines.append(
            f"- Domain alarm: Ledoit–Wolf Mahalanobis distance to the training inputs; a song is "
            f"`in_domain: false` above {dom.threshold:.3g}, set for a {dom.false_alarm_rate:.0%} "
            f"false-alarm rate on {dom.n_calibration} held-out in-domain distances; {rate}."
        )
    return lines


def _describe_spec(spec: EmbeddingSpec | None) -> str:
    if spec is None:
        return "an unrecorded encoder"
    fingerprint = f", fingerprint `{spec.fingerprint}`" if spec.fingerprint else ""
    return (
        f"encoder `{spec.encoder}` (weights `{spec.weights or 'unknown'}`{fingerprint}, "
        f"segments {spec.segment_seconds:g} s, compat `{spec.compat}`)"
    )


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) and math.isfinite(value) else "–"

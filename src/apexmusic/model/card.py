"""The model card (``README.md`` of a model directory), rendered from the model's config."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from apexmusic.tasks import TASKS

if TYPE_CHECKING:
    from apexmusic.model.scoring import ScoringModel
    from apexmusic.store.spec import EmbeddingSpec


def render_model_card(model: ScoringModel) -> str:
    """A markdown model card from the model's config: data, metrics, intended use, limits."""
    cfg, card = model.config, model.card
    enc = model.encoder_spec
    lines = [
        f"# {card.get('title', 'APEX scoring model')} (`{model.model_id}`)",
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
            lines.append(
                f"| {task} | {_fmt(m.get('spearman'))} | {_fmt(m.get('pearson'))} | "
                f"{_fmt(m.get('mae'))} | {_fmt(m.get('r2'))} |"
            )
    else:
        lines.append("No held-out evaluation recorded with this model.")
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
        "  are less reliable; MC-dropout spreads (`<task>_std`) give a rough uncertainty.",
        "- Embeddings must come from the same encoder, weights and segment settings as",
        "  recorded above.",
        "",
    ]
    return "\n".join(lines)


def _describe_spec(spec: EmbeddingSpec | None) -> str:
    if spec is None:
        return "an unrecorded encoder"
    fingerprint = f", fingerprint `{spec.fingerprint}`" if spec.fingerprint else ""
    return (
        f"encoder `{spec.encoder}` (weights `{spec.weights or 'unknown'}`{fingerprint}, "
        f"segments {spec.segment_seconds:g} s, compat `{spec.compat}`)"
    )


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "–"

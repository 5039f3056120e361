"""What scoring returns: typed results for one song, one segment and one comparison."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from apexmusic.errors import ConfigError
from apexmusic.tasks import TASKS


@dataclass
class SegmentScore:
    """One stretch of a song (``start_s`` to ``end_s``) and the model's scores for it alone."""

    start_s: float
    end_s: float
    scores: dict[str, float]


@dataclass
class Prediction:
    """Scores for one song, in the tasks' natural ranges (0-100 popularity, 1-5 aesthetics)."""

    id: str
    path: str
    scores: dict[str, float]
    uncertainty: dict[str, float]  # task -> MC-dropout standard deviation (0 when mc_samples=0)
    timeline: list[SegmentScore]
    duration_s: float
    model_id: str
    tags: list[tuple[str, float]] | None = None  # top encoder tags and probabilities
    novelty: float | None = None  # RMS z-score of the input vs the training data (~1 in range)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested form (the service's response body)."""
        out = asdict(self)
        out["tags"] = [{"tag": t, "prob": p} for t, p in self.tags] if self.tags else None
        return out

    def to_row(self) -> dict[str, Any]:
        """One flat output row: id, path, scores, ``<task>_std``, model_id, duration_s, tags."""
        row: dict[str, Any] = {"id": self.id, "path": self.path}
        row.update(self.scores)
        row.update({f"{task}_std": std for task, std in self.uncertainty.items()})
        row["model_id"] = self.model_id
        row["duration_s"] = self.duration_s
        if self.novelty is not None:
            row["novelty"] = self.novelty
        if self.tags:
            row["tags"] = format_tags(self.tags)
        return row


@dataclass
class Comparison:
    """How likely listeners are to prefer song A over song B."""

    prob_a: float
    method: str  # "comparator" (arena-trained) or "fallback" (see compare_scores)
    a: Prediction
    b: Prediction

    def to_dict(self) -> dict[str, Any]:
        return {
            "prob_a": self.prob_a,
            "prob_b": 1.0 - self.prob_a,
            "method": self.method,
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
        }


def format_tags(tags: Sequence[tuple[str, float]]) -> str:
    return ";".join(f"{name}={prob:.3f}" for name, prob in tags)


def compare_scores(
    scores_a: dict[str, float], scores_b: dict[str, float], comparator: Any | None = None
) -> tuple[float, str]:
    """P(listeners prefer A) and which method gave it.

    With an arena-trained ``PreferenceComparator`` (``comparator.json`` in the model folder)
    its logistic regression on score differences answers (method ``"comparator"``). Otherwise
    the documented, uncalibrated fallback: each task's difference is divided by a quarter of
    the task's range (25 points for popularity, 1 point for aesthetics) and the logistic of
    the mean of those standardised differences is returned (method ``"fallback"``).
    """
    if comparator is not None:
        return float(comparator.prob_a_wins(scores_a, scores_b)), "comparator"
    tasks = [t for t in scores_a if t in scores_b and t in TASKS]
    if not tasks:
        raise ConfigError("no common tasks to compare")
    z = np.mean([(scores_a[t] - scores_b[t]) / (TASKS[t].span / 4.0) for t in tasks])
    return float(1.0 / (1.0 + math.exp(-float(z)))), "fallback"

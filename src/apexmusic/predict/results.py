"""What scoring returns: typed results for one song, one segment and one comparison."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from apexmusic.errors import ConfigError
from apexmusic.tasks import TASKS


@dataclass
class SegmentScore:
    """One stretch of a song (``start_s`` to ``end_s``) and the model's scores for it alone."""

    start_s: float
    end_s: float
    scores: dict[str, float | None]


@dataclass
class Prediction:
    """Scores for one song, in the tasks' natural ranges (0-100 popularity, 1-5 aesthetics).

    A task the model is not trusted to answer (too few labelled songs, see
    :mod:`apexmusic.trust`) has ``None`` for its score, spread and interval. A model saved
    before trust statistics existed leaves ``intervals``, ``in_domain`` and the rest empty.
    """

    id: str
    path: str
    scores: dict[str, float | None]  # None: the task is not served
    uncertainty: dict[str, float | None]  # task -> MC-dropout standard deviation (0 when mc_samples=0)
    timeline: list[SegmentScore]
    duration_s: float
    model_id: str
    tags: list[tuple[str, float]] | None = None  # top encoder tags and probabilities
    novelty: float | None = None  # RMS z-score of the input vs the training data (~1 in range)
    intervals: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> {"lo", "hi"}
    interval_level: float | None = None  # e.g. 0.9: each lo-hi holds the true value 90 % of the time
    in_domain: bool | None = None  # False: unlike the training songs (None: no calibrated alarm)
    domain_distance: float | None = None  # ~1 for training-like songs
    simulated_training_data: bool | None = None  # the model's provenance (None: not recorded)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested form (the service's response body)."""
        out = asdict(self)
        out["tags"] = [{"tag": t, "prob": p} for t, p in self.tags] if self.tags else None
        return out

    def to_row(self) -> dict[str, Any]:
        """One flat output row: id, path, per task ``<task>`` (None when not served),
        ``<task>_lo``/``<task>_hi`` (with trust statistics) and ``<task>_std`` (MC dropout), then
        interval_level, in_domain, domain_distance, model_id, simulated_training_data,
        duration_s, novelty, tags."""
        row: dict[str, Any] = {"id": self.id, "path": self.path}
        trusted = self.interval_level is not None
        for task, value in self.scores.items():
            row[task] = value
            if trusted:
                bounds = self.intervals.get(task, {})
                row[f"{task}_lo"], row[f"{task}_hi"] = bounds.get("lo"), bounds.get("hi")
        row.update({f"{task}_std": std for task, std in self.uncertainty.items()})
        if trusted:
            row["interval_level"] = self.interval_level
            row["in_domain"] = self.in_domain
            row["domain_distance"] = self.domain_distance
        row["model_id"] = self.model_id
        row["simulated_training_data"] = self.simulated_training_data
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
    scores_a = {t: v for t, v in scores_a.items() if v is not None}  # not-served tasks say nothing
    scores_b = {t: v for t, v in scores_b.items() if v is not None}
    if comparator is not None:
        return float(comparator.prob_a_wins(scores_a, scores_b)), "comparator"
    tasks = [t for t in scores_a if t in scores_b and t in TASKS]
    if not tasks:
        raise ConfigError("no common tasks to compare")
    z = np.mean([(scores_a[t] - scores_b[t]) / (TASKS[t].span / 4.0) for t in tasks])
    return float(1.0 / (1.0 + math.exp(-float(z)))), "fallback"

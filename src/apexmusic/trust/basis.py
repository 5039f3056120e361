"""What each score stands on: labelled training songs, held-out songs and held-out metrics.

A task is *served* only when its head learned from at least :data:`MIN_TRAIN_SONGS` labelled
training songs and was checked on at least :data:`MIN_HELDOUT_SONGS` labelled test songs. Below
that a score is noise with a confident face (an untrained head still outputs ~45 on 0-100), so
the task is absent from every output instead. ``allow_small`` (``--allow-small``) lets training
go ahead below the minimum and serves such tasks, marked as below the minimum, as long as the
head saw at least :data:`FLOOR_TRAIN_SONGS` labels; a head with fewer never answers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from apexmusic.errors import ConfigError

MIN_TRAIN_SONGS = 30  # labelled training songs a served task needs
MIN_HELDOUT_SONGS = 10  # labelled test songs a served task needs (and val/test split sizes)
FLOOR_TRAIN_SONGS = 2  # a head with fewer labels learned nothing, even with allow_small

HELDOUT_METRICS = ("n", "spearman", "spearman_ci_low", "spearman_ci_high", "pearson", "mae", "r2")


@dataclass
class TaskBasis:
    """One task's evidence."""

    n_train: int
    n_val: int
    n_test: int
    metrics: dict[str, float | None] = field(default_factory=dict)  # held-out (test split)

    def meets_minimum(self) -> bool:
        return self.n_train >= MIN_TRAIN_SONGS and self.n_test >= MIN_HELDOUT_SONGS


@dataclass
class Basis:
    """Per task the evidence, plus the split sizes and whether small splits were allowed."""

    tasks: dict[str, TaskBasis]
    split_sizes: dict[str, int]
    allow_small: bool = False
    min_train: int = MIN_TRAIN_SONGS
    min_heldout: int = MIN_HELDOUT_SONGS

    def served(self) -> tuple[str, ...]:
        """Tasks whose scores may be shown, in model order."""
        return tuple(t for t in self.tasks if self.status(t) != "not_served")

    def status(self, task: str) -> str:
        """``served``, ``below_minimum`` (served because ``allow_small``) or ``not_served``."""
        b = self.tasks[task]
        if b.meets_minimum():
            return "served"
        if self.allow_small and b.n_train >= FLOOR_TRAIN_SONGS:
            return "below_minimum"
        return "not_served"

    def reasons(self) -> dict[str, str]:
        """One line per task that is not fully served, for load warnings and the card."""
        out = {}
        for task, b in self.tasks.items():
            status = self.status(task)
            if status == "served":
                continue
            why = (
                f"{b.n_train} labelled training songs and {b.n_test} held-out "
                f"(minimum {self.min_train} and {self.min_heldout})"
            )
            out[task] = why if status == "not_served" else why + ", served because allow_small"
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": {t: asdict(b) for t, b in self.tasks.items()},
            "split_sizes": dict(self.split_sizes),
            "allow_small": self.allow_small,
            "min_train": self.min_train,
            "min_heldout": self.min_heldout,
            "status": {t: self.status(t) for t in self.tasks},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Basis:
        return cls(
            tasks={t: TaskBasis(**b) for t, b in d["tasks"].items()},
            split_sizes={k: int(v) for k, v in d["split_sizes"].items()},
            allow_small=bool(d.get("allow_small", False)),
            min_train=int(d.get("min_train", MIN_TRAIN_SONGS)),
            min_heldout=int(d.get("min_heldout", MIN_HELDOUT_SONGS)),
        )


def check_split(split_sizes: dict[str, int], train_labels: dict[str, int], allow_small: bool = False) -> None:
    """Refuse (one-line :class:`ConfigError`) a split too small to train and evaluate on.

    Too small: fewer than :data:`MIN_TRAIN_SONGS` training songs, fewer than
    :data:`MIN_HELDOUT_SONGS` validation or test songs, or no task with
    :data:`MIN_TRAIN_SONGS` labelled training songs. ``allow_small`` skips the check.
    """
    if allow_small:
        return
    names = {"train": "training", "val": "validation", "test": "test"}
    minimum = {"train": MIN_TRAIN_SONGS, "val": MIN_HELDOUT_SONGS, "test": MIN_HELDOUT_SONGS}
    problems = [
        f"{split_sizes.get(part, 0)} {names[part]} (minimum {need})"
        for part, need in minimum.items()
        if split_sizes.get(part, 0) < need
    ]
    if not problems and max(train_labels.values(), default=0) < MIN_TRAIN_SONGS:
        problems.append(f"no task has {MIN_TRAIN_SONGS} labelled training songs")
    if problems:
        raise ConfigError(
            f"too few songs to train and evaluate: {', '.join(problems)}; "
            "add songs or pass --allow-small (the model card will say so)"
        )


def build_basis(
    tasks: tuple[str, ...],
    counts: dict[str, dict[str, int]],
    split_sizes: dict[str, int],
    metrics: dict[str, dict[str, Any]] | None,
    allow_small: bool = False,
) -> Basis:
    """``counts[part][task]``: labelled songs per split part; ``metrics``: held-out metrics."""
    metrics = metrics or {}
    per_task = {
        t: TaskBasis(
            n_train=int(counts["train"].get(t, 0)),
            n_val=int(counts["val"].get(t, 0)),
            n_test=int(counts["test"].get(t, 0)),
            metrics={k: _finite(v) for k, v in metrics.get(t, {}).items() if k in HELDOUT_METRICS},
        )
        for t in tasks
    }
    return Basis(per_task, {k: int(v) for k, v in split_sizes.items()}, allow_small)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None

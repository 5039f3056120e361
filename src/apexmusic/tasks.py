"""The one source of truth for task names, score ranges and task sets.

Names follow the reference checkpoint: ``score_streams`` and ``score_likes`` are
popularity scores on 0-100; the five SongEval aesthetic dimensions are on 1-5.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    group: str  # "popularity" or "aesthetic"
    low: float
    high: float
    label: str  # human-readable name

    @property
    def span(self) -> float:
        return self.high - self.low


POPULARITY_TASKS: tuple[str, ...] = ("score_streams", "score_likes")
AESTHETIC_TASKS: tuple[str, ...] = (
    "coherence",
    "musicality",
    "memorability",
    "clarity",
    "naturalness",
)
ALL_TASKS: tuple[str, ...] = POPULARITY_TASKS + AESTHETIC_TASKS

TASKS: dict[str, Task] = {
    "score_streams": Task("score_streams", "popularity", 0.0, 100.0, "Streams score"),
    "score_likes": Task("score_likes", "popularity", 0.0, 100.0, "Likes score"),
    **{name: Task(name, "aesthetic", 1.0, 5.0, name.capitalize()) for name in AESTHETIC_TASKS},
}

# `--task` choices: which heads a model has.
TASK_SETS: dict[str, tuple[str, ...]] = {"popularity": POPULARITY_TASKS, "full": ALL_TASKS}


def tasks_for(task_set: str) -> tuple[str, ...]:
    """Task names of a `--task` choice (``full`` or ``popularity``)."""
    from apexmusic.errors import ConfigError

    try:
        return TASK_SETS[task_set]
    except KeyError:
        raise ConfigError(f"unknown task set {task_set!r}; choose from {sorted(TASK_SETS)}") from None

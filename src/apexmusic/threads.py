"""How many CPU threads a job runs with: a policy from the work size, and a tuner for big work.

Measured on this project's 2-core machine (docs/training.md, benchmarks/bench_train.py):

* torch's intra-op threads split each kernel evenly and wait for each other at its end. When
  another process holds one core, the thread that shares it is descheduled for whole time
  slices, so every kernel waits: a training step ran 5-20x slower with 2 threads than with 1,
  at every size from the 109-d handcrafted head (batch 64) to 768-d vectors in batches of 2048.
* On an idle machine 2 threads gain 10-20% on small steps (~0.2 GFLOP) and 40-60% on big ones
  (>= 2 GFLOP).

So work under :data:`SMALL_STEP_FLOPS` per step runs single-threaded: little to win when the
machine is idle, a collapse to avoid when it is not. Bigger work is timed: :class:`ThreadTuner`
runs a few real steps with one thread, half the cores and all of them, keeps the fastest, and
re-checks as the load changes. An explicit thread count (``--threads``) overrides both.
"""

from __future__ import annotations

import functools
import logging
import os
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

SMALL_STEP_FLOPS = 5e8  # below this per step (or per forward chunk) one thread is used
MIN_TUNED_STEPS = 200  # runs shorter than this do not pay for timing the alternatives
PROBE_STEPS = 3  # steps timed per candidate thread count (their median counts)
LOSING_RATIO = 3.0  # a probe step this much slower than the best so far ends that probe
RECHECK_SECONDS = 30.0  # first re-check of the choice; doubles while the choice holds
MAX_RECHECK_SECONDS = 480.0


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def max_threads() -> int:
    """The most intra-op threads worth using: torch's setting (it honours ``OMP_NUM_THREADS``),
    capped by the cores this process may run on."""
    import torch

    return max(1, min(torch.get_num_threads(), available_cores()))


def step_flops(n_params: int, rows: int, backward: bool = True) -> float:
    """Approximate FLOPs of one pass of ``rows`` through an MLP with ``n_params`` weights
    (2 per weight and row forward, 4 more backward)."""
    return (6.0 if backward else 2.0) * n_params * rows


def candidate_threads(
    flops_per_step: float, steps: int, requested: int | None = None, most: int | None = None
) -> tuple[int, ...]:
    """Thread counts to use: one fixed count, or ``(1, most // 2, most)`` for :class:`ThreadTuner`
    to time (``most`` defaults to :func:`max_threads`; half of it fits beside other jobs)."""
    if requested:
        return (int(requested),)
    most = most or max_threads()
    if most == 1 or flops_per_step < SMALL_STEP_FLOPS or steps < MIN_TUNED_STEPS:
        return (1,)
    return tuple(sorted({1, most // 2, most} - {0}))


def inference_threads(total_flops: float, requested: int | None = None) -> int:
    """Threads for a one-off forward pass of ``total_flops``: one for small work, else all."""
    if requested:
        return int(requested)
    return 1 if total_flops < SMALL_STEP_FLOPS * 20 else max_threads()


def _set_torch_threads(n: int) -> None:
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads and restore the previous count after."""
    import torch

    before = torch.get_num_threads()
    _set_torch_threads(n)
    try:
        yield
    finally:
        _set_torch_threads(before)


@functools.cache
def _controller() -> Any:
    import scipy.stats  # noqa: F401  (loads scipy's BLAS, so that it is found too)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # finds the loaded pools once (~10 ms), not per call


@contextmanager
def limit_threads(n: int) -> Iterator[None]:
    """``n`` threads for torch and for the BLAS/OpenMP pools numpy and scipy use."""
    with _controller().limit(limits=n), torch_threads(n):
        yield


class ThreadTuner:
    """Chooses, by timing real steps, the fastest of a few intra-op thread counts, and keeps
    re-checking: a choice made on an idle machine is wrong once another job takes a core.

    Wrap each step in :meth:`step`. With one candidate it only sets that count.
    """

    def __init__(
        self,
        candidates: tuple[int, ...],
        recheck_seconds: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.candidates = tuple(candidates)
        self.current = self.candidates[0]
        self.switches = 0
        self._clock = clock
        self._interval = recheck_seconds
        self._base_interval = recheck_seconds
        self._queue: list[int] = list(self.candidates) if len(self.candidates) > 1 else []
        self._trial: list[float] = []
        self._results: dict[int, float] = {}
        self._recent: deque[float] = deque(maxlen=PROBE_STEPS)
        self._chosen_time = float("inf")
        self._next_check = float("inf")

    @property
    def tuning(self) -> bool:
        return len(self.candidates) > 1

    @contextmanager
    def step(self, rows: int) -> Iterator[None]:
        """Time one step of ``rows`` rows under the thread count the tuner wants next."""
        if not self.tuning:
            _set_torch_threads(self.current)
            yield
            return
        if not self._queue and self._clock() >= self._next_check:
            self._start_recheck()
        threads = self._queue[0] if self._queue else self.current
        _set_torch_threads(threads)
        start = self._clock()
        yield
        self._record(threads, (self._clock() - start) / max(rows, 1))

    def _start_recheck(self) -> None:
        self._results = {self.current: statistics.median(self._recent)} if self._recent else {}
        self._queue = [n for n in self.candidates if n not in self._results]

    def _record(self, threads: int, per_row: float) -> None:
        if not self._queue:
            self._recent.append(per_row)
            if len(self._recent) >= 2 and min(list(self._recent)[-2:]) > LOSING_RATIO * self._chosen_time:
                self._interval = self._base_interval  # the load changed: re-check now
                self._next_check = self._clock()
            return
        self._trial.append(per_row)
        best = min(self._results.values(), default=None)
        losing = best is not None and per_row > LOSING_RATIO * best
        if len(self._trial) < PROBE_STEPS and not losing:
            return
        self._results[threads] = statistics.median(self._trial)
        self._trial = []
        self._queue.pop(0)
        if not self._queue:
            self._choose()

    def _choose(self) -> None:
        chosen = min(self._results, key=self._results.get)
        if chosen == self.current:  # the choice holds: look again later
            self._interval = min(self._interval * 2, MAX_RECHECK_SECONDS)
        else:
            self._interval = self._base_interval
            self.switches += 1
        log.info(
            "threads: %d (%s per 1000 rows)",
            chosen,
            ", ".join(f"{n} threads {1000 * s * 1e3:.1f} ms" for n, s in sorted(self._results.items())),
        )
        self.current = chosen
        self._chosen_time = self._results[chosen]
        self._recent.clear()
        self._next_check = self._clock() + self._interval


def grid_workers(small_conditions: bool, n_conditions: int, requested: int | None = None) -> int:
    """Processes for the experiment grid: one per core (each single-threaded) when every
    condition is small work; else one, so that each training gets all threads."""
    if requested:
        return max(1, min(int(requested), n_conditions))
    if not small_conditions:
        return 1
    return max(1, min(available_cores(), n_conditions))


__all__ = [
    "SMALL_STEP_FLOPS",
    "ThreadTuner",
    "available_cores",
    "candidate_threads",
    "grid_workers",
    "inference_threads",
    "limit_threads",
    "max_threads",
    "step_flops",
    "torch_threads",
]

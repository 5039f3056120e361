"""The thread policy: small work single-threaded, big work timed, the choice re-checked under load."""

from __future__ import annotations

import pytest
import torch

from apexmusic import threads
from apexmusic.threads import ThreadTuner, candidate_threads, grid_workers, step_flops, torch_threads


def test_small_work_runs_single_threaded_and_big_work_is_timed(monkeypatch):
    monkeypatch.setattr(threads, "max_threads", lambda: 4)
    small = step_flops(475_000, 64)  # the 109-d handcrafted head, batch 64
    big = step_flops(810_000, 512)  # the 768-d head, batch 512
    assert candidate_threads(small, steps=10_000) == (1,)
    assert candidate_threads(big, steps=10_000) == (1, 2, 4)
    assert candidate_threads(big, steps=10_000, most=2) == (1, 2)
    assert candidate_threads(big, steps=50) == (1,)  # too short to pay for timing
    assert candidate_threads(small, steps=10_000, requested=3) == (3,)
    monkeypatch.setattr(threads, "max_threads", lambda: 1)
    assert candidate_threads(big, steps=10_000) == (1,)


def test_grid_workers():
    cores = threads.available_cores()
    assert grid_workers(True, 24) == min(cores, 24)
    assert grid_workers(False, 24) == 1
    assert grid_workers(False, 24, requested=3) == 3
    assert grid_workers(True, 2, requested=8) == 2


def test_torch_threads_restores_the_count():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


class FakeMachine:
    """Step costs (seconds per step) by thread count; ``busy`` flips them as a busy core does."""

    def __init__(self) -> None:
        self.now = 0.0
        self.busy = False
        self.steps_at: dict[int, int] = {}

    def clock(self) -> float:
        return self.now

    def run(self, tuner: ThreadTuner, steps: int) -> None:
        for _ in range(steps):
            with tuner.step(rows=512):
                n = torch.get_num_threads()
                cost = {1: 0.012, 2: 0.100} if self.busy else {1: 0.010, 2: 0.006}
                self.now += cost[n]
                self.steps_at[n] = self.steps_at.get(n, 0) + 1


def test_tuner_picks_the_faster_count_and_follows_the_load():
    machine = FakeMachine()
    with torch_threads(torch.get_num_threads()):
        tuner = ThreadTuner((1, 2), recheck_seconds=5.0, clock=machine.clock)
        machine.run(tuner, 100)
        assert tuner.current == 2  # idle machine: two threads are faster
        machine.busy = True
        machine.steps_at.clear()
        machine.run(tuner, 2000)  # ~24 s of busy steps: several re-checks
        assert tuner.current == 1
        # Two slow steps reveal the load; each later re-check of two threads ends after one
        # losing step, and the re-checks back off, so the slow steps stay few.
        assert machine.steps_at.get(2, 0) <= 6, machine.steps_at
        machine.busy = False
        machine.run(tuner, 3000)
        assert tuner.current == 2
        assert tuner.switches == 3


def test_tuner_with_one_candidate_only_sets_it():
    with torch_threads(2):
        tuner = ThreadTuner((1,))
        with tuner.step(rows=10):
            assert torch.get_num_threads() == 1
        assert not tuner.tuning


@pytest.mark.parametrize("requested", [None, 2])
def test_training_records_its_thread_count(requested):
    import numpy as np

    from apexmusic.data import Dataset, LabelTable
    from apexmusic.store import EmbeddingSpec, StoreData
    from apexmusic.tasks import ALL_TASKS
    from apexmusic.train import TrainConfig, train

    n, dim = 200, 16
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 1, dim)).astype(np.float32)
    y = np.column_stack([50 + 10 * x[:, 0, :2], 3 + 0.5 * x[:, 0, 2:7]])
    spec = EmbeddingSpec(encoder="sim", n_layers=1, dim=dim, sample_rate=1)
    store = StoreData([str(i) for i in range(n)], [""] * n, x, np.zeros(n), spec)
    none = np.full(n, None, object)
    labels = LabelTable(store.ids, y, np.full(n, "sim", object), none, np.full(n, np.nan))
    before = torch.get_num_threads()
    result = train(
        Dataset(store, labels, ALL_TASKS), TrainConfig(epochs=2, n_boot=0, device="cpu", threads=requested)
    )
    assert [r["threads"] for r in result.history] == [requested or 1] * 2
    assert torch.get_num_threads() == before

"""The experiment grid: the 24 published conditions (mode × task × loss × shared depth),
trained and tested on one shared split.

Small conditions (every one would train single-threaded, :mod:`apexmusic.threads`) run side by
side, one single-threaded process per core; bigger ones run one at a time with all threads.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from apexmusic import threads
from apexmusic.data import Dataset, Split
from apexmusic.model import HeadConfig, build_net, resolve_device
from apexmusic.train import LOSSES, MODES, TrainConfig, TrainResult, dataset_split, train

GRID_AXES: dict[str, tuple[Any, ...]] = {
    "mode": MODES,
    "task": ("full", "popularity"),
    "loss": LOSSES,
    "shared": (2, 3),
}


def grid_conditions() -> list[dict[str, Any]]:
    """The 24 published conditions: mode × task × loss × shared depth."""
    keys = list(GRID_AXES)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*GRID_AXES.values())]


def run_grid(
    dataset: Dataset,
    base: TrainConfig,
    out_dir: str | Path,
    on_progress: Callable[[int, int, dict[str, Any]], None] | None = None,
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """Train and test every condition on one shared split; write ``grid.csv`` and ``grid.md``.

    Rows hold the held-out Spearman, Pearson, MAE and R² per task (and means over tasks).
    ``workers`` processes train conditions side by side, one thread each; by default one per
    core when every condition is small work (:func:`apexmusic.threads.grid_workers`), else one.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    split = dataset_split(dataset, base)
    conditions = grid_conditions()
    jobs = [(replace(base, **cond), out_dir / f"log_{_condition_name(cond)}.jsonl") for cond in conditions]
    n_workers = threads.grid_workers(_small_conditions(dataset, base, split), len(jobs), workers)
    rows: list[dict[str, Any]] = [{} for _ in jobs]
    done = 0
    for i, row in _grid_rows(dataset, split, jobs, n_workers):
        rows[i] = {**conditions[i], **row}
        done += 1
        if on_progress:
            on_progress(done, len(conditions), rows[i])
    _write_grid(rows, out_dir)
    return rows


def _small_conditions(dataset: Dataset, base: TrainConfig, split: Split) -> bool:
    """Whether every grid condition would train single-threaded (then processes pay)."""
    if base.threads not in (None, 1) or resolve_device(base.device).type != "cpu":
        return False
    store = dataset.store
    biggest = HeadConfig(
        shared=max(GRID_AXES["shared"]), n_layers=store.layers.shape[1], dim=store.layers.shape[2]
    )
    n_params = sum(p.numel() for p in build_net(biggest, seed=None).parameters())
    rows = len(split.train) * (max(map(len, store.segments)) if store.segments is not None else 1)
    steps = math.ceil(rows / base.batch_size) * base.epochs
    flops = threads.step_flops(n_params, min(base.batch_size, rows))
    return threads.candidate_threads(flops, steps) == (1,)


def _grid_rows(dataset: Dataset, split: Split, jobs: list, n_workers: int) -> Iterator[tuple[int, dict]]:
    """``(condition index, row)`` as conditions finish, in this process or in ``n_workers``."""
    if n_workers <= 1:
        for i, (config, log_path) in enumerate(jobs):
            yield i, _grid_row(train(dataset, config, log_path=log_path, split=split))
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: never fork a process that holds torch threads
    with ProcessPoolExecutor(
        n_workers,
        mp_context=mp.get_context("spawn"),
        initializer=_grid_worker_init,
        initargs=(dataset, split),
    ) as pool:
        futures = {
            pool.submit(_grid_worker_train, replace(config, threads=1), log_path): i
            for i, (config, log_path) in enumerate(jobs)
        }
        for future in as_completed(futures):
            yield futures[future], future.result()


_WORKER_DATA: dict[str, Any] = {}


def _grid_worker_init(dataset: Dataset, split: Split) -> None:
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    _WORKER_DATA.update(dataset=dataset, split=split)


def _grid_worker_train(config: TrainConfig, log_path: Path) -> dict[str, Any]:
    return _grid_row(train(_WORKER_DATA["dataset"], config, log_path=log_path, split=_WORKER_DATA["split"]))


def _grid_row(result: TrainResult) -> dict[str, Any]:
    row: dict[str, Any] = {
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "seconds": round(result.seconds, 2),
    }
    metrics = result.evaluation.metrics if result.evaluation else {}
    for metric in ("spearman", "pearson", "mae", "r2"):
        values = [m.get(metric, math.nan) for m in metrics.values()]
        row[f"mean_{metric}"] = (
            float(np.nanmean(values)) if values and np.isfinite(values).any() else math.nan
        )
        for task, m in metrics.items():
            row[f"{task}_{metric}"] = m.get(metric, math.nan)
    return row


def _condition_name(cond: dict[str, Any]) -> str:
    return f"{cond['mode']}-{cond['task']}-{cond['loss']}-shared{cond['shared']}"


def _write_grid(rows: list[dict[str, Any]], out_dir: Path) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with (out_dir / "grid.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    cols = [
        "mode",
        "task",
        "loss",
        "shared",
        "mean_spearman",
        "score_streams_spearman",
        "score_likes_spearman",
        "mean_r2",
        "best_epoch",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
    (out_dir / "grid.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.3f}"
    return "–" if value is None else str(value)


__all__ = ["GRID_AXES", "grid_conditions", "run_grid"]

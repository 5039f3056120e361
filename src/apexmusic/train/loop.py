"""Training and evaluation.

:class:`TrainConfig` defaults are our recipe; :mod:`apexmusic.recipes` also names the official
script's (``paper``). Both: AdamW (lr 1e-4, weight decay 1e-4), batch 512, 50 epochs, cosine
schedule, gradient clipping at 1.0, early stopping with patience 20 on a validation loss, seed
42; losses ``equal``, ``weighted``
(popularity 5 : aesthetics 1) or ``uncertainty`` (per task ``L/(2σ²) + log σ``, ``log σ``
learned from 0). Every per-task MSE is masked, so a song lacking some labels still trains
the heads it has labels for.

Speed: the whole training set lives in one tensor, standardised (and, for fixed layer mixes,
mixed) once; batches are index lookups into it, never a DataLoader; the seven branches run
fused (:class:`apexmusic.model.FusedHead`); the loop never synchronises per step. Thread counts
follow :mod:`apexmusic.threads`: small heads train single-threaded, big ones time 1, half and all
threads as they go.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from apexmusic import devices, threads
from apexmusic.data import Dataset, given_split
from apexmusic.errors import DataError
from apexmusic.metrics import Evaluation, evaluate_predictions, write_evaluation
from apexmusic.model import ApexNet, HeadConfig, ModelDir, ScoringModel, build_net, resolve_device
from apexmusic.model.provenance import make_provenance, strip_paths
from apexmusic.splits import Split
from apexmusic.train.config import TrainConfig, training_precision
from apexmusic.train.loss import MultiTaskLoss
from apexmusic.train.tensors import (
    _inputs,
    _label_counts,
    _predict,
    _song_rows,
    _Tensors,
    _tensors,
    fit_standardisation,
)
from apexmusic.trust import Trust, check_split, fit_trust

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: ScoringModel
    split: Split
    history: list[dict[str, Any]]
    best_epoch: int
    evaluation: Evaluation | None  # held-out (test split) metrics; None without a test split
    test_predictions: np.ndarray | None = None
    seconds: float = 0.0
    songs_per_second: float = 0.0
    trust: Trust | None = None  # basis, calibrated intervals, domain statistics


ProgressFn = Callable[[dict[str, Any]], None]


def train(
    dataset: Dataset,
    config: TrainConfig | None = None,
    log_path: str | Path | None = None,
    on_progress: ProgressFn | None = None,
    split: Split | None = None,
) -> TrainResult:
    """Train one model on ``dataset`` and evaluate it on the held-out test split.

    ``on_progress`` gets each epoch's record (``epoch``, ``epochs``, losses, ...), which is
    also appended to ``log_path`` as one JSON line.
    """
    config = config or TrainConfig()
    most = config.threads or threads.max_threads()
    # Preparation is small work: one thread, so no kernel waits on a core another job holds.
    with threads.limit_threads(config.threads or 1):
        return _train(dataset, config, log_path, on_progress, split, most)


def _train(
    dataset: Dataset,
    config: TrainConfig,
    log_path: str | Path | None,
    on_progress: ProgressFn | None,
    split: Split | None,
    most_threads: int,
) -> TrainResult:
    started = time.perf_counter()
    tasks = config.tasks
    if dataset.tasks != tasks:
        dataset = replace(dataset, tasks=tasks)
    device = resolve_device(config.device)
    config = replace(config, precision=training_precision(config.precision, device))
    split = split or dataset_split(dataset, config)
    if len(split.train) < 2:
        raise DataError(f"only {len(split.train)} training songs; need at least 2")
    log.info("split %s: %s", config.split, split.sizes())
    check_split(split.sizes(), _label_counts(dataset, split.train), config.allow_small)
    store = dataset.store
    net = build_net(
        HeadConfig(
            tasks=tasks,
            shared=config.shared,
            n_layers=store.layers.shape[1],
            dim=store.layers.shape[2],
            mixing=config.mixing,
            standardize=config.standardize,
        ),
        seed=config.seed,
    ).to(device)
    if config.mode == "segment" and store.segments is None:
        raise DataError("--mode segment needs per-segment vectors: load the store with segments")

    train_raw = _inputs(dataset, split.train, config.mode)
    tuner = threads.ThreadTuner(_thread_candidates(net, len(train_raw[0]), config, device, most_threads))
    if config.standardize:
        fit_standardisation(net, train_raw[0])
    tr = _tensors(net, dataset, split.train, config.mode, device, raw=train_raw)
    va = _tensors(net, dataset, split.val, config.mode, device) if len(split.val) else None
    criterion = MultiTaskLoss(config.loss, tasks, config.popularity_weight).to(device)
    with threads.limit_threads(max(tuner.candidates)):
        history, best_epoch, best_state = _fit(net, criterion, tr, va, config, tuner, log_path, on_progress)
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()

    evaluation, test_pred = None, None
    if len(split.test):
        te = _tensors(net, dataset, split.test, config.mode, device)
        test_labels = dataset.labels.subset(split.test)
        with threads.limit_threads(tuner.current):
            test_pred = _predict(net, te)
            evaluation = evaluate_predictions(
                test_labels.ids,
                te.song_y,
                test_pred,
                tasks,
                test_labels.platform,
                n_boot=config.n_boot,
                seed=config.seed,
            )
    seconds = time.perf_counter() - started
    epochs_run = len(history)
    model = ScoringModel(
        net=net.cpu(),
        encoder_spec=store.spec,
        targets={
            "labels": strip_paths(dataset.labels.source),
            "popularity": dataset.labels.popularity,
            "tasks": list(tasks),
        },
        training={
            **asdict(config),
            "best_epoch": best_epoch,
            "epochs_run": epochs_run,
            "split_sizes": split.sizes(),
            "sigmas": criterion.sigmas(),
        },
        card={
            "title": f"APEX {config.task} model ({config.loss} loss, {config.mode} mode, "
            f"shared {config.shared})",
            "created": time.strftime("%Y-%m-%d"),
            "data": {
                "labels": strip_paths(dataset.labels.source),
                "songs": len(dataset),
                "split": f"{config.split}: {split.sizes()}",
                "labelled songs per task (train)": _label_counts(dataset, split.train),
                "songs without labels skipped": dataset.n_unlabelled,
                "label rows without a song": dataset.n_missing_songs,
                **({"small splits": "allowed (--allow-small)"} if config.allow_small else {}),
            },
            "metrics": {
                t: {k: v for k, v in m.items() if "_ci_" not in k} for t, m in evaluation.metrics.items()
            }
            if evaluation
            else {},
        },
        provenance=make_provenance(dataset.labels.source, config.simulated, len(dataset)),
    )
    rows = len(_song_rows(dataset, split.train, config.mode)) * epochs_run
    metrics = evaluation.metrics if evaluation else None
    trust = fit_trust(model, dataset, split, metrics, allow_small=config.allow_small)
    return TrainResult(
        model, split, history, best_epoch, evaluation, test_pred, seconds, rows / max(seconds, 1e-9), trust
    )


def dataset_split(dataset: Dataset, config: TrainConfig) -> Split:
    """The train / val / test split ``config`` asks for (``given``: the labels' split column)."""
    if config.split == "given":
        return given_split(dataset.labels)
    return dataset.split(config.split_config())


def _thread_candidates(
    net: ApexNet, rows: int, config: TrainConfig, device: torch.device, most: int
) -> tuple[int, ...]:
    if device.type != "cpu":  # the host only launches kernels
        return (most,)
    n_params = sum(p.numel() for p in net.parameters())
    batch = min(config.batch_size, rows)
    steps = math.ceil(rows / config.batch_size) * config.epochs
    return threads.candidate_threads(threads.step_flops(n_params, batch), steps, config.threads, most)


def _fit(
    net: ApexNet,
    criterion: MultiTaskLoss,
    tr: _Tensors,
    va: _Tensors | None,
    config: TrainConfig,
    tuner: threads.ThreadTuner,
    log_path: str | Path | None,
    on_progress: ProgressFn | None,
) -> tuple[list[dict[str, Any]], int, dict[str, torch.Tensor] | None]:
    decay = [p for p in net.parameters() if p.requires_grad]
    groups = [{"params": decay, "weight_decay": config.weight_decay}]
    if config.loss == "uncertainty":  # decay pulls every σ towards 1: ours spares them
        groups.append(
            {
                "params": list(criterion.parameters()),
                "weight_decay": config.weight_decay * config.decay_sigmas,
            }
        )
    # fused: one kernel per step instead of ~10 per parameter (a fifth of a small step on CPU)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    params = [p for g in groups for p in g["params"]]
    generator = torch.Generator().manual_seed(config.seed)
    log_file = Path(log_path).open("w", encoding="utf-8") if log_path else None
    history: list[dict[str, Any]] = []
    best_loss, best_epoch, best_state, waited = math.inf, 0, None, 0
    n = len(tr.x)
    autocast = _autocast(config.precision, tr.x.device)
    scaler = torch.amp.GradScaler(tr.x.device.type, enabled=config.precision == "fp16")
    try:
        for epoch in range(1, config.epochs + 1):
            t0 = time.perf_counter()
            net.train()
            order = epoch_order(n, epoch, config.shuffle, generator).to(tr.x.device)
            total = torch.zeros((), device=tr.x.device)
            steps = 0
            for start in range(0, n, config.batch_size):
                idx = order[start : start + config.batch_size]
                if len(idx) < 2:  # BatchNorm cannot train on one row
                    continue
                with tuner.step(len(idx)):
                    with autocast:
                        pred = net.forward_prepared(tr.x[idx])
                    loss = criterion(pred.float(), tr.y[idx], tr.mask[idx])
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                total += loss.detach()
                steps += 1
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            record: dict[str, Any] = {
                "epoch": epoch,
                "epochs": config.epochs,
                "lr": lr,
                "train_loss": float(total) / max(steps, 1),
                "threads": tuner.current,
            }
            if va is not None:
                record.update(_validate(net, criterion, va))
                if config.val_loss == "batches":
                    record["val_loss"] = _batch_mean_loss(net, criterion, va, config.batch_size, autocast)
            record["sigmas"] = criterion.sigmas()
            record["seconds"] = time.perf_counter() - t0
            history.append(record)
            if log_file:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            if on_progress:
                on_progress(record)
            if va is None:
                continue
            if record["val_loss"] < best_loss:
                best_loss, best_epoch, waited = record["val_loss"], epoch, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                waited += 1
                if waited >= config.patience:
                    log.info("early stop at epoch %d (best %d, val loss %.4f)", epoch, best_epoch, best_loss)
                    break
    finally:
        if log_file:
            log_file.close()
    return history, (best_epoch or len(history)), best_state


def epoch_order(n: int, epoch: int, shuffle: str, generator: torch.Generator) -> torch.Tensor:
    """Row order of one epoch: the next draw of ``generator``, or (``sampler``) what the
    official script's DistributedSampler (one replica, seed 0, ``set_epoch(epoch)``) yields."""
    if shuffle == "sampler":
        generator = torch.Generator().manual_seed(epoch)
    return torch.randperm(n, generator=generator)


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=devices.torch_dtype(precision))
    return contextlib.nullcontext()


@torch.no_grad()
def _batch_mean_loss(
    net: ApexNet, criterion: MultiTaskLoss, va: _Tensors, batch_size: int, autocast: Any
) -> float:
    """The official early-stopping criterion: the mean over validation batches (in order, rows
    as trained) of each batch's loss, predicted under the training autocast."""
    was = net.training
    net.eval()
    losses = []
    for s in range(0, len(va.x), batch_size):
        with autocast:
            pred = net.forward_prepared(va.x[s : s + batch_size])
        losses.append(criterion(pred.float(), va.y[s : s + batch_size], va.mask[s : s + batch_size]))
    net.train(was)
    return float(torch.stack(losses).mean())


@torch.no_grad()
def _validate(net: ApexNet, criterion: MultiTaskLoss, va: _Tensors) -> dict[str, Any]:
    from scipy.stats import spearmanr

    pred = _predict(net, va)
    y = va.song_y
    mask = np.isfinite(y)
    pred_t = torch.as_tensor(pred)
    mse, present = criterion.per_task(
        pred_t.to(criterion.weights.device),
        torch.as_tensor(np.nan_to_num(y)).float().to(criterion.weights.device),
        torch.as_tensor(mask).to(criterion.weights.device),
    )
    out: dict[str, Any] = {"val_loss": float(criterion.combine(mse, present))}
    tasks = net.config.tasks
    out["val_mse"] = {t: float(mse[i]) if bool(present[i]) else None for i, t in enumerate(tasks)}
    out["val_spearman"] = {}
    for i, t in enumerate(tasks):
        ok = mask[:, i]
        rho = spearmanr(y[ok, i], pred[ok, i])[0] if ok.sum() > 2 and np.ptp(pred[ok, i]) > 0 else None
        out["val_spearman"][t] = None if rho is None or not np.isfinite(rho) else float(rho)
    return out


def save_training_outputs(result: TrainResult, model_dir: str | Path) -> Path:
    """Model directory plus ``eval/`` (held-out metrics, rankings) next to the weights."""
    model_dir = result.model.save_pretrained(model_dir, trust=result.trust)
    if result.evaluation is not None:
        write_evaluation(result.evaluation, ModelDir(model_dir).eval_dir)
    return model_dir

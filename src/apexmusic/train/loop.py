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
from torch import nn

from apexmusic import devices, threads
from apexmusic.choices import LOSSES, MIXINGS, TRAIN_PRECISIONS
from apexmusic.data import Dataset, given_split
from apexmusic.errors import ConfigError, DataError
from apexmusic.metrics import Evaluation, evaluate_predictions, write_evaluation
from apexmusic.model import (
    POOLINGS,
    ApexNet,
    HeadConfig,
    ModelDir,
    ScoringModel,
    build_net,
    resolve_device,
    score_store_data,
    weighted_song_mean,
)
from apexmusic.model.provenance import make_provenance, strip_paths
from apexmusic.splits import Split, SplitConfig
from apexmusic.tasks import POPULARITY_TASKS, tasks_for
from apexmusic.trust import Trust, check_split, fit_trust

log = logging.getLogger(__name__)

MODES = POOLINGS  # the training mode is the model's inference pooling rule


@dataclass
class TrainConfig:
    """apexmusic's training recipe (``--recipe ours``); every field is a CLI flag.

    :mod:`apexmusic.recipes` names other sets of values (``paper``: the official script's).
    """

    task: str = "full"  # full | popularity
    loss: str = "uncertainty"  # equal | weighted | uncertainty (the best published)
    shared: int = 2  # 2 | 3 shared trunk layers
    mode: str = "song"  # song | segment
    mixing: str = "learned"  # reference | mean | learned
    epochs: int = 50
    batch_size: int = 512
    lr: float = 1e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    patience: int = 20
    seed: int = 42
    split: str = "random"  # random | creator | time | given (the labels' split column)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    device: str = "auto"
    # auto | fp32 | bf16 | fp16. bf16 autocasts the matmuls: on CPUs with AVX512-BF16/AMX it is
    # what brings 50 epochs on 211k songs under 5 minutes, with held-out metrics equal to fp32
    # within 0.004 Spearman (benchmarks/bench_train.py); `auto` picks it where the hardware has
    # it. fp16 autocasts to float16 with GradScaler loss scaling, as the official script does on
    # CUDA (on CPU, torch's CPU autocast: its op lists differ from CUDA's).
    precision: str = "auto"
    standardize: bool = True
    popularity_weight: float = 5.0  # the `weighted` loss: popularity : aesthetics = 5 : 1
    n_boot: int = 1000  # bootstrap resamples for the held-out intervals
    allow_small: bool = False  # train on splits below the trust minimums (apexmusic.trust.basis)
    simulated: bool = False  # the training songs are simulated (the demo): recorded as provenance
    threads: int | None = None  # CPU threads; None: apexmusic.threads picks (and re-checks)
    recipe: str = "ours"  # the apexmusic.recipes name these values came from (recorded)
    decay_sigmas: bool = False  # weight decay on the uncertainty loss's log σ too (the official script)
    # set: the objective on the whole validation split | batches: the mean of per-batch losses in
    # order, rows as trained (the official script's early-stopping criterion)
    val_loss: str = "set"
    # generator: one stream seeded with `seed` | sampler: each epoch torch.randperm seeded with the
    # epoch number (the official DistributedSampler on one GPU)
    shuffle: str = "generator"

    def __post_init__(self) -> None:
        tasks_for(self.task)
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}, not {self.loss!r}")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.precision not in TRAIN_PRECISIONS:
            raise ConfigError(f"precision must be one of {TRAIN_PRECISIONS}, not {self.precision!r}")
        if self.mixing not in MIXINGS:
            raise ConfigError(f"mixing must be one of {MIXINGS}, not {self.mixing!r}")
        if self.shared not in (2, 3):
            raise ConfigError(f"shared must be 2 or 3, not {self.shared!r}")
        if self.epochs < 1 or self.batch_size < 2 or not self.lr > 0 or self.patience < 1:
            raise ConfigError("epochs >= 1, batch size >= 2, lr > 0 and patience >= 1 are required")
        if not (
            self.weight_decay >= 0 and self.grad_clip > 0 and self.popularity_weight > 0 and self.n_boot >= 0
        ):
            raise ConfigError(
                "weight decay >= 0, grad clip > 0, popularity weight > 0 and n_boot >= 0 are required"
            )
        if self.val_loss not in ("set", "batches") or self.shuffle not in ("generator", "sampler"):
            raise ConfigError("val_loss must be set or batches, shuffle generator or sampler")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, not {self.threads}")
        SplitConfig(self.split, self.val_fraction, self.test_fraction, self.seed)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tasks_for(self.task)

    def split_config(self) -> SplitConfig:
        return SplitConfig(self.split, self.val_fraction, self.test_fraction, self.seed)


class MultiTaskLoss(nn.Module):
    """Masked per-task MSE combined as ``equal``, ``weighted`` or ``uncertainty``.

    A task with no label in the batch contributes nothing (not even its ``log σ`` term).
    """

    def __init__(self, kind: str, tasks: tuple[str, ...], popularity_weight: float = 5.0):
        super().__init__()
        self.kind = kind
        weights = [popularity_weight if t in POPULARITY_TASKS else 1.0 for t in tasks]
        self.register_buffer("weights", torch.tensor(weights if kind == "weighted" else [1.0] * len(tasks)))
        if kind == "uncertainty":
            self.log_sigma = nn.Parameter(torch.zeros(len(tasks)))

    def per_task(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple:
        sq = torch.where(mask, (pred - target) ** 2, torch.zeros((), device=pred.device))
        count = mask.sum(0)
        return sq.sum(0) / count.clamp(min=1), count > 0

    def combine(self, mse: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        if self.kind == "uncertainty":
            terms = 0.5 * torch.exp(-2.0 * self.log_sigma) * mse + self.log_sigma
        else:
            terms = self.weights * mse
        return torch.where(present, terms, torch.zeros((), device=mse.device)).sum()

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.combine(*self.per_task(pred, target, mask))

    def sigmas(self) -> list[float] | None:
        return torch.exp(self.log_sigma).tolist() if self.kind == "uncertainty" else None


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


@dataclass
class _Tensors:
    """One split as training tensors; ``song_of`` maps segment rows to song rows."""

    x: torch.Tensor  # prepared inputs [rows, D] or [rows, L, D]
    y: torch.Tensor  # [rows, T], missing labels as 0
    mask: torch.Tensor  # [rows, T] bool
    song_y: np.ndarray  # [songs, T] with NaN
    song_of: torch.Tensor | None = None  # [rows] song index (segment mode)
    row_weight: torch.Tensor | None = None  # [rows] segment weights (segment mode)

    @property
    def n_songs(self) -> int:
        return len(self.song_y)


ProgressFn = Callable[[dict[str, Any]], None]


def training_precision(precision: str, device: torch.device) -> str:
    """Resolve ``auto``: bf16 where the hardware runs it natively, else fp32 (fp16, with loss
    scaling, only when asked for)."""
    if precision == "fp16":
        return "fp16"
    resolved = devices.resolve_precision(precision, str(device))
    return "bf16" if resolved == "bf16" else "fp32"


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


@torch.no_grad()
def _predict(net: ApexNet, data: _Tensors, batch_size: int = 8192) -> np.ndarray:
    """Song-level predictions ``[songs, T]`` (segment rows averaged with their weights)."""
    was = net.training
    net.eval()
    out = torch.cat(
        [net.forward_prepared(data.x[s : s + batch_size]) for s in range(0, len(data.x), batch_size)]
    )
    net.train(was)
    rows = out.float().cpu().numpy()
    if data.song_of is None:
        return rows
    song_of, weights = data.song_of.cpu().numpy(), data.row_weight.cpu().numpy()
    return weighted_song_mean(rows, song_of, weights, data.n_songs).astype(np.float32)


# ---- inputs --------------------------------------------------------------------------------


def _song_rows(dataset: Dataset, index: np.ndarray, mode: str) -> np.ndarray:
    if mode == "song":
        return np.asarray(index)
    return np.repeat(np.asarray(index), [len(dataset.store.segments[i]) for i in index])


def _inputs(
    dataset: Dataset, index: np.ndarray, mode: str
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Raw input rows for songs ``index``: song vectors, or all their segment vectors."""
    store = dataset.store
    if mode == "song":
        return store.layers[index], None, None
    segs = [store.segments[i] for i in index]
    weights = [store.segment_weights[i] for i in index]
    song_of = np.repeat(np.arange(len(index)), [len(s) for s in segs])
    return np.concatenate(segs).astype(np.float32), song_of, np.concatenate(weights).astype(np.float32)


def _tensors(
    net: ApexNet,
    dataset: Dataset,
    index: np.ndarray,
    mode: str,
    device: torch.device,
    raw: tuple | None = None,
) -> _Tensors:
    x, song_of, weight = raw if raw is not None else _inputs(dataset, index, mode)
    song_y = dataset.targets[index]
    row_y = song_y if song_of is None else song_y[song_of]
    with torch.no_grad():
        prepared = net.prepare(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device)).contiguous()
    mask = torch.from_numpy(np.isfinite(row_y)).to(device)
    return _Tensors(
        x=prepared,
        y=torch.from_numpy(np.nan_to_num(row_y).astype(np.float32)).to(device),
        mask=mask,
        song_y=song_y,
        song_of=torch.from_numpy(song_of).to(device) if song_of is not None else None,
        row_weight=torch.from_numpy(weight).to(device) if weight is not None else None,
    )


def fit_standardisation(net: ApexNet, x: np.ndarray, chunk: int = 65536) -> None:
    """Set the network's input mean and std from training inputs (two passes, float64)."""
    cfg = net.config
    total, total_sq, n = 0.0, 0.0, 0
    for s in range(0, len(x), chunk):
        block = torch.from_numpy(np.ascontiguousarray(x[s : s + chunk], np.float32))
        if block.dim() == 2:
            block = block.unsqueeze(1)
        if not cfg.normalise_layers:
            with torch.no_grad():
                block = net.mixer(block.to(net.norm_mean.device)).cpu()
        block = block.double()
        total = total + block.sum(0)
        total_sq = total_sq + (block**2).sum(0)
        n += len(block)
    mean = total / n
    std = torch.sqrt(torch.clamp(total_sq / n - mean**2, min=0.0))
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    net.norm_mean.copy_(mean.float())
    net.norm_std.copy_(std.float())


def _label_counts(dataset: Dataset, index: np.ndarray) -> dict[str, int]:
    y = dataset.targets[index]
    return {t: int(np.isfinite(y[:, i]).sum()) for i, t in enumerate(dataset.tasks)}


# ---- evaluation of a saved model -------------------------------------------------------------


def predict_dataset(model: ScoringModel, dataset: Dataset, batch_size: int = 8192) -> np.ndarray:
    """Song-level predictions ``[N, len(model.tasks)]`` under the model's pooling rule."""
    return score_store_data(model, dataset.store, batch_size=batch_size)


def evaluate_model(
    model: ScoringModel, dataset: Dataset, n_boot: int = 1000, seed: int = 0, n_threads: int | None = None
) -> Evaluation:
    """Metrics of ``model`` on every labelled song of ``dataset`` (its tasks only); single-threaded
    for small work unless ``n_threads`` says otherwise (:mod:`apexmusic.threads`)."""
    dataset = replace(dataset, tasks=model.tasks)
    n_params = sum(p.numel() for p in model.net.parameters())
    rows = sum(len(s) for s in dataset.store.segments) if model.pooling == "segment" else len(dataset)
    count = threads.inference_threads(
        threads.step_flops(n_params, rows or len(dataset), backward=False), n_threads
    )
    with threads.limit_threads(count):
        pred = predict_dataset(model, dataset)
        return evaluate_predictions(
            dataset.labels.ids,
            dataset.targets,
            pred,
            model.tasks,
            dataset.labels.platform,
            n_boot=n_boot,
            seed=seed,
        )


def save_training_outputs(result: TrainResult, model_dir: str | Path) -> Path:
    """Model directory plus ``eval/`` (held-out metrics, rankings) next to the weights."""
    model_dir = result.model.save_pretrained(model_dir, trust=result.trust)
    if result.evaluation is not None:
        write_evaluation(result.evaluation, ModelDir(model_dir).eval_dir)
    return model_dir


__all__ = [
    "LOSSES",
    "MODES",
    "MultiTaskLoss",
    "TrainConfig",
    "TrainResult",
    "dataset_split",
    "evaluate_model",
    "predict_dataset",
    "save_training_outputs",
    "train",
]

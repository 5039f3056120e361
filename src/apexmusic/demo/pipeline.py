"""One encoder end to end: embed the corpus, train the multi-task model and the popularity-only
ablation, calibrate the intervals, evaluate, run the arena, save the models."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from apexmusic.demo.arena import _arena
from apexmusic.demo.config import DemoConfig, ProgressFn
from apexmusic.demo.evaluation import _evaluate
from apexmusic.demo.summary import _headline
from apexmusic.errors import ConfigError, StoreError
from apexmusic.tasks import ALL_TASKS

log = logging.getLogger(__name__)


@dataclass
class _Run:
    """What one encoder's pipeline produced."""

    encoder: str
    headline: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)


def _run_pipeline(
    out: Path,
    root: Path,
    corpus,
    config: DemoConfig,
    encoder: str,
    weights: str | None,
    progress: ProgressFn,
    timings: dict[str, float],
) -> _Run:
    tag = "" if out == root else f" [{encoder}]"
    t0 = time.perf_counter()
    store_dir = _embed(root, corpus, encoder, weights, config, progress, tag)
    timings["embed"] = time.perf_counter() - t0

    dataset, styles = _load_dataset(corpus, store_dir)
    in_dist = np.flatnonzero(np.isin(styles, corpus.train_styles))
    heldout = np.flatnonzero(np.isin(styles, corpus.heldout_styles))
    ds_in, ds_held = dataset.subset(in_dist), dataset.subset(heldout)

    t0 = time.perf_counter()
    full = _train(
        ds_in, config, "full", out / "logs" / "train_full.jsonl", progress, f"train multi-task{tag}"
    )
    pop = _train(
        ds_in,
        config,
        "popularity",
        out / "logs" / "train_popularity.jsonl",
        progress,
        f"train popularity-only{tag}",
        split=full.split,
    )
    if config.conformal_folds:
        _cross_conformal(ds_in, config, full, out / "logs" / "train_folds.jsonl", progress, tag)
    timings["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    progress(f"evaluate{tag}", 0, 1)
    evaluation = _evaluate(out, corpus, config, ds_in, ds_held, styles[in_dist], styles[heldout], full, pop)
    progress(f"evaluate{tag}", 1, 1)
    timings["evaluate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    progress(f"arena{tag}", 0, 1)
    arena = _arena(out, corpus, config, ds_held, full.model)
    progress(f"arena{tag}", 1, 1)
    timings["arena"] = time.perf_counter() - t0

    from apexmusic.train import save_training_outputs

    model_dir = save_training_outputs(full, out / "model")
    save_training_outputs(pop, out / "model-popularity")
    from apexmusic.model import ModelDir

    ModelDir(model_dir).save_comparator(arena.pop("comparator"))
    headline = _headline(evaluation, arena)
    details = {
        "evaluation": evaluation,
        "arena": arena,
        "model_dir": str(model_dir),
        "embeddings": str(store_dir),
        "training": {"multi_task": _train_info(full), "popularity_only": _train_info(pop)},
        "trust": _trust_info(full, ds_held),
    }
    return _Run(encoder, headline, details)


def _embed(
    root: Path, corpus, encoder: str, weights: str | None, config: DemoConfig, progress: ProgressFn, tag: str
) -> Path:
    from apexmusic.embed import EmbedConfig, embed_inputs
    from apexmusic.sources import read_manifest

    store_dir = root / "embeddings" / f"{encoder}-n{corpus.n_songs}-s{corpus.seed}"
    if not corpus.cached and store_dir.exists():
        shutil.rmtree(store_dir)  # the audio was re-rendered: old vectors are stale
    songs = read_manifest(corpus.metadata_path)
    stage = f"embed{tag}"

    def on_progress(p) -> None:
        progress(stage, p.done + p.failed, p.total)

    embed_config = EmbedConfig(encoder=encoder, weights=weights, resume=True)
    try:
        report = embed_inputs(songs, store_dir, embed_config, on_progress=on_progress)
    except StoreError as exc:  # the demo's own cache, made with other encoder settings: redo it
        log.warning("re-embedding %s: %s", store_dir, exc)
        shutil.rmtree(store_dir)
        report = embed_inputs(songs, store_dir, embed_config, on_progress=on_progress)
    progress(stage, len(songs), len(songs))
    if report.n_failed:
        raise ConfigError(f"{report.n_failed} simulated songs failed to embed: {report.failures[:3]}")
    return store_dir


def _load_dataset(corpus, store_dir: Path):
    from apexmusic.data import join_labels, load_labels
    from apexmusic.store import EmbeddingStore

    labels = load_labels(corpus.metadata_path, preset="plain")
    store = EmbeddingStore.open(store_dir).load()
    dataset = join_labels(store, labels, ALL_TASKS)
    # Store rows come in the order songs finished embedding; sorting by id makes the seeded
    # split the same songs for every encoder, so encoders are compared on identical test songs.
    dataset = dataset.subset(np.argsort(np.asarray(dataset.labels.ids, dtype=object).astype(str)))
    styles = np.asarray(dataset.labels.extra["style"], dtype=object).astype(str)
    return dataset, styles


def _train(
    dataset, config: DemoConfig, task: str, log_path: Path, progress: ProgressFn, stage: str, split=None
):
    from apexmusic.train import TrainConfig, train

    log_path.parent.mkdir(parents=True, exist_ok=True)
    train_config = TrainConfig(
        task=task,
        loss="uncertainty",
        shared=2,
        mode="song",
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        patience=config.patience,
        seed=config.train_seed,
        split="random",
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        device=config.device,
        n_boot=config.n_boot,
        simulated=True,
    )
    result = train(  # a small MLP: the thread policy trains it single-threaded
        dataset,
        train_config,
        log_path=log_path,
        split=split,
        on_progress=lambda r: progress(stage, r["epoch"], r["epochs"]),
    )
    progress(stage, train_config.epochs, train_config.epochs)
    return result


def _cross_conformal(
    dataset, config: DemoConfig, full, log_path: Path, progress: ProgressFn, tag: str
) -> None:
    """Replace the served model's split-conformal intervals by cross-conformal ones: fold models
    trained on the training + validation songs less one fold each give every one of those songs
    an out-of-fold residual; the test split stays untouched and measures the result."""
    from apexmusic.data import Split
    from apexmusic.trust import MIN_HELDOUT_SONGS, fit_cross_conformal, measure

    rng = np.random.default_rng(config.train_seed)
    pool = rng.permutation(np.concatenate([full.split.train, full.split.val]))
    fold = np.arange(len(pool)) % config.conformal_folds
    tasks = tuple(full.model.tasks)
    oof = np.full((len(pool), len(tasks)), np.nan)
    for k in range(config.conformal_folds):
        rest = rng.permutation(pool[fold != k])
        n_val = max(MIN_HELDOUT_SONGS, round(config.val_fraction * len(rest)))  # early stopping
        split = Split(train=np.sort(rest[n_val:]), val=np.sort(rest[:n_val]), test=pool[fold == k])
        result = _train(dataset, config, "full", log_path, progress, f"train fold {k + 1}{tag}", split=split)
        oof[fold == k] = result.test_predictions
    intervals = fit_cross_conformal(tasks, dataset.targets[pool], oof, fold, full.trust.intervals.level)
    full.trust.intervals = measure(intervals, tasks, dataset.targets[full.split.test], full.test_predictions)


def _train_info(result) -> dict[str, Any]:
    return {
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "seconds": round(result.seconds, 2),
        "split_sizes": result.split.sizes(),
    }


def _trust_info(result, ds_held) -> dict[str, Any] | None:
    """The model's trust statistics, plus how many held-out-style songs its alarm flags (they
    come from generators never seen in training, so flags there are expected)."""
    from apexmusic.trust import head_inputs

    trust = result.trust
    if trust is None:
        return None
    info = trust.summary()
    domain = trust.domain
    if domain is not None and domain.threshold is not None and len(ds_held):
        distance = domain.distance(head_inputs(result.model, ds_held.store.layers))
        info["domain"]["heldout_styles_flagged"] = float((~domain.in_domain(distance)).mean())
    return info

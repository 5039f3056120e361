"""The offline end-to-end demo: simulated corpus → embeddings → models → evaluation → arena → report.

Every stage is the real code path (``synth``, ``embed``, ``data``, ``train``, ``metrics``,
``arena``, ``report``); only the songs are simulated. ``run_demo`` returns the summary that it
also writes to ``OUT/summary.json``; the CLI prints it. Layout of ``OUT``::

    corpus/                       the simulated corpus (cached by its settings)
    embeddings/<encoder>-n<N>-s<seed>/   embedding store (resumed, not recomputed)
    model/                        the multi-task model (+ comparator.json, eval/)
    model-popularity/             the popularity-only ablation
    logs/train_<name>.jsonl       per-epoch training logs
    predictions.csv               held-out predictions (test songs and held-out styles)
    arena/arena_metrics.json      arena evaluation with and without aesthetic scores
    compare/<encoder>/            the same pipeline per extra encoder (``compare_encoders``)
    summary.json, report.html

Training recipe: the published best condition (song mode, full task, uncertainty loss, two
shared layers) with the published head; only batch size, learning rate and epochs are scaled
to a corpus of hundreds of songs instead of 211,000 (batch 512 would be one step per epoch).
"""

from __future__ import annotations

import csv
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from apexmusic.arena import write_json
from apexmusic.errors import ConfigError, StoreError
from apexmusic.metrics import rowwise_spearman
from apexmusic.paths import output_dir
from apexmusic.tasks import AESTHETIC_TASKS, ALL_TASKS, POPULARITY_TASKS

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int | None], None]  # stage, done, total


@dataclass
class DemoConfig:
    n_songs: int = 600
    seed: int = 0
    encoder: str = "handcrafted"
    weights: str | None = None
    compare_encoders: tuple[str, ...] = ()
    epochs: int = 80
    batch_size: int = 64
    lr: float = 1e-3
    patience: int = 20
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    n_boot: int = 1000
    arena_folds: int = 10
    workers: int | None = None
    device: str = "cpu"
    train_seed: int = 42
    # Intervals from the out-of-fold residuals of this many fold models over the training and
    # validation songs (0: split-conformal on the validation split alone); see docs/trust.md.
    conformal_folds: int = 5

    def __post_init__(self) -> None:
        # 15 per style: enough for the trust minimums (apexmusic.trust.basis) on the split below.
        if self.n_songs < 120:
            raise ConfigError(f"the demo needs at least 120 songs (15 per style), got {self.n_songs}")
        if self.epochs < 1 or self.batch_size < 2 or not self.lr > 0 or self.patience < 1:
            raise ConfigError("epochs >= 1, batch size >= 2, lr > 0 and patience >= 1 are required")
        if self.n_boot < 0 or self.arena_folds < 2 or (self.workers is not None and self.workers < 0):
            raise ConfigError("n_boot >= 0, arena_folds >= 2 and workers >= 0 are required")
        fractions = (self.val_fraction, self.test_fraction)
        if not (min(fractions) > 0 and sum(fractions) < 1):
            raise ConfigError("val_fraction and test_fraction must be positive and sum to less than 1")
        from apexmusic.encoders import available_encoders

        known = available_encoders()
        unknown = [e for e in (self.encoder, *self.compare_encoders) if e not in known]
        if unknown:
            raise ConfigError(f"unknown encoder {unknown[0]!r}; choose from {', '.join(known)}")
        if self.conformal_folds == 1 or self.conformal_folds < 0:
            raise ConfigError(f"conformal_folds must be 0 or at least 2, got {self.conformal_folds}")


@dataclass
class _Run:
    """What one encoder's pipeline produced."""

    encoder: str
    headline: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)


def run_demo(
    out_dir: str | Path, config: DemoConfig | None = None, on_progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Run the whole demo into ``out_dir``; return (and write) the summary."""
    config = config or DemoConfig()
    out = Path(out_dir)
    output_dir(out)
    progress = on_progress or (lambda stage, done, total: None)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    from apexmusic.synth import generate_corpus

    t0 = time.perf_counter()
    corpus = generate_corpus(
        out / "corpus",
        config.n_songs,
        config.seed,
        on_progress=lambda d, t: progress("generate", d, t),
        workers=config.workers,
    )
    timings["generate"] = time.perf_counter() - t0

    main = _run_pipeline(out, out, corpus, config, config.encoder, config.weights, progress, timings)
    comparison = {}
    for name in config.compare_encoders:
        if name == config.encoder:
            continue
        sub_timings: dict[str, float] = {}
        other = _run_pipeline(out / "compare" / name, out, corpus, config, name, None, progress, sub_timings)
        comparison[name] = {"headline": other.headline, "timings_s": sub_timings}
    timings["total"] = time.perf_counter() - started

    summary = {
        "what": "apexmusic offline demo on a SIMULATED corpus; numbers describe the simulator, "
        "not real songs",
        "config": asdict(config),
        "corpus": {
            "dir": str(corpus.root),
            "n_songs": corpus.n_songs,
            "seed": corpus.seed,
            "train_styles": list(corpus.train_styles),
            "heldout_styles": list(corpus.heldout_styles),
            "cached": corpus.cached,
            "label_stats": corpus.stats,
        },
        "encoder": config.encoder,
        "headline": main.headline,
        **main.details,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    if comparison:
        summary["encoder_comparison"] = _compare(
            config.encoder, main.headline, comparison, out, config.n_boot
        )
    write_json(summary, out / "summary.json")
    t0 = time.perf_counter()
    progress("report", 0, 1)
    from apexmusic.report import write_report

    write_report(out, out / "report.html")
    progress("report", 1, 1)
    summary["timings_s"]["report"] = round(time.perf_counter() - t0, 2)
    write_json(summary, out / "summary.json")
    return summary


# --- one encoder, end to end ----------------------------------------------------------------


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


# --- evaluation ------------------------------------------------------------------------------


def _evaluate(out: Path, corpus, config, ds_in, ds_held, styles_in, styles_held, full, pop) -> dict:
    from apexmusic.metrics import evaluate_predictions, regression_metrics
    from apexmusic.train import predict_dataset

    test = full.split.test
    ds_test = ds_in.subset(test)
    y_test = ds_test.targets  # full task order = ALL_TASKS
    pred_full = predict_dataset(full.model, ds_test)
    pred_pop = predict_dataset(pop.model, replace(ds_test, tasks=pop.model.tasks))
    train_mean = np.nanmean(ds_in.subset(full.split.train).targets, axis=0)

    held_full = predict_dataset(full.model, ds_held)
    held_pop = predict_dataset(pop.model, replace(ds_held, tasks=pop.model.tasks))
    y_held = ds_held.targets
    held_eval = evaluate_predictions(
        ds_held.labels.ids,
        y_held,
        held_full,
        ALL_TASKS,
        np.asarray(styles_held, dtype=object),
        n_boot=config.n_boot,
        seed=config.train_seed,
    )
    held_pop_eval = evaluate_predictions(
        ds_held.labels.ids,
        y_held[:, :2],
        held_pop,
        POPULARITY_TASKS,
        n_boot=config.n_boot,
        seed=config.train_seed,
    )

    mean_baseline = {}
    for i, task in enumerate(ALL_TASKS):
        constant = np.full(len(y_test), train_mean[i])
        mse_model = regression_metrics(y_test[:, i], pred_full[:, i], n_boot=0)["mse"]
        mse_mean = regression_metrics(y_test[:, i], constant, n_boot=0)["mse"]
        mean_baseline[task] = {
            "mse_model": mse_model,
            "mse_mean_predictor": mse_mean,
            "skill": 1.0 - mse_model / mse_mean if mse_mean > 0 else math.nan,
        }

    truth = _truth_table(corpus)
    ceiling = _label_ceiling(truth, ds_test.labels.ids, y_test, pred_full)
    per_style = _per_style(
        np.concatenate([styles_in[test], styles_held]),
        np.concatenate([y_test, y_held]),
        np.concatenate([pred_full, held_full]),
    )
    _write_predictions(
        out / "predictions.csv",
        ds_test,
        ds_held,
        styles_in[test],
        styles_held,
        y_test,
        y_held,
        pred_full,
        held_full,
        pred_pop,
        held_pop,
    )
    return {
        "test_songs": {
            "n": len(test),
            "multi_task": full.evaluation.metrics,
            "popularity_only": pop.evaluation.metrics,
            "mean_predictor": mean_baseline,
        },
        "heldout_styles": {
            "n": len(ds_held),
            "styles": list(corpus.heldout_styles),
            "multi_task": held_eval.metrics,
            "popularity_only": held_pop_eval.metrics,
        },
        "per_style_spearman": per_style,
        "label_ceiling": ceiling,
    }


def _truth_table(corpus) -> dict[str, dict[str, str]]:
    return _rows_by_id(corpus.truth_path)


def _rows_by_id(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {r["id"]: r for r in csv.DictReader(f)}


def _label_ceiling(truth, ids, y, pred) -> dict[str, dict[str, float]]:
    """How well the hidden (noise-free) factor itself ranks the noisy rater means, next to how
    well the model's prediction ranks the hidden factor: the ratings' noise caps any model."""
    from scipy.stats import spearmanr

    out = {}
    for i, task in enumerate(ALL_TASKS[2:], start=2):
        z = np.array([float(truth[s][f"z_{task}"]) for s in ids])
        ok = np.isfinite(y[:, i])
        out[task] = {
            "hidden_vs_label": float(spearmanr(z[ok], y[ok, i])[0]),
            "model_vs_hidden": float(spearmanr(z, pred[:, i])[0]),
        }
    return out


def _per_style(styles: np.ndarray, y: np.ndarray, pred: np.ndarray) -> dict[str, dict[str, Any]]:
    from scipy.stats import spearmanr

    out: dict[str, dict[str, Any]] = {}
    for style in sorted(set(styles.tolist())):
        m = styles == style
        row: dict[str, Any] = {"n": int(m.sum())}
        for i, task in enumerate(ALL_TASKS):
            ok = m & np.isfinite(y[:, i])
            rho = spearmanr(y[ok, i], pred[ok, i])[0] if ok.sum() >= 5 and np.ptp(pred[ok, i]) > 0 else None
            row[task] = None if rho is None or not np.isfinite(rho) else float(rho)
        out[style] = row
    return out


def _write_predictions(
    path: Path, ds_test, ds_held, st_test, st_held, y_test, y_held, p_full, h_full, p_pop, h_pop
) -> None:
    header = ["id", "style", "group"]
    header += [f"true_{t}" for t in ALL_TASKS] + [f"pred_{t}" for t in ALL_TASKS]
    header += [f"poponly_{t}" for t in POPULARITY_TASKS]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for group, ds, st, y, p, pp in (
            ("test", ds_test, st_test, y_test, p_full, p_pop),
            ("heldout_style", ds_held, st_held, y_held, h_full, h_pop),
        ):
            for k, song_id in enumerate(ds.labels.ids):
                w.writerow([song_id, st[k], group, *_fmt_row(y[k]), *_fmt_row(p[k]), *_fmt_row(pp[k])])


def _fmt_row(values) -> list[str]:
    return ["" if not np.isfinite(v) else f"{float(v):.4f}" for v in values]


# --- arena -----------------------------------------------------------------------------------


def _arena(out: Path, corpus, config: DemoConfig, ds_held, model) -> dict[str, Any]:
    from apexmusic.arena import (
        EvalConfig,
        PreferenceComparator,
        ScoreTable,
        attach_scores,
        evaluate_arena,
        load_battles,
    )
    from apexmusic.train import predict_dataset

    pred = predict_dataset(model, ds_held)
    scores = ScoreTable(
        ids=list(ds_held.labels.ids),
        paths=list(ds_held.store.paths),
        values={t: pred[:, i] for i, t in enumerate(ALL_TASKS)},
    )
    battles, join = attach_scores(load_battles(corpus.battles_path), scores)
    # The paper's five classifiers (a minute of grid searches) are left to `apexmusic arena eval`.
    arena_config = EvalConfig(
        n_bootstrap=config.n_boot, folds=config.arena_folds, seed=config.seed, paper=None
    )
    result = evaluate_arena(battles, arena_config, join)
    (out / "arena").mkdir(parents=True, exist_ok=True)
    write_json(result, out / "arena" / "arena_metrics.json")
    truth = _truth_table(corpus)
    ceiling = _oracle_accuracy(battles, truth)
    comparator = PreferenceComparator().fit(battles)
    rules = {
        name: {k: entry.get(k) for k in ("n", "accuracy", "accuracy_ci", "auc", "auc_ci")}
        for name, entry in result["rules"].items()
    }
    learned = {
        name: {
            m: {k: v for k, v in entry[m].items() if not k.endswith("_folds")}
            for m in ("logistic_regression", "gradient_boosting")
            if m in entry
        }
        for name, entry in result["learned"].items()
    }
    return {
        "n_battles": len(battles),
        "matched": join.n_matched,
        "rules": rules,
        "learned": learned,
        "hidden_preference_accuracy": ceiling,
        "comparator": comparator,
    }


def _oracle_accuracy(battles, truth) -> float | None:
    """Accuracy of the simulator's own hidden listener preference on decisive battles: the
    ceiling that per-vote noise leaves to any score."""
    right, n = 0, 0
    for a, b, pref in zip(battles.audio_a, battles.audio_b, battles.preference, strict=True):
        if pref not in ("A", "B"):
            continue
        ta, tb = truth.get(Path(str(a)).stem), truth.get(Path(str(b)).stem)
        if ta is None or tb is None:
            continue
        a_better = float(ta["listener_preference"]) > float(tb["listener_preference"])
        right += a_better == (pref == "A")
        n += 1
    return right / n if n else None


# --- summary ---------------------------------------------------------------------------------


def _headline(evaluation: dict, arena: dict) -> dict[str, Any]:
    test = evaluation["test_songs"]
    held = evaluation["heldout_styles"]

    def spearman(metrics: dict, tasks) -> dict[str, float]:
        return {t: metrics[t]["spearman"] for t in tasks if t in metrics}

    aes_test = spearman(test["multi_task"], AESTHETIC_TASKS)
    rules = arena["rules"]
    learned = arena["learned"]
    return {
        "test_spearman": spearman(test["multi_task"], ALL_TASKS),
        "test_spearman_ci": {
            t: [test["multi_task"][t].get("spearman_ci_low"), test["multi_task"][t].get("spearman_ci_high")]
            for t in ALL_TASKS
        },
        "test_aesthetic_spearman_mean": float(np.mean(list(aes_test.values()))),
        "test_popularity_spearman_multi_task": spearman(test["multi_task"], POPULARITY_TASKS),
        "test_popularity_spearman_popularity_only": spearman(test["popularity_only"], POPULARITY_TASKS),
        "test_skill_vs_mean_predictor": {t: v["skill"] for t, v in test["mean_predictor"].items()},
        "heldout_style_spearman": spearman(held["multi_task"], ALL_TASKS),
        "heldout_style_aesthetic_spearman_mean": float(
            np.mean(list(spearman(held["multi_task"], AESTHETIC_TASKS).values()))
        ),
        "arena_rule_accuracy": {
            k: rules[k]["accuracy"]
            for k in ("apex_popularity_z", "apex_aesthetics_z", "apex_all_z")
            if k in rules
        },
        "arena_rule_accuracy_ci": {
            k: rules[k]["accuracy_ci"]
            for k in ("apex_popularity_z", "apex_aesthetics_z", "apex_all_z")
            if k in rules
        },
        "arena_learned_auc": {
            name: {m: v["auc_mean"] for m, v in entry.items()} for name, entry in learned.items()
        },
        "arena_learned_accuracy": {
            name: {m: v["accuracy_mean"] for m, v in entry.items()} for name, entry in learned.items()
        },
        "arena_hidden_preference_accuracy": arena["hidden_preference_accuracy"],
    }


def _compare(primary: str, main: dict, others: dict, out: Path, n_boot: int) -> dict[str, Any]:
    """Per encoder the held-out headline numbers, and which encoder wins each."""
    encoders = {primary: main, **{k: v["headline"] for k, v in others.items()}}
    keys = {
        "test_aesthetic_spearman_mean": lambda h: h["test_aesthetic_spearman_mean"],
        "test_streams_spearman": lambda h: h["test_spearman"]["score_streams"],
        "test_likes_spearman": lambda h: h["test_spearman"]["score_likes"],
        "heldout_style_aesthetic_spearman_mean": lambda h: h["heldout_style_aesthetic_spearman_mean"],
        "arena_lr_auc_with_aesthetics": lambda h: (
            h["arena_learned_auc"].get("popularity+aesthetics", {}).get("logistic_regression")
        ),
    }
    table = {name: {k: f(h) for k, f in keys.items()} for name, h in encoders.items()}
    winners = {}
    for k in keys:
        vals = {n: v[k] for n, v in table.items() if v[k] is not None and np.isfinite(v[k])}
        winners[k] = max(vals, key=vals.get) if vals else None
    differences = {
        name: _paired_difference(out / "predictions.csv", out / "compare" / name / "predictions.csv", n_boot)
        for name in others
    }
    return {
        "metrics": table,
        "best": winners,
        "paired_difference_vs_" + primary: differences,
        "timings_s": {k: v["timings_s"] for k, v in others.items()},
    }


def _paired_difference(primary_csv: Path, other_csv: Path, n_boot: int, seed: int = 0) -> dict[str, Any]:
    """Spearman(other) - Spearman(primary) on the same songs, with a paired bootstrap 95% interval
    (songs resampled once for both encoders), per group (test songs, held-out styles) and for the
    mean over the aesthetic tasks and each popularity task."""
    a, b = _rows_by_id(primary_csv), _rows_by_id(other_csv)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for group in ("test", "heldout_style"):
        ids = sorted(i for i in a if i in b and a[i]["group"] == group == b[i]["group"])
        if len(ids) < 5:
            continue
        boot = rng.integers(0, len(ids), (n_boot, len(ids)))
        result: dict[str, Any] = {"n": len(ids)}
        for name, tasks in (("aesthetic_mean", AESTHETIC_TASKS), *((t, (t,)) for t in POPULARITY_TASKS)):
            diffs = []
            for rows in (np.arange(len(ids))[None, :], boot):
                per_task = []
                for t in tasks:
                    y = np.array([float(a[i][f"true_{t}"]) for i in ids])
                    pa = np.array([float(a[i][f"pred_{t}"]) for i in ids])
                    pb = np.array([float(b[i][f"pred_{t}"]) for i in ids])
                    per_task.append(rowwise_spearman(y[rows], pb[rows]) - rowwise_spearman(y[rows], pa[rows]))
                diffs.append(np.mean(per_task, axis=0))
            lo, hi = np.nanquantile(diffs[1], [0.025, 0.975])
            result[name] = {"difference": float(diffs[0][0]), "ci": [float(lo), float(hi)]}
        out[group] = result
    return out


__all__ = ["DemoConfig", "run_demo"]

"""``apexmusic train``, ``evaluate`` and ``grid``: fit and measure scoring models on an embedding store."""

from __future__ import annotations

import sys

from apexmusic.cli.common import EXIT_OK, _default_from, _progress_bar


def _add_training_args(p, grid: bool = False) -> None:
    """Flags shared by `train` and `grid`. A flag left out takes TrainConfig's default (the
    published recipe); those defaults are read only when help is shown, so that building the
    parser does not import torch."""
    from apexmusic.choices import COHORTS, LABEL_PRESETS, LOSSES, MIXINGS, POOLINGS, SPLITS, TRAIN_PRECISIONS
    from apexmusic.tasks import TASK_SETS

    def recipe(*flags, **kwargs) -> None:
        _default_from(p.add_argument(*flags, default=None, **kwargs), "apexmusic.train:TrainConfig")

    from apexmusic.recipes import RECIPES

    p.add_argument("--embeddings", required=True, help="embedding store folder (apexmusic embed --out)")
    p.add_argument(
        "--labels",
        required=True,
        nargs="+",
        help="labels file(s): CSV/JSON/JSONL/Parquet; several files are merged by id",
    )
    p.add_argument("--out", required=True, help="output folder" if grid else "model directory to write")
    p.add_argument(
        "--preset",
        default="auto",
        choices=LABEL_PRESETS,
        help="labels column mapping (auto: detect from the columns)",
    )
    _add_strict(p)
    if not grid:
        recipe("--task", choices=tuple(TASK_SETS), help="tasks: all seven or streams and likes only")
        recipe("--loss", choices=LOSSES, help="how the per-task losses combine")
        recipe("--shared", type=int, choices=(2, 3), help="shared trunk layers")
        recipe("--mode", choices=POOLINGS, help="train on song vectors or on segment vectors")
    p.add_argument(
        "--recipe",
        default="ours",
        choices=list(RECIPES),
        help="; ".join(f"{r.name}: {r.summary}" for r in RECIPES.values()) + " (docs/training.md)",
    )
    recipe("--mixing", choices=MIXINGS, help="how stored hidden states become one vector")
    recipe(
        "--split",
        choices=SPLITS,
        help="how songs are split into train / validation / test (given: the labels' `split` column)",
    )
    recipe("--val-fraction", type=float, help="share of songs held out for validation")
    recipe("--test-fraction", type=float, help="share of songs held out for the test")
    recipe("--epochs", type=int, help="training epochs")
    recipe("--batch-size", type=int, help="songs per optimiser step")
    recipe("--lr", type=float, help="AdamW learning rate")
    recipe("--weight-decay", type=float, help="AdamW weight decay")
    recipe("--patience", type=int, help="early stopping patience (epochs)")
    recipe("--seed", type=int, help="seed of the split and the initialisation")
    recipe("--device", help="auto | cpu | cuda[:N]")
    recipe(
        "--precision",
        choices=TRAIN_PRECISIONS,
        help="auto: bf16 matmuls where the hardware runs them natively (AVX512-BF16/AMX CPUs, GPUs), "
        "else fp32; fp16: float16 autocast with loss scaling, as the official script on CUDA",
    )
    p.add_argument("--no-standardize", action="store_true", help="skip input standardisation")
    _add_threads_arg(p)
    if grid:
        p.add_argument(
            "--workers",
            type=int,
            default=None,
            help="conditions trained side by side, one process each (default: one per core when "
            "every condition is small work, else 1)",
        )
    p.add_argument(
        "--allow-small",
        action="store_true",
        help="train even on a split below the minimum to evaluate (docs/trust.md); tasks under the "
        "minimum are then served, marked as such",
    )
    p.add_argument(
        "--popularity-exponent",
        type=float,
        default=1.0,
        help="power applied to the within-platform percentile (docs/training.md)",
    )
    p.add_argument(
        "--cohort",
        default="none",
        choices=COHORTS,
        help="take popularity percentiles within creation-time cohorts",
    )
    if grid:
        p.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples for the 95%% intervals")
    else:
        recipe("--n-boot", type=int, help="bootstrap resamples for the 95%% intervals")


def _add_strict(p) -> None:
    p.add_argument(
        "--strict",
        action="store_true",
        help="invalid label values (text, NaN, inf, negative counts) are an error, not a warning",
    )


def _add_threads_arg(p) -> None:
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: one for small work; big work times 1, half and all cores and "
        "keeps the faster, re-checking as the load changes)",
    )


def _train_config(args, **overrides):
    from apexmusic.recipes import recipe_values
    from apexmusic.train import TrainConfig

    values = dict(
        mixing=args.mixing,
        split=args.split,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        standardize=False if args.no_standardize else None,
        n_boot=args.n_boot,
        allow_small=args.allow_small,
        threads=args.threads,
    )
    for key in ("task", "loss", "shared", "mode"):
        if hasattr(args, key):
            values[key] = getattr(args, key)
    return TrainConfig(**recipe_values(args.recipe, **values, **overrides), recipe=args.recipe)


def _popularity_config(args):
    from apexmusic.targets import PopularityConfig

    return PopularityConfig(exponent=args.popularity_exponent, cohort=args.cohort)


def _add_train(sub):
    p = sub.add_parser(
        "train",
        help="train a scoring model on an embedding store and labels",
        description="Train the multi-task head on the songs of an embedding store that have labels, "
        "with the published recipe unless flags say otherwise. Writes a model directory (config.json, "
        "model.safetensors, README.md card), train_log.jsonl and the held-out evaluation.",
    )
    _add_training_args(p)
    p.set_defaults(handler=_cmd_train)


def _training_data(args, tasks, with_segments: bool):
    """The labelled store that `train` and `grid` read, as their shared flags describe it."""
    from apexmusic.data import load_dataset

    return load_dataset(
        args.embeddings,
        args.labels,
        tasks,
        args.preset,
        _popularity_config(args),
        with_segments=with_segments,
        strict=args.strict,
    )


def _cmd_train(args) -> int:
    from apexmusic.paths import output_dir
    from apexmusic.train import save_training_outputs, train

    config = _train_config(args)
    dataset = _training_data(args, config.tasks, with_segments=config.mode == "segment")
    print(
        f"{len(dataset)} labelled songs ({dataset.n_unlabelled} without labels skipped, "
        f"{dataset.n_missing_songs} label rows without a song)",
        file=sys.stderr,
    )
    out = output_dir(args.out)
    with _progress_bar(config.epochs, "train", unit="epoch") as bar:

        def progress(record: dict) -> None:
            val = record.get("val_loss", float("nan"))
            bar.set_postfix(loss=f"{record['train_loss']:.3g}", val=f"{val:.3g}")
            bar.update(1)

        result = train(dataset, config, log_path=out / "train_log.jsonl", on_progress=progress)
    save_training_outputs(result, out)
    print(
        f"model {result.model.model_id} -> {out} ({len(result.history)} epochs, best {result.best_epoch}, "
        f"{result.seconds:.1f} s)"
    )
    if result.evaluation:
        for task, rho in result.evaluation.summary().items():
            print(f"  {task:14s} held-out Spearman {rho:.3f}")
    return EXIT_OK


def _add_evaluate(sub):
    from apexmusic.choices import COHORTS, LABEL_PRESETS

    p = sub.add_parser(
        "evaluate",
        help="held-out metrics of a model on labelled embeddings",
        description="Score every labelled song of an embedding store with a model and compare with "
        "the labels: Spearman (with bootstrap 95%% intervals), MAE and R2 per task, rankings and "
        "per-platform metrics, written to OUT/metrics.json, rankings.json and per_platform.json.",
    )
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--embeddings", required=True, help="embedding store folder")
    p.add_argument("--labels", required=True, nargs="+", help="labels file(s)")
    p.add_argument("--out", required=True, help="folder for metrics.json, rankings.json, per_platform.json")
    p.add_argument("--preset", default="auto", choices=LABEL_PRESETS, help="labels column mapping")
    _add_strict(p)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument(
        "--popularity-exponent",
        type=float,
        default=None,
        help="power applied to the within-platform percentile (default: the model's training value)",
    )
    p.add_argument(
        "--cohort",
        default=None,
        choices=COHORTS,
        help="popularity percentiles within cohorts (default: the model's training value)",
    )
    _add_threads_arg(p)
    p.set_defaults(handler=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from apexmusic.data import load_dataset
    from apexmusic.metrics import write_evaluation
    from apexmusic.model import ScoringModel
    from apexmusic.targets import PopularityConfig
    from apexmusic.train import evaluate_model

    model = ScoringModel.from_pretrained(args.model)
    trained = (model.targets or {}).get("popularity") or {}
    popularity = PopularityConfig(
        exponent=args.popularity_exponent or trained.get("exponent", 1.0),
        cohort=args.cohort or trained.get("cohort"),
    )
    dataset = load_dataset(
        args.embeddings,
        args.labels,
        model.tasks,
        args.preset,
        popularity,
        with_segments=model.pooling == "segment",
        strict=args.strict,
    )
    evaluation = evaluate_model(model, dataset, n_boot=args.n_boot, n_threads=args.threads)
    path = write_evaluation(evaluation, args.out)
    print(f"{len(dataset)} songs evaluated -> {path}")
    for task, m in evaluation.metrics.items():
        lo, hi = m.get("spearman_ci_low", float("nan")), m.get("spearman_ci_high", float("nan"))
        print(
            f"  {task:14s} n={m['n']:5d}  Spearman {m['spearman']:.3f} [{lo:.3f}, {hi:.3f}]  "
            f"MAE {m['mae']:.3f}  R2 {m['r2']:.3f}"
        )
    return EXIT_OK


def _add_grid(sub):
    p = sub.add_parser(
        "grid",
        help="the 24 published conditions (mode x task x loss x shared depth)",
        description="Train and evaluate every combination of mode (song, segment), task set (full, "
        "popularity), loss (equal, weighted, uncertainty) and shared depth (2, 3) on one split; "
        "writes OUT/grid.csv, OUT/grid.md and one model folder per condition.",
    )
    _add_training_args(p, grid=True)
    p.set_defaults(handler=_cmd_grid)


def _cmd_grid(args) -> int:
    from apexmusic.grid import run_grid

    base = _train_config(args)
    dataset = _training_data(args, base.tasks, with_segments=True)  # both modes run
    with _progress_bar(24, "grid", unit="condition") as bar:
        rows = run_grid(
            dataset, base, args.out, on_progress=lambda done, total, row: bar.update(1), workers=args.workers
        )
    print(f"{len(rows)} conditions -> {args.out}/grid.csv, {args.out}/grid.md")
    return EXIT_OK


COMMANDS = (_add_train, _add_evaluate, _add_grid)

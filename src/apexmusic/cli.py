"""The ``apexmusic`` command. Only this layer prints, draws progress bars and picks exit codes.

Exit status: 0 all done; 1 some inputs failed (each in the failure log, the rest done); 2 usage
or configuration error. Every error is one line on stderr, never a traceback: library errors
(``apexmusic.errors``) and OS errors (a path that cannot be read or written) are mapped here;
``-v`` logs the detail behind a line, ``-vv`` the traceback of an unexpected error.

Each sub-command is a ``_cmd_<name>(args) -> int`` function; its arguments are declared in
``_add_<name>``. Choices and defaults come from the library (``apexmusic.choices`` and the
owning modules); the parser is built without importing torch.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from apexmusic.devices import PRECISIONS
from apexmusic.errors import ApexError

if TYPE_CHECKING:
    from apexmusic.predict import PredictReport, StoreScoreReport

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("apexmusic")


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error already printed as one line (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _configure_logging(args.verbose - args.quiet)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return handler(args)
    except ApexError as exc:
        _error(f"{exc.kind} error: {exc}")
    except OSError as exc:
        _error(_os_error_line(exc))
    except KeyboardInterrupt as exc:
        print("apexmusic: interrupted", file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)
    except Exception as exc:  # a bug: one line, the traceback at -vv
        log.debug("unexpected error", exc_info=True)
        _error(f"internal error: {type(exc).__name__}: {_first_line(str(exc))} (-vv shows the traceback)")
    return EXIT_USAGE


def _error(text: str) -> None:
    """Print the first line of ``text`` as the error; log the rest (at -v)."""
    first = _first_line(text)
    print(f"apexmusic: {first}", file=sys.stderr)
    rest = text.strip()[len(first) :].strip()
    if rest:
        log.info("detail: %s", rest)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _os_error_line(exc: OSError) -> str:
    """``cannot use PATH: REASON`` for an OS error of a path the command was given."""
    reason = exc.strerror or type(exc).__name__
    if exc.filename is None:
        return f"error: {reason}"
    return f"error: cannot use {exc.filename}: {reason}"


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``apexmusic embed: error: ... (see --help)``)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help line ends with its default. A flag whose default is a library
    config's field (``action.default_from = "module:Config"``) reads it only when help is shown."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        default = action.default
        if default is None and getattr(action, "default_from", None):
            default = _config_default(action.default_from, action.dest)
        if default is None or isinstance(default, bool):
            return text
        if isinstance(default, list | tuple):
            default = " ".join(map(str, default))
        return f"{text} (default: {str(default).replace('%', '%%')})"


def _config_default(source: str, field: str):
    """The default of ``field`` in the config class ``source`` (``"module:Class"``)."""
    import importlib

    module, name = source.split(":")
    return getattr(getattr(importlib.import_module(module), name)(), field, None)


def _default_from(action: argparse.Action, source: str) -> None:
    """Show ``source``'s default for ``action`` (which defaults to None: "take the config's")."""
    action.default_from = source


def _configure_logging(level: int) -> None:
    levels = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}
    logging.basicConfig(
        level=levels.get(level, logging.DEBUG if level > 1 else logging.ERROR),
        format="%(levelname)s %(name)s: %(message)s",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="apexmusic",
        description="Predict streams, likes and aesthetics of AI-generated songs from audio.",
        epilog="Exit status: 0 all done; 1 some inputs failed (the rest done); 2 usage or "
        "configuration error.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


# ---------------------------------------------------------------------------------------------
# Sub-commands. Each `_add_<name>` declares arguments; each `_cmd_<name>` runs it.
# ---------------------------------------------------------------------------------------------

_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def _command(add: Callable[[argparse._SubParsersAction], None]):
    _COMMANDS.append(add)
    return add


def _progress_bar(total: int | None, desc: str, unit: str = "song") -> _LazyBar:
    """A tqdm bar on stderr, drawn at the first progress report; none when stderr is not a
    terminal or with ``-q``."""
    quiet = log.getEffectiveLevel() > logging.WARNING
    return _LazyBar(
        total=total,
        desc=desc,
        unit=unit,
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=0.5,
        disable=True if quiet else None,  # None: tqdm draws only on a terminal
    )


class _LazyBar:
    """A tqdm bar made on first use, so that an error found while a command sets up (a bad
    setting, an existing output) is never preceded by an empty bar."""

    def __init__(self, **options) -> None:
        object.__setattr__(self, "_options", options)
        object.__setattr__(self, "_bar", None)

    def _tqdm(self):
        if self._bar is None:
            from tqdm.auto import tqdm

            object.__setattr__(self, "_bar", tqdm(**self._options))
        return self._bar

    def __getattr__(self, name: str):
        return getattr(self._tqdm(), name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._tqdm(), name, value)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> _LazyBar:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# === embed ===


@_command
def _add_embed(sub):
    p = sub.add_parser(
        "embed",
        help="turn songs (files, folders, globs, manifests) into an embedding store",
        description="Decode, segment and encode songs into DIR (Parquet shards, manifest.json, "
        "failures.jsonl). Songs that fail are logged in failures.jsonl and the rest are kept.",
    )
    from apexmusic.choices import DEFAULT_MAX_SECONDS
    from apexmusic.encoders import available_encoders

    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, folders, globs or manifests")
    p.add_argument("--out", required=True, metavar="DIR", help="embedding store folder")
    p.add_argument("--encoder", default="handcrafted", choices=available_encoders(), help="encoder")
    p.add_argument(
        "--weights", help="PATH, HUB_ID or 'random' (timing and tests only) (default: the encoder's own)"
    )
    p.add_argument("--segment-seconds", type=float, default=30.0, help="segment length in seconds")
    p.add_argument("--hop-seconds", type=float, default=None, help="segment hop (default: no overlap)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="segments per encoder call (default: the encoder's)"
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the encoder runs")
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="the encoder's arithmetic; auto: bf16 where the hardware runs it natively, else fp32; "
        "int8: MERT on CPU only",
    )
    p.add_argument(
        "--compat",
        choices=("reference",),
        default=None,
        help="compute what the published pipeline computes (with --precision fp32: its arithmetic too)",
    )
    p.add_argument("--engine", choices=("local", "ray"), default="local", help="run here or on a Ray cluster")
    p.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster address (--engine ray; default: $RAY_ADDRESS, else a local instance)",
    )
    _add_ray_sizing_args(p)
    p.add_argument("--resume", action="store_true", help="continue a store: skip songs already in it")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoder processes (0: decode in-process; default: by cores)",
    )
    p.add_argument(
        "--max-seconds", type=float, default=DEFAULT_MAX_SECONDS, help="fail longer songs (0: no limit)"
    )
    p.add_argument(
        "--flush-seconds",
        type=float,
        default=None,
        help="write finished songs to a shard at least this often (default 20): what kill -9 can lose",
    )
    p.set_defaults(handler=_cmd_embed)


def _cmd_embed(args) -> int:
    from apexmusic.errors import RunInterrupted

    try:
        with _signals_stop_the_run():
            return _embed(args)
    except RunInterrupted as exc:
        command = shlex.join(["apexmusic", *args.argv] + ([] if "--resume" in args.argv else ["--resume"]))
        print(f"apexmusic: {exc}; continue with: {command}", file=sys.stderr)
        return 128 + exc.signum


@contextlib.contextmanager
def _signals_stop_the_run():
    """SIGTERM (what timeout, systemd and docker stop send) stops a run as Ctrl-C does: it
    raises StopRequested in the main thread; further signals wait for the finished songs to
    be written."""
    import signal
    import threading

    from apexmusic.errors import StopRequested

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping: list[int] = []

    def stop(signum, frame) -> None:
        if not stopping:
            stopping.append(signum)
            raise StopRequested(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _embed(args) -> int:
    from apexmusic.embed import FLUSH_SECONDS, EmbedConfig, embed_inputs
    from apexmusic.sources import resolve_inputs
    from apexmusic.store import EmbeddingStore

    config = EmbedConfig(
        encoder=args.encoder,
        weights=args.weights,
        segment_seconds=args.segment_seconds,
        hop_seconds=args.hop_seconds,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        compat=args.compat,
        workers=args.workers,
        resume=args.resume,
        max_seconds=args.max_seconds if args.max_seconds and args.max_seconds > 0 else None,
        flush_seconds=FLUSH_SECONDS if args.flush_seconds is None else args.flush_seconds,
    )
    config.validate()
    songs = resolve_inputs(args.inputs)
    with _progress_bar(len(songs), "embed") as bar:

        def on_progress(p) -> None:
            bar.n = p.done + p.failed + p.skipped
            wall = max(p.wall_seconds, 1e-9)
            bar.set_postfix_str(
                f"{p.done / wall:.2f} songs/s, {p.audio_seconds / 3600 / wall:.3f} audio-h/s, "
                f"{p.failed} failed",
                refresh=False,
            )
            bar.refresh()

        if args.engine == "ray":
            report = _run_on_ray(
                "embed_inputs_ray", songs, args.out, config, args=args, on_progress=on_progress
            )
        else:
            report = embed_inputs(songs, args.out, config, on_progress=on_progress)
    _print_failures(report.failures)
    wall = max(report.wall_seconds, 1e-9)
    print(
        f"embedded {report.n_done} songs ({report.audio_seconds / 3600:.2f} h of audio) in {wall:.1f} s: "
        f"{report.n_done / wall:.2f} songs/s, {report.audio_seconds / 3600 / wall:.3f} audio-h/s; "
        f"{report.n_failed} failed, {report.n_skipped} already done, "
        f"{report.n_cached} from the content cache"
        + (f", {report.n_replaced} replaced (their files changed)" if report.n_replaced else "")
        + f" -> {args.out}"
    )
    if report.n_failed:
        log_file = EmbeddingStore(args.out).failures_path
        print(f"apexmusic: {report.n_failed} songs failed; see {log_file}", file=sys.stderr)
    return EXIT_PARTIAL if report.n_failed else EXIT_OK


@_command
def _add_store(sub):
    p = sub.add_parser(
        "store", help="inspect and mend embedding stores", description="Inspect and mend embedding stores."
    )
    store_sub = p.add_subparsers(dest="store_command", metavar="STORE_COMMAND")
    p.set_defaults(handler=lambda args: (p.print_help(), EXIT_USAGE)[1])
    r = store_sub.add_parser(
        "repair",
        help="quarantine damaged shards and rebuild manifest.json from the spec the shards carry",
        description="Moves shards that cannot be read whole to DIR/quarantine/ (embed --resume "
        "embeds their songs again), deletes temporary files of killed writers, keeps one row per "
        "song, and rewrites DIR/manifest.json from the settings every shard records. Refused when "
        "the shards disagree or predate that record, and while another process writes DIR.",
    )
    r.add_argument("store", metavar="DIR", help="embedding store folder")
    r.set_defaults(handler=_cmd_store_repair)
    v = store_sub.add_parser(
        "verify",
        help="read every shard in full and report damaged ones (exit 1 when there are any)",
        description="Checks every shard (checksums, row shapes, duplicate song ids) without "
        "changing anything; --quarantine also moves damaged shards to DIR/quarantine/.",
    )
    v.add_argument("store", metavar="DIR", help="embedding store folder")
    v.add_argument("--quarantine", action="store_true", help="move damaged shards to DIR/quarantine/")
    v.set_defaults(handler=_cmd_store_verify)


def _cmd_store_repair(args) -> int:
    from apexmusic.store import repair_store

    check = repair_store(args.store)
    _print_store_check(check)
    spec = check.spec
    print(
        f"rebuilt {args.store}/manifest.json from {check.n_shards - len(check.bad)} shards: encoder "
        f"{spec.encoder} ({spec.n_layers}x{spec.dim}), {spec.segment_seconds:g} s segments every "
        f"{spec.hop:g} s" + (f", compat {spec.compat}" if spec.compat else "")
    )
    return EXIT_OK


def _cmd_store_verify(args) -> int:
    from apexmusic.store import WriterLock, quarantine, verify_store

    check = verify_store(args.store)
    if args.quarantine and check.bad:
        lock = WriterLock(args.store)
        try:
            check = verify_store(args.store)  # again, now that no writer can add shards
            quarantine(check)
        finally:
            lock.release()
    _print_store_check(check)
    if check.clean:
        return EXIT_OK
    if not check.quarantined:
        print(f"apexmusic: `apexmusic store repair {args.store}` quarantines damaged shards", file=sys.stderr)
    return EXIT_PARTIAL


def _print_store_check(check) -> None:
    for bad in check.bad:
        moved = " (moved to quarantine/)" if check.quarantined else ""
        print(f"apexmusic: bad shard {bad.shard}{moved}: {bad.reason}", file=sys.stderr)
    if check.duplicates:
        print(f"apexmusic: {len(check.duplicates)} song ids stored more than once", file=sys.stderr)
    print(
        f"{check.root}: {check.n_shards} shards, {check.n_rows} songs in readable shards, "
        f"{len(check.bad)} damaged, {len(check.duplicates)} duplicated ids, "
        f"{len(check.leftovers)} leftover temporary files"
    )


def _print_failures(failures) -> None:
    """One line on stderr per failed input: ``apexmusic: failed ID (PATH): KIND: MESSAGE``."""
    for failure in failures:
        message = _first_line(failure.message)
        print(f"apexmusic: failed {failure.id} ({failure.path}): {failure.kind}: {message}", file=sys.stderr)


def _existing(*paths) -> str:
    """The paths that exist, joined for a summary line ("" when none does)."""
    from pathlib import Path

    return ", ".join(str(p) for p in paths if p and Path(p).exists())


def _run_on_ray(engine_function: str, *positional, args, on_progress):
    """Call ``apexmusic.distributed.<engine_function>`` with the ``--ray-*`` flags."""
    from apexmusic.errors import ConfigError

    try:
        from apexmusic import distributed
    except ImportError as exc:
        raise ConfigError(f"ray engine unavailable: {exc}") from exc
    return getattr(distributed, engine_function)(
        *positional,
        on_progress=on_progress,
        ray_address=args.ray_address,
        num_gpus_per_actor=args.ray_gpus_per_actor,
        concurrency=args.ray_concurrency,
    )


def _port(text: str) -> int:
    """A TCP port number, for argparse."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535, not {text!r}")
    return int(text)


def _add_ray_sizing_args(p) -> None:
    """Flags of the Ray engine: the encoder actor pool."""
    p.add_argument(
        "--ray-concurrency",
        type=int,
        default=None,
        metavar="N",
        help="encoder actors (--engine ray; default one per GPU, or cores/4 without GPUs)",
    )
    p.add_argument(
        "--ray-gpus-per-actor",
        type=float,
        default=None,
        metavar="G",
        help="GPUs per encoder actor (--engine ray; default 1 when the cluster has GPUs, else 0)",
    )


# === train / evaluate / grid / import-reference ===


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


@_command
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


def _cmd_train(args) -> int:
    from apexmusic.data import load_dataset
    from apexmusic.paths import output_dir
    from apexmusic.train import save_training_outputs, train

    config = _train_config(args)
    dataset = load_dataset(
        args.embeddings,
        args.labels,
        config.tasks,
        args.preset,
        _popularity_config(args),
        with_segments=config.mode == "segment",
        strict=args.strict,
    )
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


@_command
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


@_command
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
    from apexmusic.data import load_dataset
    from apexmusic.grid import run_grid

    base = _train_config(args)
    dataset = load_dataset(
        args.embeddings,
        args.labels,
        base.tasks,
        args.preset,
        _popularity_config(args),
        with_segments=True,
        strict=args.strict,
    )
    with _progress_bar(24, "grid", unit="condition") as bar:
        rows = run_grid(
            dataset, base, args.out, on_progress=lambda done, total, row: bar.update(1), workers=args.workers
        )
    print(f"{len(rows)} conditions -> {args.out}/grid.csv, {args.out}/grid.md")
    return EXIT_OK


@_command
def _add_import_reference(sub):
    p = sub.add_parser(
        "import-reference",
        help="convert the reference best_model.pt into a model directory",
        description="Convert the reference implementation's best_model.pt (read with "
        "torch.load(weights_only=True), nothing unpickled) into a model directory that predict, "
        "evaluate and serve load; it records the published MERT weights it expects.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="best_model.pt of the reference implementation")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="model directory to write")
    p.add_argument(
        "--n-layers",
        type=int,
        default=13,
        choices=[1, 13],
        help="13: take MERT hidden states of a --compat reference store and mix them as the "
        "reference does (default); 1: take the already-mixed 768-d vector",
    )
    p.set_defaults(handler=_cmd_import_reference)


def _cmd_import_reference(args) -> int:
    from apexmusic.model import import_reference_checkpoint

    model = import_reference_checkpoint(args.checkpoint, n_layers=args.n_layers)
    model.save_pretrained(args.model_dir)
    print(
        f"imported {args.checkpoint} ({len(model.tasks)} tasks, shared {model.config.shared}) "
        f"-> {args.model_dir} as {model.model_id}"
    )
    return EXIT_OK


@_command
def _add_push(sub):
    p = sub.add_parser(
        "push",
        help="upload a model directory to the Hugging Face hub",
        description="Upload a model directory's data files (JSON, safetensors, the card; never code) "
        "to a Hugging Face hub repo, which is created when missing.",
    )
    p.add_argument("model_dir", help="model directory (config.json, model.safetensors, ...)")
    p.add_argument("repo_id", help="hub repo, owner/name (created when missing)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", help="branch to commit to (default: main)")
    p.set_defaults(handler=_cmd_push)


def _cmd_push(args) -> int:
    from apexmusic.hub import push_model

    url = push_model(args.model_dir, args.repo_id, private=args.private or None, revision=args.revision)
    print(f"pushed {args.model_dir} -> {args.repo_id}: {url}")
    return EXIT_OK


# === predict / compare / serve ===


@_command
def _add_predict(sub):
    p = sub.add_parser(
        "predict",
        help="score songs (files, folders, globs, manifests) or an embedding store with a model",
        description="Score songs into a JSONL / CSV / Parquet file (one row per song: id, path, "
        "the scores, their <task>_std uncertainties, model_id, duration_s, tags when available). "
        "With --embeddings STORE, re-score an existing embedding store without touching audio.",
    )
    from apexmusic.choices import OUTPUT_DIGITS

    p.add_argument("inputs", nargs="*", metavar="INPUT", help="audio files, folders, globs or manifests")
    _add_model_args(p)
    p.add_argument("--out", required=True, metavar="FILE", help="output .jsonl, .csv or .parquet")
    p.add_argument("--embeddings", metavar="STORE", help="score this embedding store instead of audio")
    p.add_argument("--engine", choices=("local", "ray"), default="local", help="run here or on a Ray cluster")
    p.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster address (--engine ray; default: $RAY_ADDRESS, else a local instance)",
    )
    _add_ray_sizing_args(p)
    p.add_argument("--resume", action="store_true", help="skip ids already in --out and append")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="songs per model call and output flush (default 8; 65536 rows with --embeddings)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="encoder precision (auto: bf16 where the CPU/GPU runs it natively, never int8 for a "
        "reference-compat model; fp32: the published pipeline's arithmetic, to float32 rounding)",
    )
    p.add_argument("--mc-samples", type=int, default=16, help="MC-dropout samples for uncertainty (0: off)")
    p.add_argument(
        "--max-seconds", type=float, default=None, help="fail songs longer than this (default: no limit)"
    )
    p.add_argument(
        "--full-precision",
        action="store_true",
        help=f"write JSONL/CSV floats in full (default: {OUTPUT_DIGITS} significant digits; Parquet "
        "is always full)",
    )
    p.set_defaults(handler=_cmd_predict)


def _add_model_args(p) -> None:
    """Flags of the commands that load a model directory (predict, compare, serve)."""
    p.add_argument(
        "--model",
        required=True,
        metavar="DIR|HUB_ID",
        help="model directory, or a hub id such as amaai-lab/apex[@revision]",
    )
    p.add_argument(
        "--weights",
        help="encoder weights instead of those the model names, e.g. a local folder (default: the model's)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")


def _cmd_predict(args) -> int:
    from apexmusic.errors import ConfigError

    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if args.mc_samples < 0:
        raise ConfigError("--mc-samples must be >= 0")
    _check_predict_paths(args)
    if args.embeddings:
        if args.inputs:
            raise ConfigError("give INPUTs or --embeddings STORE, not both")
        return _predict_store(args)
    if not args.inputs:
        raise ConfigError("no INPUT given (or use --embeddings STORE)")
    from apexmusic.predict import PredictConfig
    from apexmusic.sources import resolve_inputs

    songs = resolve_inputs(args.inputs)
    config = PredictConfig(
        weights=args.weights,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size or 8,
        mc_samples=args.mc_samples,
        resume=args.resume,
        max_seconds=args.max_seconds,
        full_precision=args.full_precision,
    )
    with _progress_bar(len(songs), "predict") as bar:
        if args.engine == "ray":
            report = _run_on_ray(
                "predict_inputs_ray", songs, args.model, args.out, config, args=args, on_progress=bar.update
            )
        else:
            from apexmusic.predict import predict_inputs

            report = predict_inputs(songs, args.model, args.out, config, on_progress=bar.update)
    _print_failures(report.failures)
    written = _existing(args.out)
    print(
        f"scored {report.n_done} songs, {report.n_failed} failed, {report.n_skipped} already done "
        f"in {report.wall_seconds:.1f} s" + (f" -> {written}" if written else "")
    )
    _print_trust_summary(args.model, report)
    if report.n_failed:
        log_file = _existing(report.failures_file)
        print(
            f"apexmusic: {report.n_failed} songs failed" + (f"; see {log_file}" if log_file else ""),
            file=sys.stderr,
        )
    return EXIT_PARTIAL if report.n_failed else EXIT_OK


def _check_predict_paths(args) -> None:
    """Refuse a bad output name, model or store before any progress bar is drawn."""
    from apexmusic.model import ModelDir
    from apexmusic.predict.writers import output_format

    output_format(args.out)
    folder = ModelDir.resolve(args.model)  # a hub id is downloaded (or read from the cache) once, here
    folder.read_config()
    args.model = str(folder.root)
    if args.embeddings:
        from apexmusic.store import EmbeddingStore

        EmbeddingStore.open(args.embeddings)


def _predict_store(args) -> int:
    from apexmusic.predict import score_store

    with _progress_bar(None, "score store") as bar:
        report = score_store(
            args.embeddings,
            args.model,
            args.out,
            batch_size=args.batch_size or 65536,
            on_progress=bar.update,
            full_precision=args.full_precision,
        )
    print(f"scored {report.n_rows} songs from {args.embeddings} in {report.wall_seconds:.2f} s -> {args.out}")
    _print_trust_summary(args.model, report)
    return EXIT_OK


def _print_trust_summary(model_dir: str, report: PredictReport | StoreScoreReport) -> None:
    """The model's provenance, tasks left empty and songs unlike the training data, plainly."""
    from apexmusic.model import ModelDir
    from apexmusic.model.provenance import describe

    folder = ModelDir(model_dir)
    model_id = report.model_id or str(folder.read_config().get("model_id", ""))
    print(f"model {model_id}: {describe(folder.provenance())}")
    if report.not_served:
        print(f"not trained (empty in the output): {', '.join(report.not_served)}")
    if report.n_domain_checked:
        print(
            f"{report.n_out_of_domain} of {report.n_domain_checked} songs are unlike the training data "
            "(in_domain false): their scores are extrapolations"
        )


@_command
def _add_compare(sub):
    p = sub.add_parser(
        "compare",
        help="probability that listeners prefer song A over song B",
        description="Score two songs and estimate the probability that listeners prefer A: with the "
        "model's arena-trained comparator when it ships one, else an uncalibrated logistic of the "
        "mean standardised score difference. Prints both songs' scores side by side.",
    )
    p.add_argument("a", metavar="A", help="audio file A")
    p.add_argument("b", metavar="B", help="audio file B")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(handler=_cmd_compare)


def _cmd_compare(args) -> int:
    import json

    from apexmusic.errors import AudioContentError, AudioDecodeError, InputError
    from apexmusic.model import COMPARATOR_FILE
    from apexmusic.predict import Predictor

    predictor = Predictor.from_pretrained(args.model, weights=args.weights, device=args.device)
    try:
        result = predictor.compare(args.a, args.b)
    except (AudioDecodeError, AudioContentError, InputError) as exc:
        _error(f"{exc.kind} error: {exc}")
        return EXIT_PARTIAL
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return EXIT_OK
    method = (
        f"arena comparator ({COMPARATOR_FILE})"
        if result.method == "comparator"
        else "fallback: logistic of mean standardised score difference, uncalibrated"
    )
    name_a, name_b = _column_names(args.a, args.b)
    print(f"P(listeners prefer {name_a} to {name_b}) = {result.prob_a:.3f}   [{method}]")
    width = max(10, len(name_a) + 2, len(name_b) + 2)
    print(f"{'score':<14}{name_a:>{width}}{name_b:>{width}}")
    for task in predictor.tasks:
        a, b = result.a.scores[task], result.b.scores[task]
        cells = [f"{'not trained':>{width}}" if v is None else f"{v:>{width}.2f}" for v in (a, b)]
        print(f"{task:<14}{''.join(cells)}")
    for key, pred in ((name_a, result.a), (name_b, result.b)):
        if pred.in_domain is False:
            print(f"song {key} is unlike the training data (in_domain false): its scores are extrapolations")
    return EXIT_OK


def _column_names(a: str, b: str) -> tuple[str, str]:
    """Short names of two songs: their file names, prefixed A:/B: when those are equal."""
    from pathlib import Path

    name_a, name_b = Path(a).name or a, Path(b).name or b
    return (f"A:{name_a}", f"B:{name_b}") if name_a == name_b else (name_a, name_b)


@_command
def _add_serve(sub):
    p = sub.add_parser(
        "serve",
        help="HTTP API and web page for scoring uploads",
        description="Serve the model over HTTP: a web page at /, the JSON API under /v1 and its "
        "documentation at /docs. Uploads are scored in memory; no path a request names is opened.",
    )
    _add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=_port, default=8000, help="TCP port to listen on")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest accepted upload per file")
    p.add_argument("--max-seconds", type=float, default=900.0, help="longest accepted song")
    p.add_argument("--max-concurrency", type=int, default=2, help="songs scored at once")
    p.add_argument("--max-queue", type=int, default=16, help="requests waiting beyond those (then 503)")
    p.add_argument("--mc-samples", type=int, default=16, help="MC-dropout samples for uncertainty")
    p.add_argument("--max-uploading", type=int, default=64, help="request bodies arriving at once (then 503)")
    p.add_argument("--header-timeout", type=float, default=10.0, help="seconds to send request headers (408)")
    p.add_argument("--body-timeout", type=float, default=60.0, help="seconds to send a request body (408)")
    p.set_defaults(handler=_cmd_serve)


def _cmd_serve(args) -> int:
    from apexmusic.model import ModelDir
    from apexmusic.serve import ServeConfig, run_server

    config = ServeConfig(
        max_upload_mb=args.max_upload_mb,
        max_seconds=args.max_seconds,
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        mc_samples=args.mc_samples,
        max_uploading=args.max_uploading,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        weights=args.weights,
        device=args.device,
    )
    model_dir = ModelDir.resolve(args.model)  # a hub id downloads here, before the server starts
    model_dir.read_config()  # a bad model is one line here, not a failed server start
    print(f"serving {args.model} on http://{args.host}:{args.port}/ (API docs at /docs)", file=sys.stderr)
    run_server(model_dir.root, host=args.host, port=args.port, config=config)
    return EXIT_OK


# === arena ===


@_command
def _add_arena(sub):
    from apexmusic.choices import ARENA_SUBSETS

    p = sub.add_parser(
        "arena",
        help="pairwise human-preference evaluation and Bradley–Terry leaderboards",
        description="Pairwise human-preference evaluation (Music Arena battles) and Bradley–Terry "
        "leaderboards.",
    )
    arena_sub = p.add_subparsers(dest="arena_command", metavar="ARENA_COMMAND")
    p.set_defaults(handler=lambda args: (p.print_help(), EXIT_USAGE)[1])

    e = arena_sub.add_parser(
        "eval",
        help="how well predicted scores tell which song of a battle listeners preferred",
        description="Zero-shot rules ('higher score wins') with bootstrap intervals and learned "
        "models with k-fold CV; writes DIR/arena_metrics.json and DIR/arena_accuracy.png.",
    )
    e.add_argument("--battles", required=True, metavar="FILE", help="battles: csv/json/jsonl/parquet/folder")
    e.add_argument("--scores", metavar="FILE", help="scores file of `apexmusic predict`, joined on audio ids")
    e.add_argument("--out", required=True, metavar="DIR", help="folder for the metrics and the plot")
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    e.add_argument("--folds", type=int, default=10, help="cross-validation folds of the learned models")
    e.add_argument("--seed", type=int, default=0, help="seed of the resamples and folds")
    e.add_argument("--no-pairs", action="store_true", help="skip the per-system-pair breakdown")
    e.add_argument(
        "--no-paper", action="store_true", help="skip the paper's five classifiers (paper_protocol)"
    )
    e.set_defaults(handler=_cmd_arena_eval)

    lb = arena_sub.add_parser(
        "leaderboard",
        help="Music Arena's Bradley–Terry leaderboard (and a predicted one when there are scores)",
        description="Writes DIR/leaderboard.csv and DIR/leaderboard.png; when the battles carry scores "
        "(--scores or <name>_a/<name>_b columns) also DIR/predicted_leaderboard.csv and "
        "DIR/leaderboard.json (Spearman / Kendall of each score's system ranking vs the human board).",
    )
    lb.add_argument("--battles", required=True, metavar="FILE", help="battles: csv/json/jsonl/parquet/folder")
    lb.add_argument("--out", required=True, metavar="DIR", help="folder for the leaderboards and the plot")
    lb.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    lb.add_argument("--min-votes", type=int, default=30, help="list only systems with this many votes")
    lb.add_argument(
        "--subset",
        choices=ARENA_SUBSETS,
        default="all",
        help="an official board: battles by is_instrumental, then Music Arena's lyrics-capability rule",
    )
    lb.add_argument(
        "--no-lyrics-filter",
        action="store_true",
        help="with --subset: select by is_instrumental only, without the lyrics-capability rule",
    )
    lb.add_argument("--scores", metavar="FILE", help="scores file for the predicted leaderboard")
    lb.add_argument("--score-name", metavar="NAME", help="score that ranks the predicted leaderboard")
    lb.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    lb.set_defaults(handler=_cmd_arena_leaderboard)


def _load_arena_battles(args):
    from apexmusic import arena

    battles = arena.load_battles(args.battles)
    if not len(battles) and battles.invalid:
        from apexmusic.errors import DataError

        first = battles.invalid[0]
        raise DataError(
            f"{args.battles} holds no usable battle ({len(battles.invalid)} rows; "
            f"row {first['row']}: {first['reason']})"
        )
    join = None
    if args.scores:
        battles, join = arena.attach_scores(battles, arena.load_scores(args.scores))
    for bad in battles.invalid[:5]:
        print(f"skipped battle row {bad['row']} ({bad['id']}): {bad['reason']}", file=sys.stderr)
    if join is not None and join.n_unmatched:
        print(
            f"{join.n_unmatched} of {join.n_battles} battles have a side without scores "
            f"(e.g. {join.unmatched[0]['audio']!r})",
            file=sys.stderr,
        )
    return battles, join


def _cmd_arena_eval(args) -> int:
    from apexmusic import arena
    from apexmusic.paths import output_dir

    config = arena.EvalConfig(
        n_bootstrap=args.bootstrap,
        folds=args.folds,
        seed=args.seed,
        by_pair=not args.no_pairs,
        paper=None if args.no_paper else arena.PaperConfig(),
    )
    out = output_dir(args.out)
    battles, join = _load_arena_battles(args)
    metrics = arena.evaluate_arena(battles, config, join)
    arena.write_json(metrics, out / "arena_metrics.json")
    arena.plot_rule_accuracy(metrics["rules"], out / "arena_accuracy.png")
    counts = metrics["data"]
    print(
        f"{counts['n_battles']} battles ({counts['n_decisive']} decisive, {counts['n_tie']} ties, "
        f"{counts['n_both_bad']} both bad excluded)"
    )
    for name, r in metrics["rules"].items():
        if r["accuracy"] is None:
            print(f"  rule {name:24s} no battles with scores")
            continue
        lo, hi = r["accuracy_ci"] or (float("nan"), float("nan"))
        auc = "n/a" if r["auc"] is None else f"{r['auc']:.3f}"
        print(f"  rule {name:24s} accuracy {r['accuracy']:.4f} [{lo:.3f}, {hi:.3f}]  auc {auc}  n {r['n']}")
    for set_name, res in metrics["learned"].items():
        for model in ("logistic_regression", "gradient_boosting"):
            if model in res:
                m = res[model]
                print(
                    f"  {model:20s} {set_name:22s} accuracy {m['accuracy_mean']:.3f}±{m['accuracy_sd']:.3f}"
                    f"  auc {m['auc_mean']:.3f}±{m['auc_sd']:.3f}"
                )
    paper = metrics.get("paper_protocol", {})
    for model, m in paper.get("models", {}).items():
        if "skipped" in m:
            print(f"  paper protocol {model:20s} skipped: {m['skipped']}")
            continue
        auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
        print(
            f"  paper protocol {model:20s} auc {auc}  f1 {m['f1']:.3f}"
            f"  (paper: auc {paper['published'][model]['auc']:.3f}, f1 {paper['published'][model]['f1']:.3f})"
        )
    print(f"wrote {out / 'arena_metrics.json'}")
    bad = len(battles.invalid) + (join.n_unmatched if join else 0)
    return EXIT_PARTIAL if bad else EXIT_OK


def _cmd_arena_leaderboard(args) -> int:
    import numpy as np

    from apexmusic import arena
    from apexmusic.errors import ConfigError
    from apexmusic.paths import output_dir

    config = arena.LeaderboardConfig(
        n_bootstrap=args.bootstrap,
        min_votes=args.min_votes,
        seed=args.seed,
        subset=args.subset,
        lyrics_filter=not args.no_lyrics_filter,
    )
    out = output_dir(args.out)
    battles, join = _load_arena_battles(args)
    battles = arena.leaderboard_battles(battles, config)
    with _progress_bar(args.bootstrap, "bootstrap", unit="resample") as bar:
        rows = arena.arena_leaderboard(battles, config, on_progress=lambda done, total: bar.update(1))
    arena.write_leaderboard_csv(rows, out / "leaderboard.csv")
    if rows:
        arena.plot_leaderboard(rows, out / "leaderboard.png", title=f"Arena leaderboard ({args.subset})")
    for rank, r in enumerate(rows, start=1):
        ci = f"[{r.ci_low:7.1f}, {r.ci_high:7.1f}]"
        print(f"{rank:3d}  {r.system:28s} {r.score:7.1f}  {ci}  votes {r.votes}")
    listed = {r.system for r in rows}
    hidden = sorted(
        ((n, v) for n, v in arena.system_votes(battles).items() if n not in listed),
        key=lambda nv: (-nv[1], nv[0]),
    )
    if hidden:
        names = ", ".join(f"{n} ({v} votes)" for n, v in hidden)
        print(f"not listed (fewer than --min-votes {args.min_votes}): {names}")
    if battles.score_names:  # from --scores or <name>_a/<name>_b columns of the battles
        pred = arena.predicted_leaderboard(battles, rows)
        names = list(pred["correlations"])
        name = args.score_name or ("apex_all_z" if "apex_all_z" in names else names[0])
        if name not in names:
            raise ConfigError(f"--score-name {name!r} not among the scores {names}")
        arena.write_predicted_csv(pred, rows, name, out / "predicted_leaderboard.csv")
        arena.write_json({"score_name": name, **pred}, out / "leaderboard.json")
        for n, c in pred["correlations"].items():
            rho, tau = c.get("spearman"), c.get("kendall")
            fmt = lambda v: "n/a" if v is None or not np.isfinite(v) else f"{v:+.3f}"  # noqa: E731
            print(f"  predicted by {n:24s} spearman {fmt(rho)}  kendall {fmt(tau)}  n={c['n_systems']}")
    print(f"wrote {out / 'leaderboard.csv'}")
    bad = len(battles.invalid) + (join.n_unmatched if join else 0)
    return EXIT_PARTIAL if bad else EXIT_OK


# === demo / report ===


@_command
def _add_demo(sub):
    p = sub.add_parser(
        "demo",
        help="offline end-to-end run on a simulated corpus (generate, embed, train, evaluate, arena, report)",
        description="Generate a simulated AI-music corpus (cached), embed it, train the published best "
        "configuration and the popularity-only ablation, evaluate on held-out songs and held-out "
        "styles, run the arena evaluation and write DIR/model, DIR/summary.json and DIR/report.html. "
        "The data are simulated: the numbers are not predictions for real songs.",
    )
    from apexmusic.encoders import available_encoders

    p.add_argument("--out", default="apexmusic-demo", help="output folder")
    p.add_argument("--songs", type=int, default=600, help="corpus size (240 runs in minutes)")
    p.add_argument("--encoder", default="handcrafted", choices=available_encoders(), help="encoder")
    p.add_argument(
        "--weights", default=None, help="encoder weights: a folder, file or hub id (default: the encoder's)"
    )
    p.add_argument("--seed", type=int, default=0, help="corpus seed")
    _default_from(p.add_argument("--epochs", type=int, help="training epochs"), "apexmusic.demo:DemoConfig")
    p.add_argument(
        "--compare-encoders",
        nargs="?",
        const="musicnn-msd",
        default=None,
        metavar="ENC[,ENC]",
        help="also run the pipeline with these encoders (default musicnn-msd) and compare held-out metrics",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for intervals")
    p.add_argument(
        "--workers", type=int, default=None, help="processes rendering the corpus (default: by cores)"
    )
    p.set_defaults(handler=_cmd_demo)


def _cmd_demo(args) -> int:
    from pathlib import Path

    from apexmusic.demo import DemoConfig, run_demo

    compare = tuple(e for e in (args.compare_encoders or "").split(",") if e)
    extra = {"epochs": args.epochs} if args.epochs else {}
    config = DemoConfig(
        n_songs=args.songs,
        seed=args.seed,
        encoder=args.encoder,
        weights=args.weights,
        compare_encoders=compare,
        n_boot=args.bootstrap,
        workers=args.workers,
        **extra,
    )
    bars: dict = {}

    def progress(stage: str, done: int, total: int | None) -> None:
        bar = bars.get(stage)
        if bar is None:
            for other in bars.values():
                other.close()
            unit = "epoch" if stage.startswith("train") else "song"
            unit = unit if stage[:5] in ("train", "gener", "embed") else "step"
            bar = bars[stage] = _progress_bar(total, stage, unit=unit)
        bar.update(done - bar.n)

    try:
        summary = run_demo(args.out, config, on_progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    print(_demo_table(summary))
    out = Path(args.out)
    print(f"model: {out / 'model'}   summary: {out / 'summary.json'}   report: {out / 'report.html'}")
    print("(simulated data: these numbers describe the simulator, not real songs)")
    return EXIT_OK


def _demo_table(summary: dict) -> str:
    from apexmusic.tasks import ALL_TASKS, TASKS

    h = summary["headline"]
    fmt = lambda v: "  n/a" if v is None else f"{v:5.2f}"  # noqa: E731
    pop_only = h["test_popularity_spearman_popularity_only"]
    lines = [
        f"{summary['corpus']['n_songs']} simulated songs, encoder {summary['encoder']}, "
        f"{summary['timings_s']['total']:.0f} s",
        f"{'task':14s} {'test ρ':>7s} {'skill':>6s} {'held-out styles ρ':>18s} {'pop-only ρ':>11s}",
    ]
    for t in ALL_TASKS:
        lines.append(
            f"{TASKS[t].label:14s} {fmt(h['test_spearman'][t]):>7s} "
            f"{fmt(h['test_skill_vs_mean_predictor'][t]):>6s} "
            f"{fmt(h['heldout_style_spearman'][t]):>18s} {fmt(pop_only.get(t)) if t in pop_only else '':>11s}"
        )
    acc, ci = h["arena_rule_accuracy"], h["arena_rule_accuracy_ci"]
    for name in acc:
        lo, hi = ci.get(name) or (None, None)
        lines.append(f"arena rule {name:18s} accuracy {fmt(acc[name])} [{fmt(lo)}, {fmt(hi)}]")
    for name, models in h["arena_learned_auc"].items():
        lines.append(f"arena learned ({name}) AUC " + ", ".join(f"{m} {fmt(v)}" for m, v in models.items()))
    ceiling = h["arena_hidden_preference_accuracy"]
    lines.append(f"arena ceiling (hidden listener preference) accuracy {fmt(ceiling)}")
    lines += _demo_trust_lines(summary.get("trust"))
    comp = summary.get("encoder_comparison")
    if comp:
        for name, metrics in comp["metrics"].items():
            lines.append(f"encoder {name:14s} " + "  ".join(f"{k} {fmt(v)}" for k, v in metrics.items()))
    return "\n".join(lines)


def _demo_trust_lines(trust: dict | None) -> list[str]:
    if not trust:
        return []
    iv = trust["intervals"]
    cover = [c for c in iv["coverage_test"].values() if c is not None]
    lines = [
        f"{100 * iv['level']:.0f}% intervals cover {100 * min(cover):.0f}-{100 * max(cover):.0f}% "
        "of test songs per task"
        if cover
        else "intervals: no labelled test songs to measure them on"
    ]
    domain = trust.get("domain") or {}
    if domain.get("measured_test"):
        held = domain.get("heldout_styles_flagged")
        lines.append(
            f"domain alarm flags {100 * domain['measured_test']['rate']:.1f}% of test songs"
            + ("" if held is None else f", {100 * held:.0f}% of held-out-style songs")
        )
    return lines


@_command
def _add_report(sub):
    p = sub.add_parser(
        "report",
        help="write a self-contained HTML report of an evaluation folder",
        description="EVAL_DIR may be a demo folder, an evaluate/arena output folder or a model folder.",
    )
    p.add_argument("eval_dir", metavar="EVAL_DIR", help="demo, evaluate, arena or model folder")
    p.add_argument("--out", default=None, help="HTML file (default: EVAL_DIR/report.html)")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args) -> int:
    from pathlib import Path

    from apexmusic.report import write_report

    out = write_report(args.eval_dir, args.out or Path(args.eval_dir) / "report.html")
    print(f"wrote {out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

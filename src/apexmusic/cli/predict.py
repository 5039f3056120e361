"""The commands that use a model directory: ``import-reference``, ``push``, ``predict``, ``compare``
and ``serve``."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from apexmusic.cli.common import (
    EXIT_OK,
    EXIT_PARTIAL,
    _add_engine_args,
    _error,
    _print_failures,
    _progress_bar,
    _run_on_ray,
)
from apexmusic.devices import PRECISIONS

if TYPE_CHECKING:
    from apexmusic.predict import PredictReport, StoreScoreReport


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
    _add_engine_args(p)
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


def _existing(*paths) -> str:
    """The paths that exist, joined for a summary line ("" when none does)."""
    from pathlib import Path

    return ", ".join(str(p) for p in paths if p and Path(p).exists())


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


def _port(text: str) -> int:
    """A TCP port number, for argparse."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535, not {text!r}")
    return int(text)


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


COMMANDS = (_add_import_reference, _add_push, _add_predict, _add_compare, _add_serve)

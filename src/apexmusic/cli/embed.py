"""``apexmusic embed`` (songs into an embedding store) and ``apexmusic store`` (verify, repair)."""

from __future__ import annotations

import contextlib
import shlex
import sys

from apexmusic.cli.common import (
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    _add_engine_args,
    _print_failures,
    _progress_bar,
    _run_on_ray,
)
from apexmusic.devices import PRECISIONS


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
    _add_engine_args(p)
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


COMMANDS = (_add_embed, _add_store)

"""The ``apexmusic`` command. Only this layer prints, draws progress bars and picks exit codes.

Exit status: 0 all done; 1 some inputs failed (each in the failure log, the rest done); 2 usage
or configuration error. Every error is one line on stderr, never a traceback: library errors
(``apexmusic.errors``) and OS errors (a path that cannot be read or written) are mapped here;
``-v`` logs the detail behind a line, ``-vv`` the traceback of an unexpected error.

This module holds ``main`` (parse, run, map errors to exit codes) and the top-level parser. Each
sub-command is a ``_cmd_<name>(args) -> int`` function in the module of its group (``embed``,
``train``, ``predict``, ``arena``, ``demo``, ``report``); its arguments are declared in
``_add_<name>``, which the module lists in ``COMMANDS``; ``common`` holds what several share.
Choices and defaults come from the library (``apexmusic.choices`` and the owning modules); the
parser is built without importing torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from apexmusic.cli import arena, demo, embed, predict, report, train
from apexmusic.cli.common import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, _error, _first_line, _Parser, log
from apexmusic.errors import ApexError

__all__ = ["EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE", "main"]

# In the order `apexmusic --help` lists them.
_COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    *embed.COMMANDS,
    *train.COMMANDS,
    *predict.COMMANDS,
    *arena.COMMANDS,
    *demo.COMMANDS,
    *report.COMMANDS,
)


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


def _os_error_line(exc: OSError) -> str:
    """``cannot use PATH: REASON`` for an OS error of a path the command was given."""
    reason = exc.strerror or type(exc).__name__
    if exc.filename is None:
        return f"error: {reason}"
    return f"error: cannot use {exc.filename}: {reason}"


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

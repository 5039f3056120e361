"""The ``apexmusic`` command. Only this layer prints, draws progress bars and picks exit codes.

Exit status (DESIGN.md): 0 all done; 1 some inputs failed (each in the failure log, the rest
done); 2 usage or configuration error.

Each sub-command is a ``_cmd_<name>(args) -> int`` function; its arguments are declared in
``_build_parser``. Library errors (``apexmusic.errors``) become one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from apexmusic.errors import ApexError

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("apexmusic")


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose - args.quiet)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return handler(args)
    except ApexError as exc:
        print(f"apexmusic: {exc.kind} error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("apexmusic: interrupted", file=sys.stderr)
        return 130


def _configure_logging(level: int) -> None:
    levels = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}
    logging.basicConfig(
        level=levels.get(level, logging.DEBUG if level > 1 else logging.ERROR),
        format="%(levelname)s %(name)s: %(message)s",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apexmusic",
        description="Predict streams, likes and aesthetics of AI-generated songs from audio.",
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


def _progress_bar(total: int | None, desc: str, unit: str = "song"):
    """A tqdm bar on stderr (disabled when stderr is not a terminal and CI is quiet)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr,
                mininterval=0.5)


# === embed (issue 2) ===


# === train / evaluate / grid / import-reference (issue 3) ===


# === predict / compare / serve (issue 5) ===


# === arena (issue 6) ===


# === demo / report (issue 4) ===


if __name__ == "__main__":
    sys.exit(main())

"""What every sub-command shares: exit codes, the one-line error, the parser and help formatter,
progress bars and the flags of more than one command."""

from __future__ import annotations

import argparse
import logging
import sys

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("apexmusic")


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


def _print_failures(failures) -> None:
    """One line on stderr per failed input: ``apexmusic: failed ID (PATH): KIND: MESSAGE``."""
    for failure in failures:
        message = _first_line(failure.message)
        print(f"apexmusic: failed {failure.id} ({failure.path}): {failure.kind}: {message}", file=sys.stderr)


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


def _add_engine_args(p) -> None:
    """Where the work runs: here, or on a Ray cluster and with which encoder actor pool."""
    p.add_argument("--engine", choices=("local", "ray"), default="local", help="run here or on a Ray cluster")
    p.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster address (--engine ray; default: $RAY_ADDRESS, else a local instance)",
    )
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

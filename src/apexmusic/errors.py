"""Typed errors raised by library code. The CLI maps them to one line and an exit status."""

from __future__ import annotations


class ApexError(Exception):
    """Base class of every error apexmusic raises on purpose."""

    kind = "error"


class ConfigError(ApexError):
    """Bad configuration, flags or arguments (CLI exit status 2)."""

    kind = "config"


class InputError(ApexError):
    """An input that cannot be used at all: missing file, unreadable manifest, no inputs."""

    kind = "input"


class AudioDecodeError(ApexError):
    """A file that is not decodable audio (empty, truncated, not audio, no audio stream)."""

    kind = "decode"


class AudioContentError(ApexError):
    """Decodable audio whose content is unusable (too short, too long, non-finite)."""

    kind = "content"


class ModelLoadError(ApexError):
    """Weights or a model directory that cannot be loaded safely."""

    kind = "model"


class StoreError(ApexError):
    """An embedding store that is missing, corrupt or incompatible with the request."""

    kind = "store"


class DataError(ApexError):
    """Metadata or labels that cannot be read or mapped."""

    kind = "data"


class StopRequested(KeyboardInterrupt):
    """Raised in the main thread by a signal handler (SIGTERM), so a run stops as on Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class RunInterrupted(ApexError):
    """A run stopped by a signal after keeping its finished work (CLI exit status 128+signal)."""

    kind = "interrupted"

    def __init__(self, message: str, signum: int, kept: int):
        super().__init__(message)
        self.signum = signum
        self.kept = kept

"""Files and folders: output folders created on demand (or one typed error naming the path and
the reason), and the one content hash of a file."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

from apexmusic.errors import ConfigError


def output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create the folder ``path`` (and its parents) if needed and return it.

    Raises ConfigError when ``path`` is a file, a symlink that leads nowhere (or to itself),
    lies under a file, or cannot be created (read-only, no permission).
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{what} {path} exists and is not a folder") from None
    except NotADirectoryError:
        raise ConfigError(f"{what} {path} lies under a file, not a folder") from None
    except OSError as exc:
        raise ConfigError(f"cannot create {what} {path}: {_reason(exc)}") from None
    return path


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    return exc.strerror or str(exc)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

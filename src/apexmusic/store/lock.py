"""One writer per store: an advisory ``flock`` on ``.writer.lock`` in the store folder.

The kernel releases the lock when its holder exits, however it exits (``kill -9`` included),
so a crashed run never locks a store out. The holder writes its PID into the lock file so a
second writer can say who holds it. Within one process the lock is re-entrant (counted per
folder): a process is one writer however many store objects it opens.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from apexmusic.errors import StoreError

log = logging.getLogger(__name__)

LOCK_FILE = ".writer.lock"

_held: dict[str, tuple[int, int]] = {}  # real folder path -> (fd, holders in this process)
_guard = threading.Lock()


class WriterLock:
    """The writer lock of one store folder, held from construction until :meth:`release`."""

    def __init__(self, root: str | Path):
        import fcntl

        self.root = Path(root)
        self.path = self.root / LOCK_FILE
        self.key = os.path.realpath(self.root)
        self.held = False
        with _guard:
            if self.key in _held:
                fd, count = _held[self.key]
                _held[self.key] = (fd, count + 1)
                self.held = True
                return
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StoreError(f"cannot create the writer lock {self.path}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"process {holder}" if holder else "another process"
                raise StoreError(
                    f"{self.root} is being written by {who} (lock {self.path}); "
                    "wait for it to finish or stop it, then --resume"
                ) from None
            except OSError as exc:  # a file system without locks: go on, but say so
                log.warning("cannot lock %s (%s): no guard against a second writer", self.path, exc.strerror)
            _write_pid(fd)
            _held[self.key] = (fd, 1)
            self.held = True

    def release(self) -> None:
        """Give the lock back (the last holder in this process unlocks the file)."""
        if not self.held:
            return
        self.held = False
        with _guard:
            fd, count = _held[self.key]
            if count > 1:
                _held[self.key] = (fd, count - 1)
                return
            del _held[self.key]
            os.close(fd)  # closing the last descriptor drops the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def _write_pid(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:  # a full disk: the lock holds, only the PID is missing
        log.warning("could not record the PID in the writer lock: %s", exc.strerror)

"""The decoder worker pool of the local engine.

Decoder processes (``spawn``, never ``fork``: the parent may hold torch threads) each get
their own pipe: a worker that crashes mid-message can corrupt or lock nothing shared (a
shared ``multiprocessing.Queue`` would be left locked or half-written). A pump thread hands
out :class:`DecodeTask`s, forwards the typed messages into one bounded queue (memory stays
bounded whatever the song lengths) and replaces a process that dies or hangs; that song
becomes a :class:`SongFailed`.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from apexmusic.audio import SegmentConfig
from apexmusic.embed.messages import DecodeTask, Message, SongEnd, SongFailed, decode_song, encode_song
from apexmusic.encoders import Encoder
from apexmusic.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class _Fatal:
    """The pool cannot go on (its pump failed, or processes die before any work)."""

    reason: str


def _worker_main(
    conn,
    sample_rate: int,
    segment: SegmentConfig,
    log_level: int,
    encoder_factory: Callable[[], Encoder] | None = None,
) -> None:
    """Decoder process: receive DecodeTasks on ``conn`` until None; send messages back.

    Ctrl-C and SIGTERM reach the whole process group; the parent alone decides when decoders
    stop (it flushes first, then closes their pipes), so they ignore both and stay quiet.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    encoder = encoder_factory() if encoder_factory is not None else None
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        messages = decode_song(task, sample_rate, segment)
        if encoder is not None:
            messages = encode_song(messages, encoder)
        try:
            for message in messages:
                conn.send(message)  # blocks while the main process is behind: back-pressure
        except (BrokenPipeError, OSError):
            return


@dataclass
class _Worker:
    proc: Any
    conn: Any
    task: tuple[int, float] | None = None  # (song idx, start time) while decoding


class WorkerPool:
    """Decoder processes, one pipe each, drained by a pump thread into one bounded queue.

    Memory is bounded by ``queue_size`` messages plus one in flight per worker. With an
    ``encoder_factory`` each process also encodes (SegmentVectors instead of SegmentAudio).
    """

    def __init__(
        self,
        n: int,
        sample_rate: int,
        segment: SegmentConfig,
        queue_size: int,
        timeout_s: float,
        encoder_factory: Callable[[], Encoder] | None = None,
    ):
        import multiprocessing as mp

        self.ctx = mp.get_context("spawn")
        level = logging.getLogger("apexmusic").getEffectiveLevel()
        self.args = (sample_rate, segment, level, encoder_factory)
        self.timeout_s = timeout_s
        self.inbox: queue.Queue = queue.Queue(maxsize=queue_size)
        self.pending: list[DecodeTask] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.idle_deaths = 0
        self.workers = [self._spawn() for _ in range(n)]
        self.thread = threading.Thread(target=self._pump, name="apexmusic-decoders", daemon=True)
        self.thread.start()

    def _spawn(self) -> _Worker:
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(target=_worker_main, args=(child, *self.args), daemon=True)
        proc.start()
        child.close()  # only the worker holds its end: its death reads as EOF here
        return _Worker(proc, parent)

    def submit(self, tasks: Sequence[DecodeTask]) -> None:
        with self.lock:
            self.pending.extend(reversed(tasks))

    def messages(self, is_finished: Callable[[], bool]) -> Iterator[Message | None]:
        """Messages until ``is_finished()``; None whenever nothing arrived for 0.2 s."""
        while not is_finished():
            try:
                message = self.inbox.get(timeout=0.2)
            except queue.Empty:
                yield None
                continue
            if isinstance(message, _Fatal):
                raise ConfigError(message.reason)
            yield message

    # ---- pump thread ----------------------------------------------------------------------
    def _pump(self) -> None:
        try:
            self._pump_loop()
        except Exception as exc:  # never leave the main thread waiting on a dead pump
            log.exception("decoder pump failed")
            self._put(_Fatal(f"decoder pump failed: {type(exc).__name__}: {exc}"))

    def _pump_loop(self) -> None:
        from multiprocessing.connection import wait

        while not self.stop.is_set():
            self._dispatch()
            by_conn = {w.conn: w for w in self.workers}
            for conn in wait(list(by_conn), timeout=0.2):
                worker = by_conn[conn]
                try:
                    message = conn.recv()
                except (EOFError, OSError, ValueError):  # died (maybe mid-message)
                    self._replace(worker, f"decoder process died (exit code {self._exit_code(worker)})")
                    continue
                if isinstance(message, (SongEnd, SongFailed)):
                    worker.task = None
                self._put(message)
            self._check_health()

    def _dispatch(self) -> None:
        for worker in self.workers:
            if worker.task is not None:
                continue
            with self.lock:
                if not self.pending:
                    return
                task = self.pending.pop()
            worker.task = (task.idx, time.monotonic())
            try:
                worker.conn.send(task)
            except (BrokenPipeError, OSError):
                self._replace(worker, "decoder process died before starting")

    def _check_health(self) -> None:
        now = time.monotonic()
        for worker in list(self.workers):
            if worker.task is not None and now - worker.task[1] > self.timeout_s:
                worker.proc.kill()
                worker.proc.join(5)
                self._replace(worker, f"decoding took over {self.timeout_s:.0f} s; decoder stopped")
            elif not worker.proc.is_alive() and not worker.conn.poll():
                self._replace(worker, f"decoder process died (exit code {self._exit_code(worker)})")

    @staticmethod
    def _exit_code(worker: _Worker) -> int | None:
        worker.proc.join(1)
        return worker.proc.exitcode

    def _replace(self, worker: _Worker, reason: str) -> None:
        if worker.proc.is_alive():
            worker.proc.kill()
            worker.proc.join(5)
        worker.conn.close()
        if worker.task is not None:
            self._put(SongFailed(worker.task[0], "decode", reason))
        else:
            self.idle_deaths += 1
            if self.idle_deaths > 2 * len(self.workers):
                self._put(_Fatal(f"decoder processes keep dying before any work ({reason}); try --workers 0"))
                self.stop.set()
                return
        log.warning("%s; starting a new decoder process", reason)
        self.workers[self.workers.index(worker)] = self._spawn()

    def _put(self, message: Message | _Fatal) -> None:
        while not self.stop.is_set():
            try:
                self.inbox.put(message, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for worker in self.workers:
            try:
                worker.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 5
        for worker in self.workers:
            worker.proc.join(max(0.0, deadline - time.monotonic()))
            if worker.proc.is_alive():
                worker.proc.kill()
                worker.proc.join(1)
            worker.conn.close()


def spawn_can_start() -> bool:
    """Spawned processes re-run ``__main__`` from its file; a script read from stdin has none."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or os.path.exists(main_file)


def in_process_messages(
    tasks: Sequence[DecodeTask], sample_rate: int, segment: SegmentConfig
) -> Iterator[Message]:
    for task in tasks:
        yield from decode_song(task, sample_rate, segment)

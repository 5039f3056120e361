"""Where an embedding run's songs go, for the local and the Ray engine alike: the store
opened (and locked) for the run's spec, the songs still to do under ``--resume`` (new ones and
ones whose file changed), finished songs buffered into atomic shards, changed songs' rows
replaced, failures logged, progress reported, and one ``last_run`` record at the end."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apexmusic.audio import file_sha256
from apexmusic.embed.config import FLUSH_SECONDS, EmbedConfig, EmbedProgress, EmbedReport
from apexmusic.errors import ApexError, RunInterrupted
from apexmusic.sources import Song
from apexmusic.store import EmbeddingSpec, EmbeddingStore, Failure, SongEmbedding, StoredRow

log = logging.getLogger(__name__)

__all__ = ["FLUSH_SECONDS", "RunPlan", "StoreSink", "open_run", "record_run"]


@dataclass
class RunPlan:
    """What a run writes to and what it has to do."""

    store: EmbeddingStore
    todo: list[Song]
    n_skipped: int
    stale: dict[str, Path] = field(default_factory=dict)  # song id -> shard with its outdated row
    files: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (size, mtime_ns)


class StoreSink:
    """Finished songs buffered into atomic store shards (every ``shard_songs`` songs, or after
    ``flush_seconds``), failures appended to ``failures.jsonl``, progress after each song."""

    def __init__(
        self,
        plan: RunPlan,
        shard_songs: int,
        on_progress: Callable[[EmbedProgress], None] | None,
        start: float | None = None,
        flush_seconds: float = FLUSH_SECONDS,
    ):
        self.plan = plan
        self.store = plan.store
        self.shard_songs = shard_songs
        self.flush_seconds = flush_seconds
        self.total = len(plan.todo)
        self.n_skipped = plan.n_skipped
        self.on_progress = on_progress
        self.start = time.monotonic() if start is None else start
        self.buffer: list[SongEmbedding] = []
        self.removals: set[str] = set()  # changed songs that now fail: their old rows go
        self.failures: list[Failure] = []
        self.n_done = self.n_cached = self.n_replaced = self.n_written = 0
        self.audio_seconds = 0.0
        self.last_flush = time.monotonic()

    def put(self, result: SongEmbedding | Failure, cached: bool = False) -> None:
        """A finished song or a failure, whichever it is."""
        if isinstance(result, Failure):
            self.fail(result)
        else:
            self.add(result, cached)

    def add(self, embedding: SongEmbedding, cached: bool = False) -> None:
        if embedding.size is None and embedding.path in self.plan.files:
            embedding.size, embedding.mtime_ns = self.plan.files[embedding.path]
        self.buffer.append(embedding)
        self.n_done += 1
        self.n_cached += cached
        self.audio_seconds += embedding.duration_s
        if len(self.buffer) >= self.shard_songs:
            self.flush()
        else:
            self.flush_if_due()
        self.progress(embedding.id)

    def fail(self, failure: Failure) -> None:
        self.store.record_failure(failure)
        self.failures.append(failure)
        if failure.id in self.plan.stale:
            self.removals.add(failure.id)
        log.info("failed %s: %s: %s", failure.id, failure.kind, failure.message)
        self.progress(failure.id)

    def flush_if_due(self) -> None:
        """Write what is buffered once ``flush_seconds`` have passed, so an interrupted job
        (even ``kill -9``) loses at most that much work."""
        if (self.buffer or self.removals) and time.monotonic() - self.last_flush > self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """New songs become one new shard; a changed song's row is swapped inside its shard."""
        # Taken out of the buffer before writing: a write cut short (a signal, a full disk)
        # loses these songs to --resume, and a second flush can never store them twice.
        buffer, removals, stale = self.buffer, self.removals, self.plan.stale
        self.buffer, self.removals = [], set()
        self.last_flush = time.monotonic()
        fresh = [e for e in buffer if e.id not in stale]
        self.store.write(fresh)
        self.n_written += len(fresh)
        by_shard: dict[Path, tuple[set[str], list[SongEmbedding]]] = defaultdict(lambda: (set(), []))
        for embedding in buffer:
            if embedding.id in stale:
                drop, songs = by_shard[stale[embedding.id]]
                drop.add(embedding.id)
                songs.append(embedding)
        for song_id in removals:
            by_shard[stale[song_id]][0].add(song_id)
        for shard, (drop, songs) in by_shard.items():
            self.store.replace_rows(shard, drop, songs)
            for song_id in drop:
                del stale[song_id]
            self.n_replaced += len(songs)
            self.n_written += len(songs)

    def interrupted(self, exc: KeyboardInterrupt) -> RunInterrupted:
        """The error that reports a run stopped by a signal, once its finished songs are kept."""
        signum = int(getattr(exc, "signum", signal.SIGINT))
        name = signal.Signals(signum).name
        return RunInterrupted(
            f"stopped by {name}: {self.n_written} songs finished in this run are kept in "
            f"{self.store.root} ({self.n_skipped} were there before)",
            signum,
            self.n_written,
        )

    def progress(self, last_id: str) -> None:
        if self.on_progress is not None:
            self.on_progress(
                EmbedProgress(
                    self.n_done,
                    len(self.failures),
                    self.n_skipped,
                    self.total,
                    self.audio_seconds,
                    time.monotonic() - self.start,
                    last_id,
                )
            )

    def report(self, out_dir: str | Path) -> EmbedReport:
        return EmbedReport(
            self.n_done,
            len(self.failures),
            self.n_skipped,
            self.audio_seconds,
            time.monotonic() - self.start,
            self.failures,
            self.n_cached,
            str(out_dir),
            self.n_replaced,
        )


def open_run(songs: Sequence[Song], out_dir: str | Path, spec: EmbeddingSpec, resume: bool) -> RunPlan:
    """Lock and open the store for ``spec`` at ``out_dir`` and plan the run.

    Under ``resume`` a stored song is skipped when its file still has the size and mtime it
    was embedded with, or else the same SHA-256; a song whose content changed is done again and
    its row replaced. The caller must ``plan.store.close()`` (releases the writer lock).
    """
    store = EmbeddingStore.create(out_dir, spec, resume=resume)
    try:
        stored = store.index() if resume else {}
        files = {s.path: st for s in songs if (st := _stat(s.path)) is not None}
        todo, stale = [], {}
        for song in songs:
            row = stored.get(song.id)
            if row is None:
                todo.append(song)
            elif _changed(row, files.get(song.path), song.path):
                todo.append(song)
                stale[song.id] = row.shard
    except BaseException:
        store.close()
        raise
    n_skipped = len(songs) - len(todo)
    if n_skipped:
        log.info("resume: %d of %d songs are already in %s", n_skipped, len(songs), out_dir)
    if stale:
        log.warning("resume: %d songs changed since they were embedded; embedding them again", len(stale))
    return RunPlan(store, todo, n_skipped, stale, files)


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _changed(row: StoredRow, stat: tuple[int, int] | None, path: str) -> bool:
    """Whether the file at ``path`` no longer holds what ``row`` was embedded from."""
    if stat is None:
        return False  # gone or unreadable: keep what was embedded rather than lose it
    if (row.size, row.mtime_ns) == stat:
        return False
    try:
        return file_sha256(path) != row.sha256
    except (ApexError, OSError):
        return False


def record_run(
    store: EmbeddingStore,
    report: EmbedReport,
    config: EmbedConfig,
    engine: str,
    batch_size: int,
    **details: Any,
) -> None:
    """The manifest's ``last_run`` block: counts, timings, settings and the engine's ``details``."""
    store.update_manifest(
        last_run={
            "engine": engine,
            "songs_done": report.n_done,
            "songs_failed": report.n_failed,
            "songs_skipped": report.n_skipped,
            "songs_cached": report.n_cached,
            "audio_seconds": round(report.audio_seconds, 3),
            "wall_seconds": round(report.wall_seconds, 3),
            "batch_size": batch_size,
            "device": config.device,
            "precision": config.precision,
            **details,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )

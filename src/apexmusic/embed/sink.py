"""Where an embedding run's songs go, for the local and the Ray engine alike: the store
opened for the run's spec, finished songs buffered into atomic shards, failures logged,
progress reported, and one ``last_run`` record in the manifest at the end."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from apexmusic.embed.config import EmbedConfig, EmbedProgress, EmbedReport
from apexmusic.sources import Song
from apexmusic.store import EmbeddingSpec, EmbeddingStore, Failure, SongEmbedding

log = logging.getLogger(__name__)

FLUSH_SECONDS = 120.0


class StoreSink:
    """Finished songs buffered into atomic store shards (every ``shard_songs`` songs, or after
    ``FLUSH_SECONDS``), failures appended to ``failures.jsonl``, progress after each song."""

    def __init__(
        self,
        store: EmbeddingStore,
        shard_songs: int,
        total: int,
        n_skipped: int,
        on_progress: Callable[[EmbedProgress], None] | None,
        start: float | None = None,
    ):
        self.store = store
        self.shard_songs = shard_songs
        self.total = total
        self.n_skipped = n_skipped
        self.on_progress = on_progress
        self.start = time.monotonic() if start is None else start
        self.buffer: list[SongEmbedding] = []
        self.failures: list[Failure] = []
        self.n_done = self.n_cached = 0
        self.audio_seconds = 0.0
        self.last_flush = time.monotonic()

    def put(self, result: SongEmbedding | Failure, cached: bool = False) -> None:
        """A finished song or a failure, whichever it is."""
        if isinstance(result, Failure):
            self.fail(result)
        else:
            self.add(result, cached)

    def add(self, embedding: SongEmbedding, cached: bool = False) -> None:
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
        log.info("failed %s: %s: %s", failure.id, failure.kind, failure.message)
        self.progress(failure.id)

    def flush_if_due(self) -> None:
        """Write what is buffered once FLUSH_SECONDS have passed, so an interrupted slow job
        loses at most that much work."""
        if self.buffer and time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.store.write(self.buffer)
            self.buffer = []
        self.last_flush = time.monotonic()

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
        )


def open_run(
    songs: Sequence[Song], out_dir: str | Path, spec: EmbeddingSpec, resume: bool
) -> tuple[EmbeddingStore, list[Song], int]:
    """The store for ``spec`` at ``out_dir``, the songs still to do, and how many were skipped
    (under ``resume``, the songs already in the store)."""
    store = EmbeddingStore.create(out_dir, spec, resume=resume)
    done = store.done_ids() if resume else set()
    todo = [s for s in songs if s.id not in done]
    n_skipped = len(songs) - len(todo)
    if n_skipped:
        log.info("resume: %d of %d songs are already in %s", n_skipped, len(songs), out_dir)
    return store, todo, n_skipped


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

"""The local engine: songs in, an embedding store out, on one machine.

1. Songs already in the store are skipped under ``resume`` (unless their file changed: then
   they are done again and their row replaced, :func:`~apexmusic.embed.sink.open_run`); the
   rest are checked for
   duplicate content: files whose sizes collide are hashed up front, and a file whose
   SHA-256 was already claimed by another song is not decoded again -- that song gets a copy
   of the first one's vectors (``EmbedReport.n_cached``).
2. Decoder worker processes (``workers``; 0 decodes in-process) stream each song's segments
   (:mod:`apexmusic.embed.workers`), so decoding overlaps the encoder and memory stays
   bounded whatever the song lengths. A decoder that crashes or hangs is replaced; its song
   fails. Light encoders (``encode_in_decoder``) run inside the decoder processes instead.
3. The main process gathers segments *across songs* into batches of ``batch_size``, full
   segments and last (shorter) segments in separate batches so a batch is trimmed to its
   longest row, and runs the encoder on each batch.
4. The :class:`SongAssembler` turns a song's vectors into its song-level vector once all are
   in; the :class:`StoreSink` buffers songs into atomic Parquet shards every ``shard_songs``
   songs (and every ``flush_seconds``), so a killed run loses at most that buffer (on Ctrl-C
   or SIGTERM it is still written, the decoders are stopped quietly and the run raises
   RunInterrupted) and ``--resume`` redoes exactly the songs not in a shard.
5. A song that fails anywhere (decode, content, encoder, a decoder process that crashed or
   hung) becomes one ``failures.jsonl`` line; the other songs carry on.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from apexmusic.audio import file_sha256
from apexmusic.embed.assembly import SongAssembler
from apexmusic.embed.config import (
    EmbedConfig,
    EmbedProgress,
    EmbedReport,
    EncoderFactory,
    build_encoder,
    spec_for,
)
from apexmusic.embed.messages import DecodeTask, Message, SegmentAudio, encode_segments
from apexmusic.embed.sink import RunPlan, StoreSink, open_run, record_run
from apexmusic.embed.workers import WorkerPool, in_process_messages, spawn_can_start
from apexmusic.encoders import Encoder
from apexmusic.errors import ApexError
from apexmusic.sources import Song
from apexmusic.store import Failure, SongEmbedding

log = logging.getLogger(__name__)


class _Run:
    """One ``embed_inputs`` call: batching across songs, assembling, writing, reporting."""

    def __init__(
        self,
        plan: RunPlan,
        encoder: Encoder,
        config: EmbedConfig,
        on_progress: Callable[[EmbedProgress], None] | None,
    ):
        self.songs = songs = plan.todo
        self.encoder = encoder
        self.config = config
        self.segment = config.segment_config()
        self.full_samples = self.segment.segment_samples(encoder.sample_rate)
        self.batch_size = config.batch_size_for(encoder)
        self.sink = StoreSink(plan, config.shard_songs, on_progress, flush_seconds=config.flush_seconds)
        self.batches: dict[bool, list[SegmentAudio]] = {True: [], False: []}
        self.copies: dict[int, list[int]] = defaultdict(list)  # primary idx -> duplicate idxs
        self.tasks = self._plan()
        self.assembler = SongAssembler(songs, encoder.sample_rate, config.compat, [t.idx for t in self.tasks])
        self.resolved = 0
        self.workers_used = 0

    def run(self) -> None:
        self.sink.progress("")
        if not self.tasks:
            return
        in_workers = self.encoder.encode_in_decoder
        n_workers = min(self.config.n_workers(in_workers), len(self.tasks))
        if self.config.workers is None and len(self.tasks) == 1:
            n_workers = 0  # one song: a worker's start-up (~1 s) would cost more than it overlaps
        if n_workers and not spawn_can_start():
            log.info("decoding in-process: worker processes cannot re-import __main__ (a script on stdin)")
            n_workers = 0
        self.workers_used = n_workers
        try:
            if n_workers == 0:
                self._consume(in_process_messages(self.tasks, self.encoder.sample_rate, self.segment))
                return
            if in_workers:
                log.info(
                    "%d processes decode and encode (%s is light enough to run beside its decoder)",
                    n_workers,
                    self.encoder.name,
                )
            pool = WorkerPool(
                n_workers,
                self.encoder.sample_rate,
                self.segment,
                queue_size=max(4, 2 * self.batch_size + 2 * n_workers),
                timeout_s=self.config.decode_timeout_s,
                encoder_factory=EncoderFactory(self.config) if in_workers else None,
            )
            try:
                pool.submit(self.tasks)
                self._consume(pool.messages(lambda: self.resolved >= len(self.songs)))
            finally:
                pool.close()
        finally:  # also on Ctrl-C / SIGTERM: finished songs reach a shard, so --resume skips them
            self.sink.flush()

    def _plan(self) -> list[DecodeTask]:
        """Decode tasks, one per distinct content; duplicates wait for their primary's vectors."""
        hashes = _hash_size_collisions([s.path for s in self.songs])
        owner: dict[str, int] = {}
        tasks = []
        for idx, song in enumerate(self.songs):
            sha = hashes.get(idx)
            if sha is not None and sha in owner:
                self.copies[owner[sha]].append(idx)
                continue
            if sha is not None:
                owner[sha] = idx
            tasks.append(DecodeTask(idx, song.path, sha))
        if self.copies:
            log.info(
                "%d songs share content with another input; decoding each content once",
                sum(map(len, self.copies.values())),
            )
        return tasks

    def _consume(self, messages: Iterator[Message | None]) -> None:
        for message in messages:
            if message is None:  # the decoders are quiet: encode what is waiting
                self._run_batches()
            elif isinstance(message, SegmentAudio):
                self._add_segment(message)
            else:
                self._take(message)
            self.sink.flush_if_due()
        self._run_batches()

    def _add_segment(self, segment: SegmentAudio) -> None:
        if not self.assembler.is_open(segment.idx):
            return  # the song already failed
        full = segment.audio.shape[0] == self.full_samples
        bucket = self.batches[full]
        bucket.append(segment)
        if len(bucket) >= self.batch_size:
            self._run_batch(full)

    def _run_batches(self) -> None:
        for full in (True, False):
            if self.batches[full]:
                self._run_batch(full)

    def _run_batch(self, full: bool) -> None:
        items = [s for s in self.batches[full] if self.assembler.is_open(s.idx)]
        self.batches[full] = []
        for message in encode_segments(self.encoder, items):
            self._take(message)

    def _take(self, message: Message) -> None:
        result = self.assembler.add(message)
        if result is None:
            return
        self._resolve(result, cached=False)
        for dup in self.copies.pop(message.idx, []):
            self._resolve(_copy_for(self.songs[dup], result, self.songs[message.idx]), cached=True)

    def _resolve(self, result: SongEmbedding | Failure, cached: bool) -> None:
        self.resolved += 1
        self.sink.put(result, cached)


def _copy_for(song: Song, result: SongEmbedding | Failure, primary: Song) -> SongEmbedding | Failure:
    """The result of a song with the same content as ``primary``."""
    if isinstance(result, Failure):
        return Failure(song.id, song.path, result.kind, f"same content as {primary.id}: {result.message}")
    return replace(result, id=song.id, path=song.path, extras=dict(result.extras))


def _hash_size_collisions(paths: Sequence[str]) -> dict[int, str]:
    """SHA-256 of the files whose byte size equals another input's (only they can be duplicates)."""
    by_size: dict[int, list[int]] = defaultdict(list)
    for idx, path in enumerate(paths):
        try:
            size = os.stat(path).st_size
        except OSError:
            continue
        if size > 0:
            by_size[size].append(idx)
    hashes: dict[int, str] = {}
    for group in by_size.values():
        if len(group) < 2:
            continue
        for idx in group:
            try:
                hashes[idx] = file_sha256(paths[idx])
            except (ApexError, OSError):
                continue
    return hashes


def embed_inputs(
    songs: list[Song],
    out_dir: str | Path,
    config: EmbedConfig | None = None,
    on_progress: Callable[[EmbedProgress], None] | None = None,
) -> EmbedReport:
    """Embed ``songs`` into the store at ``out_dir`` (created, or continued under ``config.resume``).

    Per-song problems never raise: they become ``failures.jsonl`` lines and ``report.failures``.
    Raises ConfigError / StoreError / ModelLoadError for problems with the run itself, and
    RunInterrupted on KeyboardInterrupt (or :class:`~apexmusic.errors.StopRequested`) once the
    finished songs are written.
    """
    config = config or EmbedConfig()
    config.validate()
    encoder = build_encoder(config)
    plan = open_run(songs, out_dir, spec_for(encoder, config), config.resume)
    try:
        run = _Run(plan, encoder, config, on_progress)
        try:
            run.run()
        except KeyboardInterrupt as exc:
            raise run.sink.interrupted(exc) from None
        report = run.sink.report(out_dir)
        record_run(plan.store, report, config, "local", run.batch_size, workers=run.workers_used)
    finally:
        plan.store.close()
    return report

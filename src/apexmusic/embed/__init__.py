"""Batched embedding extraction: songs in, an embedding store out.

The stages, one module each:

- :mod:`~apexmusic.embed.config`: :class:`EmbedConfig` (validated on construction), the run's
  report and progress, the encoder it names and the :class:`~apexmusic.store.EmbeddingSpec`
  of the vectors that encoder makes (:func:`spec_for`);
- :mod:`~apexmusic.embed.messages`: the typed messages between decoding and encoding
  (:class:`SegmentAudio`, :class:`SegmentVectors`, :class:`SongEnd`, :class:`SongFailed`) and
  the stage functions :func:`decode_song` and :func:`encode_segments`;
- :mod:`~apexmusic.embed.pooling`: segment vectors to a song vector;
- :mod:`~apexmusic.embed.assembly`: :class:`SongAssembler`, each song once from its parts;
- :mod:`~apexmusic.embed.sink`: :class:`StoreSink`, the store side of a run and its
  ``last_run`` record;
- :mod:`~apexmusic.embed.workers`: the local engine's decoder process pool;
- :mod:`~apexmusic.embed.local`: the local engine, :func:`embed_inputs`
  (:mod:`apexmusic.distributed` is the Ray engine, built from the same parts);
- :mod:`~apexmusic.embed.song`: :class:`SongEmbedder`, one song in memory for prediction.

Reference compatibility (``compat="reference"``): the published pipeline's audio path
(``SegmentConfig.for_reference()``: libsndfile decoding, torchaudio's sinc resampler, 30 s
segments with every non-empty tail kept, zero-padded and counted as full), plain mean over
segments; the encoder gets ``compat="reference"`` and pools what the published pipeline pools,
at the run's precision (``fp32`` for the published arithmetic too).
"""

from apexmusic.embed.assembly import SongAssembler, SongParts
from apexmusic.embed.config import (
    DEFAULT_MAX_SECONDS,
    EmbedConfig,
    EmbedProgress,
    EmbedReport,
    EncoderFactory,
    build_encoder,
    spec_for,
)
from apexmusic.embed.local import embed_inputs
from apexmusic.embed.messages import (
    DecodeTask,
    Message,
    SegmentAudio,
    SegmentVectors,
    SongEnd,
    SongFailed,
    decode_song,
    encode_batch,
    encode_segments,
)
from apexmusic.embed.pooling import combine_segments, segment_weights, song_embedding
from apexmusic.embed.sink import FLUSH_SECONDS, RunPlan, StoreSink, open_run, record_run
from apexmusic.embed.song import SongEmbedder
from apexmusic.embed.workers import WorkerPool
from apexmusic.store.spec import REFERENCE

__all__ = [
    "DEFAULT_MAX_SECONDS",
    "FLUSH_SECONDS",
    "REFERENCE",
    "DecodeTask",
    "EmbedConfig",
    "EmbedProgress",
    "EmbedReport",
    "EncoderFactory",
    "Message",
    "SegmentAudio",
    "SegmentVectors",
    "RunPlan",
    "SongAssembler",
    "SongEmbedder",
    "SongEnd",
    "SongFailed",
    "SongParts",
    "StoreSink",
    "WorkerPool",
    "build_encoder",
    "combine_segments",
    "decode_song",
    "embed_inputs",
    "encode_batch",
    "encode_segments",
    "open_run",
    "record_run",
    "segment_weights",
    "song_embedding",
    "spec_for",
]

"""The settings of an embedding run, what it reports, and the encoder and spec they name."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from apexmusic.audio import SegmentConfig
from apexmusic.choices import DEFAULT_MAX_SECONDS
from apexmusic.devices import PRECISIONS
from apexmusic.encoders import Encoder, load_encoder
from apexmusic.errors import ConfigError
from apexmusic.store import EmbeddingSpec, Failure
from apexmusic.store.spec import REFERENCE

FLUSH_SECONDS = 20.0  # finished songs reach a shard at least this often (what kill -9 can lose)


@dataclass
class EmbedConfig:
    """Settings of one extraction run (CLI flags map one to one); checked on construction."""

    encoder: str = "handcrafted"
    weights: str | None = None
    segment_seconds: float = 30.0
    hop_seconds: float | None = None
    batch_size: int | None = None  # None: the encoder's default_batch_size
    device: str = "auto"
    precision: str = "auto"
    compat: str | None = None  # "reference": what the published pipeline computes (any precision)
    workers: int | None = None  # decoder processes; None: cores - 1 (at most 8); 0: in-process
    resume: bool = False
    max_seconds: float | None = DEFAULT_MAX_SECONDS  # longer songs fail with a content error
    shard_songs: int = 256  # songs per Parquet shard
    flush_seconds: float = FLUSH_SECONDS  # and a shard at least this often, however few songs
    decode_timeout_s: float = 900.0  # a decoder stuck this long on one song is killed
    encoder_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for settings no run can use (also after fields were changed)."""
        if not self.encoder:
            raise ConfigError("an embedding run needs an encoder name")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.compat not in (None, REFERENCE):
            raise ConfigError(f"compat must be 'reference' or unset, got {self.compat!r}")
        if self.compat == REFERENCE:
            if self.segment_seconds != 30.0 or self.hop_seconds not in (None, 30.0):
                raise ConfigError("--compat reference uses 30 s segments without overlap")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.shard_songs < 1:
            raise ConfigError(f"shard_songs must be >= 1, got {self.shard_songs}")
        if not self.flush_seconds > 0:
            raise ConfigError(f"flush_seconds must be positive, got {self.flush_seconds}")
        if self.decode_timeout_s <= 0:
            raise ConfigError(f"decode_timeout_s must be positive, got {self.decode_timeout_s}")
        self.segment_config()  # validates lengths and max_seconds

    def segment_config(self) -> SegmentConfig:
        config = SegmentConfig(
            segment_seconds=self.segment_seconds,
            hop_seconds=self.hop_seconds,
            max_seconds=self.max_seconds,
        )
        return config.for_reference() if self.compat == REFERENCE else config

    def n_workers(self, encode_in_workers: bool = False) -> int:
        if self.workers is not None:
            return self.workers
        if encode_in_workers:  # the main process only assembles: every core decodes and encodes
            return max(1, min(32, os.cpu_count() or 2))
        return max(1, min(8, (os.cpu_count() or 2) - 1))  # one decodes ~450x real time

    def batch_size_for(self, encoder: Encoder) -> int:
        """Segments per encoder call: the configured size, else the encoder's default."""
        return int(self.batch_size or encoder.default_batch_size)


@dataclass
class EmbedProgress:
    """Passed to ``on_progress`` after every finished, failed or cached song."""

    done: int
    failed: int
    skipped: int
    total: int  # songs this run has to do (after skipping)
    audio_seconds: float
    wall_seconds: float
    last_id: str = ""


@dataclass
class EmbedReport:
    n_done: int
    n_failed: int
    n_skipped: int
    audio_seconds: float
    wall_seconds: float
    failures: list[Failure]
    n_cached: int = 0  # done songs whose vectors were copied from a song with identical content
    out_dir: str = ""
    n_replaced: int = 0  # done songs whose file changed since it was stored: the old row replaced


def build_encoder(config: EmbedConfig) -> Encoder:
    """Load the encoder a config names (telling it about reference compat)."""
    config.validate()
    options = dict(config.encoder_options)
    if config.compat == REFERENCE:
        options["compat"] = REFERENCE
    return load_encoder(
        config.encoder, weights=config.weights, device=config.device, precision=config.precision, **options
    )


@dataclass(frozen=True)
class EncoderFactory:
    """A picklable recipe for a run's encoder: ``build_encoder(config)`` in whichever process
    calls it (a decoder process of the local engine, a Ray actor)."""

    config: EmbedConfig

    def __call__(self) -> Encoder:
        return build_encoder(self.config)


def spec_for(encoder: Encoder, config: EmbedConfig) -> EmbeddingSpec:
    """The EmbeddingSpec of vectors that ``encoder`` makes under ``config``."""
    from apexmusic import __version__

    segment = config.segment_config()
    reference = config.compat == REFERENCE
    return EmbeddingSpec(
        encoder=encoder.name,
        weights=encoder.weights_id,
        fingerprint=encoder.fingerprint,
        n_layers=int(encoder.n_layers),
        dim=int(encoder.dim),
        sample_rate=int(encoder.sample_rate),
        segment_seconds=float(segment.segment_seconds),
        hop_seconds=None if segment.hop_seconds in (None, segment.segment_seconds) else segment.hop_seconds,
        compat=config.compat,
        pad_last=segment.pad_last,
        pooling="all_frames" if reference else "valid_frames",
        segment_weighting="uniform" if reference else "valid_seconds",
        decoder=segment.decoder,
        resampler=segment.resampler,
        precision=encoder.precision,
        encoder_settings=encoder.describe(),
        version=__version__,
    )

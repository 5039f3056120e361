"""Audio input: decode any common format, mix to mono, resample, cut into segments.

Decoding uses PyAV (FFmpeg bundled in the wheel): wav, flac, mp3, ogg/vorbis, opus, m4a/aac
and anything else FFmpeg reads. Channels are mixed to mono by their plain mean (what the
reference pipeline's ``mean(dim=1)`` does), then resampled with soxr's streaming resampler.
Everything streams: a song is never held whole in memory by ``iter_segments``; memory stays
bounded by about two segments whatever the song's length.

The published pipeline decodes and resamples differently, and reference compat
(``SegmentConfig.for_reference()``) follows it: libsndfile (``soundfile``) decodes every file
it can read (wav, flac, ogg/vorbis, opus, mp3) and PyAV only the rest (m4a/aac, ...), under
one decoder identity ``REFERENCE_DECODER``; the resampler is torchaudio's default windowed
sinc (``apexmusic.sinc``), streamed with the same result as one call on the whole song.

Segments (``SegmentConfig``):
  - length ``segment_seconds`` (default 30 s), start every ``hop_seconds`` (default = length,
    no overlap);
  - ``Segment.audio`` is always ``segment_samples`` long, zero-padded at the end, and
    ``Segment.valid`` counts the real samples, so pooling can skip the padding;
  - ``pad_last=True`` reproduces the reference pipeline: the last segment is zero-padded to
    full length and *counted* as full length (``valid == segment_samples``);
  - a trailing piece shorter than ``min_seconds`` is dropped when earlier segments exist
    (it carries under 0.1 s of sound and too few frames for a frame-based encoder), except
    with ``pad_last``: the reference keeps every non-empty tail as one more padded segment;
  - ``max_seconds`` guards against absurdly long inputs (AudioContentError past it).

Hostile input (each raises a typed error with a one-line message, never anything else):
  - missing path, dangling symlink, folder, unreadable file -> ``InputError``;
  - empty file, not audio (text named .mp3, random bytes), no audio stream, nothing
    decodable (truncated header) -> ``AudioDecodeError``;
  - a file truncated mid-stream decodes up to the cut (FFmpeg skips broken packets), so it
    yields an embedding of the audio that is there;
  - NaN/Inf samples (float WAV): *sanitised* -- replaced by 0 -- when they are at most
    ``MAX_NONFINITE_FRACTION`` (1 %) of the samples, so a few corrupt samples do not lose a
    song; more than that is corrupt content -> ``AudioContentError``. Finite samples are
    clipped to +-``MAX_ABS_SAMPLE`` (16, i.e. +24 dBFS) so float WAVs with absurd values
    cannot overflow an encoder;
  - shorter than ``min_seconds`` (e.g. ten samples) -> ``AudioContentError``;
  - silence, 8 channels, 8 kHz or 192 kHz are valid audio and decode normally.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apexmusic import sinc
from apexmusic.errors import AudioContentError, AudioDecodeError, InputError
from apexmusic.paths import sha256_file

log = logging.getLogger(__name__)

MAX_NONFINITE_FRACTION = 0.01
MAX_ABS_SAMPLE = 16.0
_RESAMPLE_QUALITY = "HQ"
# Decoder and resampler identities, recorded in every EmbeddingSpec.
DECODER = "pyav"
RESAMPLER = f"soxr-{_RESAMPLE_QUALITY.lower()}"
REFERENCE_DECODER = "soundfile|pyav-fallback"  # libsndfile when it reads the file, else PyAV
REFERENCE_RESAMPLER = sinc.NAME  # torchaudio.functional.resample's default kernel
DECODERS = (DECODER, REFERENCE_DECODER)
RESAMPLERS = (RESAMPLER, REFERENCE_RESAMPLER)
_CHUNK_SAMPLES = 1 << 16  # decoded samples gathered before one soxr call


@dataclass
class SegmentConfig:
    """How a song is cut into encoder inputs."""

    segment_seconds: float = 30.0
    hop_seconds: float | None = None  # None: hop = segment (no overlap)
    pad_last: bool = False  # reference pipeline: last segment padded and counted as full
    max_seconds: float | None = None  # longer inputs raise AudioContentError
    min_seconds: float = 0.1  # shorter inputs raise AudioContentError
    decoder: str = DECODER  # one of DECODERS
    resampler: str = RESAMPLER  # one of RESAMPLERS

    def __post_init__(self) -> None:
        from apexmusic.errors import ConfigError

        if self.decoder not in DECODERS:
            raise ConfigError(f"decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")
        if self.resampler not in RESAMPLERS:
            raise ConfigError(f"resampler must be one of {', '.join(RESAMPLERS)}, got {self.resampler!r}")

        if not self.segment_seconds > 0:
            raise ConfigError(f"segment_seconds must be > 0, got {self.segment_seconds}")
        if self.hop_seconds is not None and not 0 < self.hop_seconds <= self.segment_seconds:
            raise ConfigError(
                f"hop_seconds must be in (0, segment_seconds={self.segment_seconds}], got {self.hop_seconds}"
            )
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError(f"max_seconds must be > 0, got {self.max_seconds}")

    def for_reference(self) -> SegmentConfig:
        """This config as the published pipeline cuts songs: padded tails kept, its decoder and resampler."""
        from dataclasses import replace

        return replace(self, pad_last=True, decoder=REFERENCE_DECODER, resampler=REFERENCE_RESAMPLER)

    def segment_samples(self, sample_rate: int) -> int:
        return max(1, int(round(self.segment_seconds * sample_rate)))

    def hop_samples(self, sample_rate: int) -> int:
        hop = self.segment_seconds if self.hop_seconds is None else self.hop_seconds
        return max(1, int(round(hop * sample_rate)))


@dataclass
class Segment:
    """One encoder input: ``audio`` float32 [segment_samples], zero-padded; ``valid`` real samples."""

    audio: np.ndarray
    valid: int
    start: int = 0  # first sample's index in the song (at the target rate)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (the content-hash cache key)."""
    _check_readable(path)
    return sha256_file(path)


def _check_readable(path: str | os.PathLike) -> None:
    p = Path(path)
    if p.is_symlink() and not p.exists():
        raise InputError(f"dangling symlink (points to {os.readlink(p)})")
    if not p.exists():
        raise InputError("file not found")
    if p.is_dir():
        raise InputError("is a folder, not an audio file")
    if not os.access(p, os.R_OK):
        raise InputError("permission denied")
    if p.stat().st_size == 0:
        raise AudioDecodeError("empty file (0 bytes)")


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


class _Sanitiser:
    """Replaces non-finite samples by 0 and counts them, clips absurd finite values."""

    def __init__(self) -> None:
        self.total = 0
        self.nonfinite = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.total += x.size
        finite = np.isfinite(x)
        if not finite.all():
            self.nonfinite += int(x.size - np.count_nonzero(finite))
            x = np.where(finite, x, 0.0).astype(np.float32)
        return np.clip(x, -MAX_ABS_SAMPLE, MAX_ABS_SAMPLE, out=x)

    def check(self) -> None:
        if self.total and self.nonfinite / self.total > MAX_NONFINITE_FRACTION:
            raise AudioContentError(
                f"{self.nonfinite} of {self.total} samples are NaN or infinite "
                f"(more than {MAX_NONFINITE_FRACTION:.0%}): corrupt audio"
            )
        if self.nonfinite:
            log.warning("replaced %d NaN/Inf samples by 0", self.nonfinite)


def _open(path: str | os.PathLike):
    import av

    _check_readable(path)
    try:
        # "file:" pins FFmpeg's local-file protocol: a name such as "http:..." or "concat:..."
        # is never read as a URL or a protocol spec.
        container = av.open("file:" + os.path.abspath(path), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise AudioDecodeError(f"not a decodable audio file ({_ffmpeg_reason(exc)})") from None
    if not container.streams.audio:
        container.close()
        raise AudioDecodeError("no audio stream in file")
    return container


def _ffmpeg_reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())[:160]


def _iter_frames(path: str | os.PathLike, info: dict) -> Iterator[np.ndarray]:
    """Decoded float32 ``[T, C]`` frames at the file's own rate; fills ``info['rate']``, ``info['channels']``.

    Packets FFmpeg cannot decode are skipped (as the ``ffmpeg`` tool does), so a truncated or
    partly corrupt file yields the audio that is intact; a file with none raises.
    """
    import av

    container = _open(path)
    try:
        stream = container.streams.audio[0]
        info["rate"] = int(stream.codec_context.sample_rate or stream.rate or 0)
        info["channels"] = int(stream.codec_context.channels or 0)
        # Packed float keeps layout and rate; one plane whatever the channel count (PyAV's
        # planar to_ndarray crashes on 8-channel frames).
        to_float = av.AudioResampler(format="flt")
        bad_packets = 0
        decoded = 0
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    bad_packets += 1
                    continue
                for frame in frames:
                    if frame.sample_rate and frame.sample_rate != info["rate"]:
                        if decoded:
                            raise AudioDecodeError("sample rate changes inside the stream")
                        info["rate"] = int(frame.sample_rate)
                    for samples in _float_frames(frame, to_float):
                        info["channels"] = samples.shape[1]
                        decoded += samples.shape[0]
                        yield samples
        except av.error.FFmpegError as exc:
            bad_packets += 1
            log.warning("%s: decoding stopped early: %s", path, _ffmpeg_reason(exc))
        if bad_packets:
            log.warning("%s: skipped %d undecodable packets", path, bad_packets)
        if decoded == 0:
            raise AudioDecodeError(
                "no decodable audio in file" + (f" ({bad_packets} corrupt packets)" if bad_packets else "")
            )
        if not info["rate"]:
            raise AudioDecodeError("unknown sample rate")
    finally:
        container.close()


def _float_frames(frame, to_float) -> Iterator[np.ndarray]:
    """A decoded frame as float32 ``[T, C]`` arrays (most codecs already decode to float)."""
    channels = len(frame.layout.channels)
    if frame.format.name == "fltp" and channels <= 2:  # mp3, aac, vorbis: no conversion needed
        samples = frame.to_ndarray().T
        if samples.size:
            yield samples
        return
    for converted in to_float.resample(frame):
        channels = len(converted.layout.channels)
        samples = converted.to_ndarray().reshape(-1, channels)  # interleaved
        if samples.size:
            yield samples


def _gather_mono(frames: Iterator[np.ndarray], size: int = _CHUNK_SAMPLES) -> Iterator[np.ndarray]:
    """Join small ``[T, C]`` frames into mono blocks of about ``size`` samples (one channel mean and
    one soxr call per block instead of per codec frame)."""
    parts: list[np.ndarray] = []
    count = 0

    def mono() -> np.ndarray:
        block = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]

    for frame in frames:
        if parts and frame.shape[1] != parts[0].shape[1]:  # the channel count changed mid-stream
            yield mono()
            parts, count = [], 0
        parts.append(frame)
        count += frame.shape[0]
        if count >= size:
            yield mono()
            parts, count = [], 0
    if parts:
        yield mono()


def _iter_soundfile_frames(
    path: str | os.PathLike, info: dict, max_seconds: float | None = None
) -> Iterator[np.ndarray] | None:
    """libsndfile's float32 ``[T, C]`` samples, exactly as ``soundfile.read(path, dtype="float32")``
    gives them; None when libsndfile cannot open the file (the caller falls back to PyAV).

    The file is read in one call: libsndfile's mp3 decoding depends on the read sizes (reads of
    65536 frames differ from one whole read by up to 0.03 on a real song), so only a whole read
    equals the published pipeline's. ``max_seconds`` is checked on the header before reading.
    """
    import soundfile

    _check_readable(path)
    try:
        handle = soundfile.SoundFile(os.fspath(path))
    except (RuntimeError, TypeError, ValueError) as exc:  # LibsndfileError is a RuntimeError
        log.debug("%s: libsndfile cannot read it (%s); decoding with PyAV", path, exc)
        return None
    info["rate"], info["channels"] = int(handle.samplerate), int(handle.channels)
    seconds = handle.frames / max(1, handle.samplerate)
    if max_seconds is not None and seconds > max_seconds * 1.5 + 1:  # mp3 frame counts are estimates
        handle.close()
        raise AudioContentError(f"longer than the {max_seconds:g} s limit ({seconds:.0f} s); not embedded")
    return _soundfile_blocks(handle)


def _soundfile_blocks(handle) -> Iterator[np.ndarray]:
    with handle:
        try:
            audio = handle.read(dtype="float32", always_2d=True)
        except RuntimeError as exc:
            raise AudioDecodeError(f"libsndfile could not decode the file ({_ffmpeg_reason(exc)})") from None
    if not audio.size:
        raise AudioDecodeError("no decodable audio in file")
    for start in range(0, audio.shape[0], _CHUNK_SAMPLES):
        yield audio[start : start + _CHUNK_SAMPLES]


def _iter_decoded(
    path: str | os.PathLike, info: dict, decoder: str, max_seconds: float | None = None
) -> Iterator[np.ndarray]:
    """Decoded ``[T, C]`` float32 blocks by the decoder policy; records the decoder in ``info``."""
    frames = _iter_soundfile_frames(path, info, max_seconds) if decoder == REFERENCE_DECODER else None
    info["decoder"] = "soundfile" if frames is not None else "pyav"
    return frames if frames is not None else _iter_frames(path, info)


class _SoxrStream:
    def __init__(self, rate: int, target: int):
        import soxr

        self.stream = soxr.ResampleStream(rate, target, 1, dtype="float32", quality=_RESAMPLE_QUALITY)

    def push(self, block: np.ndarray) -> np.ndarray:
        return self.stream.resample_chunk(block)

    def finish(self) -> np.ndarray:
        return self.stream.resample_chunk(np.zeros(0, np.float32), last=True)


def _resampler(name: str, rate: int, target: int):
    return sinc.SincResampler(rate, target) if name == REFERENCE_RESAMPLER else _SoxrStream(rate, target)


def _iter_resampled(
    path: str | os.PathLike,
    sample_rate: int,
    stats: dict,
    max_seconds: float | None = None,
    decoder: str = DECODER,
    resampler: str = RESAMPLER,
) -> Iterator[np.ndarray]:
    """Mono float32 blocks at ``sample_rate``, sanitised. Fills ``stats`` (rate, channels, input
    samples, the decoder that read the file)."""
    sanitise = _Sanitiser()
    stream = None
    stats["input_samples"] = 0
    for block in _gather_mono(_iter_decoded(path, stats, decoder, max_seconds)):
        block = sanitise(np.ascontiguousarray(block, dtype=np.float32))
        stats["input_samples"] += block.size
        if stream is None and stats["rate"] != sample_rate:
            stream = _resampler(resampler, stats["rate"], sample_rate)
        out = block if stream is None else stream.push(block)
        if out.size:
            yield out
        if max_seconds is not None and stats["input_samples"] > max_seconds * stats["rate"]:
            raise AudioContentError(f"longer than the {max_seconds:g} s limit (max_seconds); not embedded")
    if stream is not None:
        tail = stream.finish()
        if tail.size:
            yield tail
    sanitise.check()


def decode_mono(
    path: str | os.PathLike, sample_rate: int, decoder: str = DECODER, resampler: str = RESAMPLER
) -> tuple[np.ndarray, float]:
    """Decode a whole song to mono float32 at ``sample_rate``; returns (audio, duration in seconds)."""
    stats: dict = {}
    blocks = list(_iter_resampled(path, sample_rate, stats, decoder=decoder, resampler=resampler))
    audio = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    return audio, stats["input_samples"] / stats["rate"]


# ---------------------------------------------------------------------------------------------
# Segmenting
# ---------------------------------------------------------------------------------------------


class _Segmenter:
    """Cuts a stream of blocks into fixed-length segments, keeping only what overlaps ahead."""

    def __init__(self, config: SegmentConfig, sample_rate: int):
        self.sample_rate = sample_rate
        self.size = config.segment_samples(sample_rate)
        self.hop = config.hop_samples(sample_rate)
        self.pad_last = config.pad_last
        self.min_samples = max(1, int(round(config.min_seconds * sample_rate)))
        self.buffer = np.zeros(0, np.float32)
        self.start = 0  # song index of buffer[0]
        self.emitted = 0

    def push(self, block: np.ndarray) -> Iterator[Segment]:
        self.buffer = np.concatenate([self.buffer, block]) if self.buffer.size else block
        while self.buffer.size >= self.size:
            yield Segment(self.buffer[: self.size].copy(), self.size, self.start)
            self.emitted += 1
            self.buffer = self.buffer[self.hop :]
            self.start += self.hop

    def finish(self, total_samples: int) -> Iterator[Segment]:
        """The last, partial segment, if the song has audio the full segments did not cover."""
        covered = self.emitted and self.start - self.hop + self.size >= total_samples
        if total_samples < self.min_samples:
            raise AudioContentError(
                f"too short: {total_samples / self.sample_rate:.3g} s of audio "
                f"(minimum {self.min_samples / self.sample_rate:g} s)"
            )
        n = self.buffer.size
        short_tail = self.emitted and n < self.min_samples and not self.pad_last
        if covered or n == 0 or short_tail:
            return
        audio = np.zeros(self.size, np.float32)
        audio[:n] = self.buffer
        yield Segment(audio, self.size if self.pad_last else n, self.start)


class SegmentStream(Iterator[Segment]):
    """Iterator over a file's segments; after exhaustion ``duration_s``, ``source_rate`` and
    ``channels`` describe the decoded input."""

    def __init__(self, path: str | os.PathLike, sample_rate: int, config: SegmentConfig):
        self.path = path
        self.sample_rate = sample_rate
        self.config = config
        self.duration_s = 0.0
        self.source_rate = 0
        self.channels = 0
        self.decoder = ""  # "soundfile" or "pyav": what read this file
        self._iter = self._run()

    def __next__(self) -> Segment:
        return next(self._iter)

    def _run(self) -> Iterator[Segment]:
        stats: dict = {}
        if self.config.max_seconds is not None:
            self._check_container_duration()
        segmenter = _Segmenter(self.config, self.sample_rate)
        total = 0
        blocks = _iter_resampled(
            self.path,
            self.sample_rate,
            stats,
            self.config.max_seconds,
            decoder=self.config.decoder,
            resampler=self.config.resampler,
        )
        for block in blocks:
            total += block.size
            yield from segmenter.push(block)
        self.source_rate, self.channels = stats["rate"], stats["channels"]
        self.decoder = stats["decoder"]
        self.duration_s = stats["input_samples"] / stats["rate"]
        yield from segmenter.finish(total)

    def _check_container_duration(self) -> None:
        """Refuse a file whose header already says it is too long, before decoding any of it."""
        container = _open(self.path)
        try:
            duration = container.duration / 1_000_000 if container.duration else None
        finally:
            container.close()
        # Header durations of VBR files without an index are estimates: refuse early only when
        # the header says far too long; the decoded length is checked exactly while streaming.
        if duration is not None and duration > self.config.max_seconds * 1.5 + 1:
            raise AudioContentError(
                f"longer than the {self.config.max_seconds:g} s limit ({duration:.0f} s); not embedded"
            )


def iter_segments(path: str | os.PathLike, sample_rate: int, config: SegmentConfig) -> SegmentStream:
    """Stream a file's segments at ``sample_rate`` (bounded memory). Raises typed errors."""
    return SegmentStream(path, sample_rate, config)


def segment_array(audio: np.ndarray, sr: int, sample_rate: int, config: SegmentConfig) -> list[Segment]:
    """Segments of in-memory audio.

    ``audio`` is ``[T]`` mono, or two-dimensional with channels on the *shorter* axis
    (``[T, C]`` as soundfile returns it, or ``[C, T]`` as torchaudio does); channels are
    averaged. Integer arrays are scaled from their full range. It is resampled from ``sr``
    to ``sample_rate`` and sanitised exactly like decoded files.
    """
    import soxr

    x = _to_mono_float(np.asarray(audio))
    if sr <= 0:
        raise AudioContentError(f"invalid sample rate {sr}")
    sanitise = _Sanitiser()
    x = sanitise(x)
    sanitise.check()
    if config.max_seconds is not None and x.size / sr > config.max_seconds:
        raise AudioContentError(f"longer than the {config.max_seconds:g} s limit ({x.size / sr:.0f} s)")
    if x.size and sr != sample_rate and config.resampler == REFERENCE_RESAMPLER:
        x = sinc.sinc_resample(x, sr, sample_rate)
    elif x.size and sr != sample_rate:
        x = soxr.resample(x, sr, sample_rate, quality=_RESAMPLE_QUALITY).astype(np.float32, copy=False)
    segmenter = _Segmenter(config, sample_rate)
    segments = list(segmenter.push(x)) if x.size else []
    segments.extend(segmenter.finish(x.size))
    return segments


def _to_mono_float(audio: np.ndarray) -> np.ndarray:
    if audio.ndim not in (1, 2):
        raise AudioContentError(f"audio must be [T], [T, C] or [C, T]; got shape {audio.shape}")
    if np.issubdtype(audio.dtype, np.signedinteger):
        audio = audio.astype(np.float32) / float(-np.iinfo(audio.dtype).min)
    elif np.issubdtype(audio.dtype, np.unsignedinteger):
        half = (float(np.iinfo(audio.dtype).max) + 1) / 2
        audio = (audio.astype(np.float32) - half) / half
    elif not np.issubdtype(audio.dtype, np.floating):
        raise AudioContentError(f"unsupported audio dtype {audio.dtype}")
    if audio.ndim == 2:
        audio = audio.mean(axis=0 if audio.shape[0] <= audio.shape[1] else 1)
    return np.ascontiguousarray(audio, dtype=np.float32)

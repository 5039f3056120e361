"""``handcrafted``: a weight-free, fast descriptor encoder (the offline default).

Each segment (mono, 22 050 Hz) becomes one vector of interpretable audio descriptors
(``n_layers = 1``, ``dim = len(FEATURE_NAMES)``), computed over the segment's *valid* samples
only, so padding never enters a statistic. Everything is numpy/scipy: one STFT per segment
(Hann, ``n_fft`` 2048, hop 512 = 23 ms), from which every spectral, mel, chroma, rhythm and
structure feature is derived. About 1 000x real time on one core; finite on any input
(silence, ten samples, full-scale square waves): logs use floors, ratios use epsilons and a
last ``nan_to_num`` guards the rest.

Why 22 050 Hz: it keeps everything up to 11 kHz, where hiss, "air", cymbals, aliasing and
bit-crush artefacts live (16 kHz would cut at 8 kHz and hide most of them), at half the cost
of 44.1 kHz. Why no librosa: it pulls numba/llvmlite (a JIT compile on first use, a heavy
install) for a handful of formulas that are a few lines of numpy each; torchaudio would add
thread contention with the neural encoders for no gain on these small ops.

Feature groups (109 values; names as in ``FEATURE_NAMES``; dB are dBFS unless said otherwise)

| group             | n  | features                                         | listens for                 |
|-------------------|----|--------------------------------------------------|-----------------------------|
| loudness/dynamics | 9  | rms_db_{mean,std,p10,p50,p95}, dynamic_range_db, | level, compression,         |
|                   |    | rms_db, peak_db, crest_db                        | over-limiting               |
| clipping          | 3  | clip_fullscale, near_peak_ratio, peak_pileup     | hard clipping, limiting     |
| silence/dropouts  | 2  | silence_ratio, dropout_rate                      | gaps, dropouts              |
| zero crossings    | 2  | zcr_{mean,std}                                   | noisiness, percussiveness   |
| spectral shape    | 10 | {centroid,bandwidth,rolloff}_khz_{mean,std},     | brightness, muddiness,      |
|                   |    | flatness_{mean,std}, flux_{mean,std}             | noise, change               |
| spectral contrast | 7  | contrast_{0..6}                                  | tonal vs noisy per band     |
| band balance      | 6  | band_{sub,bass,lowmid,mid,highmid,high}_db       | muddy / dull / harsh EQ     |
| noise floor       | 3  | hf_floor_db, floor_flatness, hf_flatness         | hiss, noise, bit-crush      |
| MFCC              | 40 | mfcc_{0..19}_{mean,std}                          | timbre                      |
| chroma            | 12 | chroma_key_{0..11}                               | key-invariant pitch profile |
| tonality          | 5  | key_strength, mode_major, out_of_scale_ratio,    | off-key notes,              |
|                   |    | chroma_entropy, chroma_flux                      | harmonic clarity            |
| rhythm            | 6  | onset_strength_mean, onset_rate, tempo_bpm,      | groove, tempo,              |
|                   |    | tempo_strength, pulse_clarity, timing_jitter     | timing jitter               |
| structure         | 3  | repetition, self_similarity, novelty             | repeated hooks, monotony    |
| glitches          | 1  | click_rate                                       | clicks, digital glitches    |

Definitions:

- ``rms_db_*``: statistics of the 23 ms frame RMS; ``dynamic_range_db`` = p95 - p10;
  ``rms_db`` / ``peak_db``: whole-segment RMS and peak; ``crest_db`` = peak - RMS.
- ``clip_fullscale``: share of samples with abs >= 0.99; ``near_peak_ratio``: share within 5 %
  of the peak; ``peak_pileup``: log ratio of samples in the top 5 % of the amplitude range to
  those in the 80-95 % range (a clipped flat top survives resampling as such a pile-up).
- ``silence_ratio``: frames below -60 dBFS; ``dropout_rate``: per second, 23 ms blocks 25 dB below
  the median of their +-0.25 s neighbourhood.
- spectral shape over non-silent frames: centroid, bandwidth, 85 % rolloff (kHz), flatness
  (Wiener entropy, 0-1), flux (positive L2 flux of unit-norm magnitude spectra).
- ``contrast_i``: dB between the top and bottom 20 % of power bins in the bands
  0-200-400-800-1600-3200-6400-11025 Hz.
- ``band_*_db``: share of energy below 60, 60-250, 250-500, 500-2k, 2k-6k and above 6k Hz
  (a low-mid excess is the "muddy" mix).
- ``hf_floor_db``: 10th percentile of the >4 kHz frame energy minus the 90th percentile of
  full-band frame energy (hiss fills the quiet parts); ``floor_flatness``: flatness of the
  quietest 10 % of frames; ``hf_flatness``: flatness above 5.5 kHz (aliasing, bit-crush).
- MFCC: 64 HTK-mel bands (30 Hz-11 kHz), dB, DCT-II (ortho), coefficients 0-19.
- chroma: FFT bins in 250 Hz-5 kHz mapped to the nearest pitch class, energy weighted,
  rotated so the estimated tonic is bin 0 (key invariant).
- ``key_strength``: best Krumhansl-Kessler key correlation; ``mode_major``: best major minus
  best minor correlation; ``out_of_scale_ratio``: chroma energy outside the estimated key's
  scale; ``chroma_entropy``: bits per frame (mean); ``chroma_flux``: L1 change per frame.
- rhythm from the onset envelope (mean positive log-mel difference): ``onset_rate``
  (peaks/s), ``tempo_bpm`` (autocorrelation, 40-240 BPM, log-normal prior at 120 BPM),
  ``tempo_strength`` (normalised autocorrelation there), ``pulse_clarity`` (phase coherence
  of onsets on the beat grid, 0-1), ``timing_jitter`` (circular std of onset phases on the
  half-beat grid, in beats).
- structure from 0.5 s blocks of MFCC 1-12 + chroma (z-scored, cosine self-similarity):
  ``repetition`` (mean best match at lags >= 2 s), ``self_similarity`` (mean), ``novelty``
  (mean 1 - similarity of adjacent blocks).
- ``click_rate``: log1p of clicks per second (second-difference spikes > 8x the local RMS).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.fft

from apexmusic.encoders.base import EncoderBase
from apexmusic.errors import ConfigError

log = logging.getLogger(__name__)

SAMPLE_RATE = 22050
N_FFT = 2048
HOP = 512
N_MELS = 64
N_MFCC = 20
FEATURE_VERSION = 1
_EPS = 1e-10
_FPS = SAMPLE_RATE / HOP

_CONTRAST_EDGES = (0, 200, 400, 800, 1600, 3200, 6400, SAMPLE_RATE // 2 + 1)
_BAND_EDGES = {
    "sub": (0, 60),
    "bass": (60, 250),
    "lowmid": (250, 500),
    "mid": (500, 2000),
    "highmid": (2000, 6000),
    "high": (6000, SAMPLE_RATE),
}
# Krumhansl-Kessler key profiles (tonic first).
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
_MAJOR_SCALE = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], bool)
_MINOR_SCALE = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0], bool)


def _feature_names() -> list[str]:
    names = [f"rms_db_{s}" for s in ("mean", "std", "p10", "p50", "p95")]
    names += ["dynamic_range_db", "rms_db", "peak_db", "crest_db"]
    names += ["clip_fullscale", "near_peak_ratio", "peak_pileup", "silence_ratio", "dropout_rate"]
    names += ["zcr_mean", "zcr_std"]
    for f in ("centroid_khz", "bandwidth_khz", "rolloff_khz", "flatness", "flux"):
        names += [f"{f}_mean", f"{f}_std"]
    names += [f"contrast_{i}" for i in range(len(_CONTRAST_EDGES) - 1)]
    names += [f"band_{b}_db" for b in _BAND_EDGES]
    names += ["hf_floor_db", "floor_flatness", "hf_flatness"]
    names += [f"mfcc_{i}_{s}" for s in ("mean", "std") for i in range(N_MFCC)]
    names += [f"chroma_key_{i}" for i in range(12)]
    names += ["key_strength", "mode_major", "out_of_scale_ratio", "chroma_entropy", "chroma_flux"]
    names += [
        "onset_strength_mean",
        "onset_rate",
        "tempo_bpm",
        "tempo_strength",
        "pulse_clarity",
        "timing_jitter",
    ]
    names += ["repetition", "self_similarity", "novelty", "click_rate"]
    return names


FEATURE_NAMES: tuple[str, ...] = tuple(_feature_names())


def _mel_filterbank(n_mels: int = N_MELS, fmin: float = 30.0, fmax: float = SAMPLE_RATE / 2) -> np.ndarray:
    """Triangular HTK-mel filters, area-normalised, shape [n_mels, n_fft // 2 + 1]."""

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs - lower) / (centre - lower)
    down = (upper - freqs) / (upper - centre)
    fb = np.maximum(0.0, np.minimum(up, down))
    fb *= 2.0 / (upper - lower)
    return fb.astype(np.float32)


def _chroma_map() -> np.ndarray:
    """Assign FFT bins in 250 Hz-5 kHz to the nearest pitch class; shape [12, n_bins]."""
    freqs = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    use = (freqs >= 250) & (freqs <= 5000)
    pitch = np.zeros_like(freqs)
    pitch[use] = 12 * np.log2(freqs[use] / 440.0) + 9  # 0 = C
    pc = np.mod(np.round(pitch), 12).astype(int)
    out = np.zeros((12, freqs.size), np.float32)
    out[pc[use], np.nonzero(use)[0]] = 1.0
    return out


class HandcraftedEncoder(EncoderBase):
    """Interpretable descriptors per segment; see the module docstring for the feature table."""

    name = "handcrafted"
    sample_rate = SAMPLE_RATE
    n_layers = 1
    dim = len(FEATURE_NAMES)
    weights_id = "none"
    default_batch_size = 16
    # numpy on one core, no weights: the pipeline runs it inside each decoder process, so it
    # scales with --workers instead of queueing behind one main process.
    encode_in_decoder = True
    feature_names = FEATURE_NAMES

    def __init__(self) -> None:
        self._window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)
        self._freqs = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE).astype(np.float32)
        self._mel = _mel_filterbank()
        self._chroma = _chroma_map()
        self._keys = _key_templates()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "feature_version": FEATURE_VERSION,
            "sample_rate": SAMPLE_RATE,
            "n_fft": N_FFT,
            "hop": HOP,
            "n_mels": N_MELS,
            "n_mfcc": N_MFCC,
            "dim": self.dim,
        }

    def encode(self, segments: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        segments = np.asarray(segments, dtype=np.float32)
        out = np.zeros((segments.shape[0], 1, self.dim), np.float32)
        for i, (row, n) in enumerate(zip(segments, np.asarray(lengths), strict=True)):
            n = int(np.clip(n, 1, row.shape[0]))
            out[i, 0] = self.features(row[:n])
        return out

    def features(self, x: np.ndarray) -> np.ndarray:
        """The descriptor vector of one mono signal at 22 050 Hz."""
        with np.errstate(all="ignore"):
            return self._features(x)

    def _features(self, x: np.ndarray) -> np.ndarray:
        x = np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        if x.size < N_FFT:
            x = np.pad(x, (0, N_FFT - x.size))
        frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP]
        spectrum = scipy.fft.rfft(frames * self._window, axis=1)
        power = np.square(spectrum.real) + np.square(spectrum.imag)  # float32 [F, bins]
        del spectrum
        frame_rms_db = 10 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + _EPS)
        active = frame_rms_db > -60
        if active.sum() < 2:
            active = np.ones_like(active)
        feats: list[float] = []
        feats += _dynamics(x, frame_rms_db)
        feats += _clipping(x)
        feats += [float(np.mean(~(frame_rms_db > -60))), _dropout_rate(x)]
        feats += _zcr(frames)
        active_power = power[active] if not active.all() else power
        feats += _spectral_shape(active_power, self._freqs)
        feats += _contrast(active_power[::4], self._freqs)  # a time average: every 4th frame suffices
        feats += _band_balance(power, self._freqs)
        feats += _noise_floor(power, frame_rms_db, self._freqs)
        mel_db = 10 * np.log10(power @ self._mel.T + _EPS)  # [F, n_mels]
        mfcc = scipy.fft.dct(mel_db, type=2, norm="ortho", axis=1)[:, :N_MFCC]
        feats += list(mfcc[active].mean(axis=0)) + list(mfcc[active].std(axis=0))
        chroma = power @ self._chroma.T  # [F, 12]
        feats += _tonality(chroma[active], self._keys)
        onset_env = _onset_envelope(mel_db)
        feats += _rhythm(onset_env)
        feats += _structure(mfcc, chroma)
        feats += [_click_rate(x)]
        return np.nan_to_num(np.asarray(feats, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0).astype(
            np.float32
        )


# ---------------------------------------------------------------------------------------------
# Feature groups
# ---------------------------------------------------------------------------------------------


def _db(x: float | np.ndarray) -> np.ndarray:
    return np.maximum(10 * np.log10(np.asarray(x, dtype=np.float64) + _EPS), -100.0)


def _dynamics(x: np.ndarray, frame_rms_db: np.ndarray) -> list[float]:
    p10, p50, p95 = np.percentile(frame_rms_db, [10, 50, 95])
    rms_db = float(_db(np.mean(np.square(x, dtype=np.float64))))
    peak_db = float(_db(float(np.max(np.abs(x))) ** 2))
    return [
        float(frame_rms_db.mean()),
        float(frame_rms_db.std()),
        p10,
        p50,
        p95,
        p95 - p10,
        rms_db,
        peak_db,
        peak_db - rms_db,
    ]


def _clipping(x: np.ndarray) -> list[float]:
    a = np.abs(x)
    peak = float(a.max())
    if peak <= 1e-6:
        return [0.0, 0.0, 0.0]
    top = np.count_nonzero(a >= 0.95 * peak)
    shoulder = np.count_nonzero((a >= 0.80 * peak) & (a < 0.95 * peak))
    return [float(np.mean(a >= 0.99)), top / a.size, float(np.log((top + 1) / (shoulder + 1)))]


def _dropout_rate(x: np.ndarray) -> float:
    """Dropouts per second: 23 ms blocks 25 dB below the median of their +-0.25 s neighbourhood."""
    from scipy.ndimage import median_filter

    n = x.size // HOP
    if n < 5:
        return 0.0
    block_db = _db(np.mean(np.square(x[: n * HOP].reshape(n, HOP), dtype=np.float64), axis=1))
    context = median_filter(block_db, size=int(_FPS // 2) | 1, mode="nearest")
    drops = (block_db < context - 25) & (context > -50)
    return float(drops.sum() / (n / _FPS))


def _zcr(frames: np.ndarray) -> list[float]:
    signs = np.signbit(frames)
    rate = np.mean(signs[:, 1:] != signs[:, :-1], axis=1)
    return [float(rate.mean()), float(rate.std())]


def _spectral_shape(power: np.ndarray, freqs: np.ndarray) -> list[float]:
    total = power.sum(axis=1) + _EPS
    khz = freqs / 1000.0
    centroid = (power @ khz) / total
    bandwidth = np.sqrt(np.maximum((power @ khz**2) / total - centroid**2, 0.0))
    cumulative = np.cumsum(power, axis=1)
    rolloff = khz[np.minimum((cumulative < 0.85 * total[:, None]).sum(axis=1), khz.size - 1)]
    flatness = _flatness(power)
    mag = np.sqrt(power)
    mag /= np.linalg.norm(mag, axis=1, keepdims=True) + _EPS
    flux = (
        np.sqrt(np.sum(np.maximum(np.diff(mag, axis=0), 0.0) ** 2, axis=1)) if len(mag) > 1 else np.zeros(1)
    )
    out: list[float] = []
    for v in (centroid, bandwidth, rolloff, flatness, flux):
        out += [float(np.mean(v)), float(np.std(v))]
    return out


def _flatness(power: np.ndarray) -> np.ndarray:
    p = power + np.float32(_EPS)
    return np.exp(np.mean(np.log(p), axis=-1, dtype=np.float64)) / np.mean(p, axis=-1, dtype=np.float64)


def _contrast(power: np.ndarray, freqs: np.ndarray) -> list[float]:
    out = []
    for lo, hi in zip(_CONTRAST_EDGES[:-1], _CONTRAST_EDGES[1:], strict=True):
        band = power[:, (freqs >= lo) & (freqs < hi)]
        k = max(1, int(0.2 * band.shape[1]))
        part = np.partition(band, (k, band.shape[1] - k), axis=1)
        valley = part[:, :k].mean(axis=1)
        peak = part[:, -k:].mean(axis=1)
        out.append(float(np.mean(_db(peak) - _db(valley))))
    return out


def _band_balance(power: np.ndarray, freqs: np.ndarray) -> list[float]:
    spectrum = power.sum(axis=0, dtype=np.float64)
    total = spectrum.sum() + _EPS
    return [
        float(_db(spectrum[(freqs >= lo) & (freqs < hi)].sum() / total)) for lo, hi in _BAND_EDGES.values()
    ]


def _noise_floor(power: np.ndarray, frame_rms_db: np.ndarray, freqs: np.ndarray) -> list[float]:
    hf_db = _db(power[:, freqs >= 4000].sum(axis=1))
    full_db = _db(power.sum(axis=1))
    hf_floor = float(np.percentile(hf_db, 10) - np.percentile(full_db, 90))
    quiet = frame_rms_db <= np.percentile(frame_rms_db, 10)
    floor_flatness = float(np.mean(_flatness(power[quiet]))) if quiet.any() else 0.0
    hf_flatness = float(np.mean(_flatness(power[:, freqs >= 5500])))
    return [hf_floor, floor_flatness, hf_flatness]


def _key_templates() -> np.ndarray:
    """[24, 12] z-scored key profiles: 12 major keys then 12 minor keys (row k = tonic k)."""
    rows = [np.roll(p, k) for p in (_MAJOR, _MINOR) for k in range(12)]
    t = np.asarray(rows)
    return (t - t.mean(axis=1, keepdims=True)) / t.std(axis=1, keepdims=True)


def _tonality(chroma: np.ndarray, keys: np.ndarray) -> list[float]:
    profile = chroma.sum(axis=0, dtype=np.float64)
    if profile.sum() <= _EPS:
        return [0.0] * 12 + [0.0, 0.0, 0.0, 0.0, 0.0]
    profile /= profile.sum()
    z = (profile - profile.mean()) / (profile.std() + _EPS)
    corr = keys @ z / 12.0
    best = int(np.argmax(corr))
    tonic, minor = best % 12, best >= 12
    rotated = np.roll(profile, -tonic)
    scale = _MINOR_SCALE if minor else _MAJOR_SCALE
    per_frame = chroma / (chroma.sum(axis=1, keepdims=True) + _EPS)
    entropy = -np.sum(per_frame * np.log2(per_frame + _EPS), axis=1)
    flux = np.abs(np.diff(per_frame, axis=0)).sum(axis=1) if len(per_frame) > 1 else np.zeros(1)
    return list(rotated) + [
        float(corr[best]),
        float(corr[:12].max() - corr[12:].max()),
        float(rotated[~scale].sum()),
        float(entropy.mean()),
        float(flux.mean()),
    ]


def _onset_envelope(mel_db: np.ndarray) -> np.ndarray:
    if len(mel_db) < 2:
        return np.zeros(1)
    return np.maximum(np.diff(np.maximum(mel_db, mel_db.max() - 80), axis=0), 0.0).mean(axis=1)


def _rhythm(env: np.ndarray) -> list[float]:
    seconds = max(env.size / _FPS, 1e-3)
    strength = float(env.mean())
    peaks = _onset_peaks(env)
    onset_rate = peaks.size / seconds
    tempo, tempo_strength = _tempo(env)
    pulse_clarity = timing_jitter = 0.0
    if tempo > 0 and peaks.size >= 4:
        period = 60.0 / tempo * _FPS
        weights = env[np.round(peaks).astype(int)]
        pulse_clarity = _phase_coherence(peaks / period, weights)
        half = _phase_coherence(peaks / (period / 2), weights)
        timing_jitter = float(np.sqrt(-2 * np.log(max(half, 1e-6))) / (2 * np.pi) / 2)
    return [strength, onset_rate, tempo, tempo_strength, pulse_clarity, timing_jitter]


def _onset_peaks(env: np.ndarray) -> np.ndarray:
    """Local maxima above mean + 0.5 std, at least 50 ms apart, refined to sub-frame times."""
    if env.size < 3 or env.std() <= _EPS:
        return np.zeros(0)
    from scipy.signal import find_peaks

    idx, _ = find_peaks(env, height=env.mean() + 0.5 * env.std(), distance=max(1, int(0.05 * _FPS)))
    idx = idx[(idx > 0) & (idx < env.size - 1)]
    a, b, c = env[idx - 1], env[idx], env[idx + 1]
    denom = a - 2 * b + c
    shift = np.where(np.abs(denom) > _EPS, 0.5 * (a - c) / np.where(denom == 0, 1, denom), 0.0)
    return idx + np.clip(shift, -0.5, 0.5)


def _tempo(env: np.ndarray) -> tuple[float, float]:
    """Tempo from the onset envelope's autocorrelation weighted by a log-normal prior at 120 BPM."""
    # Smoothing widens the one-frame onset peaks so tempi whose period is not a whole number
    # of frames still correlate at their own lag rather than at twice it.
    e = np.convolve(env - env.mean(), np.hanning(5)[1:-1] / 2.0, mode="same")
    min_lag, max_lag = int(60 / 240 * _FPS), int(np.ceil(60 / 40 * _FPS))
    if e.size < 2 * min_lag or np.dot(e, e) <= _EPS:
        return 0.0, 0.0
    n = int(2 ** np.ceil(np.log2(2 * e.size)))
    ac = scipy.fft.irfft(np.abs(scipy.fft.rfft(e, n)) ** 2, n)[: e.size]
    ac = ac / (ac[0] + _EPS)
    lags = np.arange(min_lag, min(max_lag, e.size - 2) + 1)
    if lags.size < 3:
        return 0.0, 0.0
    bpm = 60 * _FPS / lags
    prior = np.exp(-0.5 * (np.log2(bpm / 120.0) / 1.0) ** 2)
    score = np.maximum(ac[lags], 0) * prior
    i = int(np.argmax(score))
    lag = float(lags[i])
    if 0 < i < lags.size - 1:
        a, b, c = ac[lags[i] - 1], ac[lags[i]], ac[lags[i] + 1]
        denom = a - 2 * b + c
        if abs(denom) > _EPS:
            lag += float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))
    return float(60 * _FPS / lag), float(ac[lags[i]])


def _phase_coherence(cycles: np.ndarray, weights: np.ndarray) -> float:
    w = weights / (weights.sum() + _EPS)
    return float(np.abs(np.sum(w * np.exp(2j * np.pi * cycles))))


def _structure(mfcc: np.ndarray, chroma: np.ndarray) -> list[float]:
    """Self-similarity of 0.5 s blocks (MFCC 1-12 and chroma, z-scored per dimension)."""
    block = max(1, int(round(0.5 * _FPS)))
    n_blocks = len(mfcc) // block
    if n_blocks < 3:
        return [0.0, 0.0, 0.0]
    chroma_n = chroma / (chroma.sum(axis=1, keepdims=True) + _EPS)
    feats = np.concatenate([mfcc[:, 1:13], chroma_n], axis=1)[: n_blocks * block]
    blocks = feats.reshape(n_blocks, block, -1).mean(axis=1)
    blocks = (blocks - blocks.mean(axis=0)) / (blocks.std(axis=0) + 1e-6)
    blocks /= np.linalg.norm(blocks, axis=1, keepdims=True) + _EPS
    sim = blocks @ blocks.T
    novelty = float(np.mean(1 - np.diag(sim, 1)))
    off = ~np.eye(n_blocks, dtype=bool)
    min_lag = 4  # 2 s
    far = np.abs(np.subtract.outer(np.arange(n_blocks), np.arange(n_blocks))) >= min_lag
    repetition = float(np.mean(np.max(np.where(far, sim, -1.0), axis=1))) if n_blocks > min_lag else 0.0
    return [repetition, float(sim[off].mean()), novelty]


def _click_rate(x: np.ndarray) -> float:
    """Clicks per second: second-difference spikes far above their local (256-sample) RMS."""
    if x.size < 1024:
        return 0.0
    dd = np.abs(x[2:] - 2 * x[1:-1] + x[:-2]).astype(np.float32)
    block = 256
    n = dd.size // block
    local = np.sqrt(np.mean(np.square(dd[: n * block].reshape(n, block)), axis=1))
    floor = max(float(np.median(local)), 1e-5)
    context = np.maximum(np.repeat(local, block), floor)
    clicks = dd[: n * block] > 8 * context
    # count separate events, not samples
    events = np.count_nonzero(clicks[1:] & ~clicks[:-1]) + int(clicks[0])
    return float(np.log1p(events / (x.size / SAMPLE_RATE)))


def load(
    weights: str | None = None, device: str = "auto", precision: str = "auto", **opts: Any
) -> HandcraftedEncoder:
    """Registry factory. Takes no weights; runs on CPU whatever ``device`` and ``precision`` say."""
    if weights not in (None, "", "none"):
        raise ConfigError(f"the handcrafted encoder takes no weights (got {weights!r})")
    compat = opts.pop("compat", None)
    if compat not in (None, ""):
        raise ConfigError(f"--compat {compat} needs a MERT encoder, not handcrafted")
    if opts:
        raise ConfigError(f"unknown handcrafted encoder options: {sorted(opts)}")
    if device not in ("auto", "cpu"):
        log.info("handcrafted encoder runs on the CPU (asked for %s)", device)
    return HandcraftedEncoder()

"""musicnn's log-mel front end (librosa's STFT and Slaney mel filterbank, in torch) and its 3 s windows."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from apexmusic.encoders.musicnn.config import HOP, N_FFT, N_MELS, SAMPLE_RATE, WINDOW_FRAMES


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's auditory-toolbox mel scale (librosa's default, ``htk=False``)."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(
        hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, hz / f_sp
    )


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """``[n_mels, 1 + n_fft // 2]`` triangular filters, Slaney area normalisation, 0 Hz to Nyquist.

    Same construction as ``librosa.filters.mel`` with its defaults (computed in float64, stored
    as float32).
    """
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    mel_points = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0), n_mels + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]
    return weights.astype(np.float32)


class LogMel(nn.Module):
    """Batched ``log10(10000·mel + 1)`` spectrogram, float32, ``[B, samples] -> [B, frames, 96]``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)
        self.register_buffer("filters", torch.from_numpy(mel_filterbank()), persistent=False)

    @torch.autocast("cpu", enabled=False)
    @torch.autocast("cuda", enabled=False)
    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            audio.float(),
            n_fft=N_FFT,
            hop_length=HOP,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # [B, 257, frames]
        mel = torch.matmul(self.filters, power)  # [B, 96, frames]
        return torch.log10(10000.0 * mel + 1.0).transpose(1, 2)


def n_frames(n_samples: int) -> int:
    """Frames a centred STFT gives for ``n_samples`` (librosa's count)."""
    return 1 + n_samples // HOP


def golden_window_starts(total_frames: int) -> list[int]:
    """The original extractor's windows: non-overlapping 187 frames, the incomplete tail dropped."""
    return list(range(0, max(total_frames - WINDOW_FRAMES + 1, 0), WINDOW_FRAMES))


def segment_window_starts(valid_frames: int) -> list[int]:
    """Windows that cover a segment's valid frames.

    Non-overlapping windows from the start; a remainder of at least half a window gets one more
    window aligned to the last valid frame, so the end of a song is not ignored. Segments shorter
    than one window get none (they run as one shorter window instead).
    """
    starts = golden_window_starts(valid_frames)
    if starts and valid_frames - (starts[-1] + WINDOW_FRAMES) >= WINDOW_FRAMES // 2:
        starts.append(valid_frames - WINDOW_FRAMES)
    return starts

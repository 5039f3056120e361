"""Band-limited resampling with a Hann-windowed sinc kernel: the published pipeline's resampler.

The published APEX pipeline resamples with ``torchaudio.functional.resample(w, sr, 24000)`` at
its defaults (``lowpass_filter_width=6``, ``rolloff=0.99``, ``sinc_interp_hann``). torchaudio's
wheels pin one torch build each, so this module computes the same filter itself:

- both rates are divided by their gcd, giving ``orig`` input and ``new`` output samples per
  period; the cutoff is ``rolloff * min(orig, new)`` (in those reduced units);
- output phase ``p`` (of ``new``) is the dot product of a window of ``2 * width + orig`` input
  samples with the kernel ``sinc(pi * cutoff * t) * cos(pi * t * cutoff / (2 * zeros))**2 *
  cutoff / orig`` evaluated at ``t = i / orig - p / new``, clamped to ``|t * cutoff| <= zeros``;
- the input is zero-padded by ``width`` samples in front and ``width + orig`` behind, the
  windows advance by ``orig`` samples, and the output is cut to ``ceil(n * new / orig)``.

The kernel is evaluated in float32 like torchaudio's for float32 input, so the two agree to
float32 rounding (the tests compare against torchaudio's own source). :class:`SincResampler`
streams: fed block by block it yields what one call on the whole signal yields.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

ZERO_CROSSINGS = 6  # torchaudio's lowpass_filter_width default
ROLLOFF = 0.99
NAME = f"sinc-hann-w{ZERO_CROSSINGS}-r{ROLLOFF:g}"  # the resampler identity an EmbeddingSpec records


@lru_cache(maxsize=8)
def _kernel(orig: int, new: int) -> tuple[object, int]:
    """``(kernel [new, 1, 2 * width + orig] float32 tensor, width)`` for gcd-reduced rates."""
    import torch

    cutoff = min(orig, new) * ROLLOFF
    width = math.ceil(ZERO_CROSSINGS * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=torch.float32) / orig
    phases = torch.arange(0, -new, -1, dtype=torch.float32)[:, None] / new
    t = ((phases + taps[None, :]) * cutoff).clamp(-ZERO_CROSSINGS, ZERO_CROSSINGS)
    window = torch.cos(t * (math.pi / ZERO_CROSSINGS / 2)) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    kernel = sinc * (window * (cutoff / orig))
    return kernel[:, None, :].contiguous(), width


def reduced_rates(orig_rate: int, new_rate: int) -> tuple[int, int]:
    if orig_rate <= 0 or new_rate <= 0 or int(orig_rate) != orig_rate or int(new_rate) != new_rate:
        raise ValueError(f"sample rates must be positive integers, got {orig_rate} and {new_rate}")
    g = math.gcd(int(orig_rate), int(new_rate))
    return int(orig_rate) // g, int(new_rate) // g


def output_length(n_samples: int, orig_rate: int, new_rate: int) -> int:
    """Samples out for ``n_samples`` in: ``ceil(n * new / orig)``."""
    orig, new = reduced_rates(orig_rate, new_rate)
    return -(-int(n_samples) * new // orig)


class SincResampler:
    """Streaming resampler of mono float32 audio: ``push`` blocks, then ``finish`` once."""

    def __init__(self, orig_rate: int, new_rate: int):
        self.orig, self.new = reduced_rates(orig_rate, new_rate)
        self.identity = self.orig == self.new
        self.n_in = 0
        self.n_out = 0
        if not self.identity:
            self.kernel, self.width = _kernel(self.orig, self.new)
            self.window = 2 * self.width + self.orig
            # The padded input from the start of the next window on (width zeros lead the song).
            self.buffer = np.zeros(self.width, np.float32)

    def push(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        self.n_in += block.size
        if self.identity:
            self.n_out += block.size
            return block
        self.buffer = np.concatenate([self.buffer, block])
        return self._drain()

    def finish(self) -> np.ndarray:
        """The last samples: the trailing ``width + orig`` zeros, cut to ``ceil(n * new / orig)``."""
        if self.identity:
            return np.zeros(0, np.float32)
        self.buffer = np.concatenate([self.buffer, np.zeros(self.width + self.orig, np.float32)])
        out = self._drain()
        total = -(-self.n_in * self.new // self.orig)
        keep = max(0, total - (self.n_out - out.size))
        self.n_out = total
        return out[:keep]

    def _drain(self) -> np.ndarray:
        import torch

        if self.buffer.size < self.window:
            return np.zeros(0, np.float32)
        n_windows = (self.buffer.size - self.window) // self.orig + 1
        used = (n_windows - 1) * self.orig + self.window
        x = torch.from_numpy(self.buffer[:used])[None, None]
        out = torch.nn.functional.conv1d(x, self.kernel, stride=self.orig)  # [1, new, n_windows]
        self.buffer = self.buffer[n_windows * self.orig :].copy()
        result = out[0].T.reshape(-1).numpy()
        self.n_out += result.size
        return result


def sinc_resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample a whole mono signal (``[T]``) from ``orig_rate`` to ``new_rate``."""
    resampler = SincResampler(orig_rate, new_rate)
    head = resampler.push(audio)
    tail = resampler.finish()
    return np.concatenate([head, tail]) if tail.size else head


__all__ = ["NAME", "SincResampler", "output_length", "sinc_resample"]

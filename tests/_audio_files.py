"""Write small audio files in every format the tests need, with PyAV (no external tools)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

# extension -> (container format, codec, sample format)
_FORMATS = {
    ".wav": ("wav", "pcm_s16le", "s16"),
    ".flac": ("flac", "flac", "s16"),
    ".mp3": ("mp3", "libmp3lame", "fltp"),
    ".ogg": ("ogg", "vorbis", "fltp"),
    ".opus": ("ogg", "libopus", "flt"),
    ".m4a": ("ipod", "aac", "fltp"),
}
_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}


def write_audio(path: str | Path, audio: np.ndarray, sr: int, float_wav: bool = False) -> Path:
    """Encode ``audio`` ([T] mono or [T, C]) at ``sr`` into ``path``; the extension picks the codec.

    ``float_wav`` writes 32-bit float PCM (the only common format that can hold NaN / Inf).
    """
    import av

    path = Path(path)
    x = np.asarray(audio, dtype=np.float32)
    x = x[:, None] if x.ndim == 1 else x
    channels = x.shape[1]
    fmt, codec, sample_fmt = _FORMATS[path.suffix.lower()]
    if float_wav:
        codec, sample_fmt = "pcm_f32le", "flt"
    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=sr)
        stream.layout = _LAYOUTS[channels]
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}
        frame_size = stream.codec_context.frame_size or 1024
        pts = 0
        for start in range(0, x.shape[0], frame_size):
            chunk = x[start : start + frame_size]
            if sample_fmt == "s16":
                data = (np.clip(chunk, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
            elif sample_fmt == "flt":
                data = np.ascontiguousarray(chunk).reshape(1, -1)
            else:
                data = np.ascontiguousarray(chunk.T)
            frame = av.AudioFrame.from_ndarray(data, format=sample_fmt, layout=_LAYOUTS[channels])
            frame.sample_rate = sr
            frame.pts = pts
            frame.time_base = Fraction(1, sr)
            pts += chunk.shape[0]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def tone(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.repeat(x[:, None], channels, axis=1)


def music_like(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """A chord with a 120 BPM click and a little noise: enough texture for every descriptor."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    x = sum(0.15 * np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0))
    beat = (t % 0.5) < 0.02
    x = x + 0.3 * beat * rng.standard_normal(t.size) + 0.01 * rng.standard_normal(t.size)
    return x.astype(np.float32)

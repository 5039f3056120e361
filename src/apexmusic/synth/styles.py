"""Generator styles: the simulated stand-ins for Suno, Udio and the systems of a music arena.

A style fixes what a real generator fixes: instrument timbres, tempo range, scale habits, mix
(brightness, compression, stereo), output codec and sample rate, and how good its songs tend
to be (``quality`` shifts every hidden factor; ``dim_bias`` shifts single dimensions). The
``platform`` is where its songs are published; ``heldout`` styles never appear in training and
their songs meet in the simulated arena.
"""

from __future__ import annotations

from dataclasses import dataclass

# Harmonic amplitudes of the wavetable instruments (index 0 = fundamental).
TIMBRES: dict[str, tuple[float, ...]] = {
    "sine": (1.0, 0.0, 0.08),
    "epiano": (1.0, 0.45, 0.2, 0.12, 0.05, 0.03),
    "saw": tuple(1.0 / k for k in range(1, 11)),
    "square": tuple((1.0 / k if k % 2 else 0.0) for k in range(1, 11)),
    "triangle": tuple(((1.0 / k**2) if k % 2 else 0.0) for k in range(1, 10)),
    "organ": (1.0, 0.7, 0.0, 0.5, 0.0, 0.3, 0.0, 0.2),
    "pulse": (1.0, 0.8, 0.55, 0.3, 0.2, 0.12, 0.08, 0.05),
}


@dataclass(frozen=True)
class Style:
    name: str
    platform: str
    heldout: bool
    tempo: tuple[float, float]  # bpm range
    lead: str  # melody timbre
    pad: str  # chord timbre
    bass: str
    minor_prob: float  # chance of a minor key
    notes_per_beat: int  # melody grid
    swing: float  # 0 = straight eighths
    brightness_hz: float  # mix low-pass corner
    compression: float  # tanh drive of the master bus (1 = none)
    stereo: bool
    codec: str  # wav | flac | mp3 | opus
    sample_rate: int
    hat_level: float
    quality: float  # mean shift of the latent quality (in sd units)
    dim_bias: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)


# A table reads better one style per two lines than one field per line.
# name, platform, heldout, tempo, lead, pad, bass, minor_prob, notes_per_beat, swing, brightness_hz,
# compression, stereo, codec, sample_rate, hat_level, quality, dim_bias
# fmt: off
STYLES: tuple[Style, ...] = (
    Style("suno-pop", "suno", False, (100, 128), "saw", "epiano", "triangle", 0.3, 2, 0.0, 9000,
          1.6, False, "mp3", 22050, 0.5, 0.35),
    Style("suno-ballad", "suno", False, (66, 84), "epiano", "organ", "sine", 0.5, 1, 0.0, 6000,
          1.2, False, "mp3", 22050, 0.25, 0.15, (0.1, 0.2, 0.0, 0.1, 0.1)),
    Style("suno-edm", "suno", False, (124, 140), "square", "saw", "saw", 0.6, 2, 0.0, 10000,
          2.6, False, "mp3", 22050, 0.8, 0.0, (0.0, -0.1, 0.3, -0.2, -0.1)),
    Style("udio-rock", "udio", False, (110, 150), "saw", "organ", "saw", 0.4, 2, 0.0, 7500,
          2.2, False, "wav", 22050, 0.6, 0.1, (0.0, 0.0, 0.0, -0.2, 0.1)),
    Style("udio-lofi", "udio", False, (70, 90), "triangle", "epiano", "sine", 0.5, 2, 0.33, 4000,
          1.3, False, "flac", 22050, 0.35, -0.25, (0.0, 0.1, -0.1, -0.3, 0.0)),
    Style("arena-jazz", "arena", True, (90, 120), "organ", "epiano", "sine", 0.4, 2, 0.4, 7000,
          1.1, False, "opus", 24000, 0.4, 0.2, (0.1, 0.2, -0.1, 0.0, 0.1)),
    Style("arena-synthwave", "arena", True, (95, 115), "pulse", "saw", "square", 0.7, 2, 0.0, 8000,
          1.8, True, "flac", 22050, 0.5, -0.1),
    Style("arena-chip", "arena", True, (140, 170), "square", "square", "triangle", 0.3, 4, 0.0,
          11000, 1.4, False, "wav", 22050, 0.6, -0.3, (0.0, 0.0, 0.2, 0.0, -0.3)),
)
# fmt: on

STYLE_BY_NAME: dict[str, Style] = {s.name: s for s in STYLES}
TRAIN_STYLES: tuple[str, ...] = tuple(s.name for s in STYLES if not s.heldout)
HELDOUT_STYLES: tuple[str, ...] = tuple(s.name for s in STYLES if s.heldout)
CODEC_EXTENSIONS = {"wav": ".wav", "flac": ".flac", "mp3": ".mp3", "opus": ".ogg"}

"""Compose and render one simulated song with numpy: sections, chords, melody, bass, drums.

The five hidden factors are *severities* in [0, 1] (0 = flawless, 1 = worst) and each one is
audible through its own mechanisms:

- coherence: sections are either repeats of a few shared materials (A B A B C B) or, with
  probability rising with severity, fresh unrelated material in a jumped key;
- musicality: off-key melody and bass notes and timing jitter of every onset;
- memorability: a one-bar hook repeated through the chorus and a louder lead, versus a
  wandering, quieter melody;
- clarity: broadband noise, a muddy low-pass with boomy lows, and hard clipping;
- naturalness: glitches (drop-outs, stutters, clicks) and bit-crushing (coarse quantisation
  with sample-and-hold).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.signal import butter, sosfilt

from apexmusic.synth.styles import STYLE_BY_NAME, TIMBRES, Style

DIMENSIONS = ("coherence", "musicality", "memorability", "clarity", "naturalness")
TABLE_SIZE = 2048
BEATS_PER_BAR = 4
BARS_PER_SECTION = 4
MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
MINOR = np.array([0, 2, 3, 5, 7, 8, 10])
PROGRESSIONS = ((0, 4, 5, 3), (5, 3, 0, 4), (0, 3, 4, 3), (1, 4, 0, 5), (0, 5, 3, 4))


@dataclass(frozen=True)
class SongSpec:
    """Everything needed to render one song; the audio is a pure function of it."""

    index: int
    style: str
    duration_s: float
    severity: dict[str, float]  # per dimension, 0 = flawless
    clarity_mix: tuple[float, float, float] = (1.0, 1.0, 1.0)  # noise, mud, clip shares
    naturalness_mix: tuple[float, float] = (1.0, 1.0)  # glitch, crush shares
    seed: int = 0
    key_root: int | None = None  # midi pitch class; None = drawn from the seed
    extra: dict = field(default_factory=dict)


@dataclass
class _Material:
    """One section's musical content: a chord progression and a melody on a grid."""

    key: int
    scale: np.ndarray
    chords: list[int]  # scale degrees of the bar roots
    melody: list[list[int]]  # per bar, scale-degree offsets (None-free)
    fresh: bool = False


def render_song(
    spec: SongSpec, with_stems: bool = False
) -> tuple[np.ndarray, int] | tuple[np.ndarray, int, dict[str, np.ndarray]]:
    """Render ``spec`` to float32 audio: ``[T]`` mono or ``[T, 2]`` stereo, peak ≤ 1.

    Returns ``(audio, sample_rate)``, or ``(audio, sample_rate, stems)`` with the clean lead,
    pad, bass and drum stems before mixing when ``with_stems`` is set (used by tests).
    """
    style = STYLE_BY_NAME[spec.style]
    rng = np.random.default_rng([spec.seed, spec.index, 7])
    sr = style.sample_rate
    sev = {d: float(np.clip(spec.severity.get(d, 0.0), 0.0, 1.0)) for d in DIMENSIONS}
    tempo = rng.uniform(*style.tempo)
    beat = 60.0 / tempo
    bar = beat * BEATS_PER_BAR
    n_sections = max(2, int(round(spec.duration_s / (bar * BARS_PER_SECTION))))
    total = int(round(spec.duration_s * sr))

    sections = _plan_sections(n_sections, style, sev, rng, spec.key_root)
    stems = _render_stems(sections, style, sev, rng, sr, beat, total)
    mix = _mix(stems, style, sr)
    mix = _apply_clarity(mix, sev["clarity"], spec.clarity_mix, rng, sr)
    mix = _apply_naturalness(mix, sev["naturalness"], spec.naturalness_mix, rng, sr)
    audio = _finalise(mix, style, rng)
    return (audio, sr, stems) if with_stems else (audio, sr)


# --- composition ---------------------------------------------------------------------------


def _plan_sections(n: int, style: Style, sev: dict, rng: np.random.Generator, key_root) -> list:
    key = int(rng.integers(0, 12)) if key_root is None else int(key_root)
    scale = MINOR if rng.random() < style.minor_prob else MAJOR
    steps = BEATS_PER_BAR * style.notes_per_beat
    memo = sev["memorability"]
    shared = {
        "A": _new_material(key, scale, rng, steps, hook=False, memo_sev=memo),
        "B": _new_material(key, scale, rng, steps, hook=True, memo_sev=memo),
        "C": _new_material((key + 5) % 12, scale, rng, steps, hook=False, memo_sev=memo),
    }
    form = "ABABCBAB"
    p_fresh = 0.85 * sev["coherence"]
    plan = []
    for i in range(n):
        label = form[i % len(form)]
        if i > 0 and rng.random() < p_fresh:
            jumped = int(rng.integers(0, 12))
            fresh = _new_material(
                jumped,
                MAJOR if rng.random() < 0.5 else MINOR,
                rng,
                steps,
                hook=False,
                memo_sev=1.0,
                chromatic=True,
            )
            plan.append((label, fresh))
        elif i > 0 and rng.random() < memo:  # same chords, but the tune is not the one heard before
            again = shared[label]
            melody = [_random_melody_bar(rng, steps, memo, root) for root in again.chords]
            plan.append((label, _Material(again.key, again.scale, again.chords, melody)))
        else:
            plan.append((label, shared[label]))
    return plan


def _new_material(
    key: int,
    scale: np.ndarray,
    rng: np.random.Generator,
    steps: int,
    hook: bool,
    memo_sev: float,
    chromatic: bool = False,
) -> _Material:
    if chromatic:  # unrelated roots, not from one key: what an incoherent section sounds like
        chords = [int(c) for c in rng.integers(0, 7, BARS_PER_SECTION)]
    else:
        chords = list(PROGRESSIONS[int(rng.integers(0, len(PROGRESSIONS)))])
    motif = _random_melody_bar(rng, steps, 0.0, 2)
    melody = []
    for b in range(BARS_PER_SECTION):
        # A chorus hook: the same notes bar after bar, unless memorability is poor.
        if hook and rng.random() > memo_sev:
            melody.append(list(motif))
        else:
            melody.append(_random_melody_bar(rng, steps, memo_sev, chords[b]))
    return _Material(key, scale, chords, melody, fresh=chromatic)


def _random_melody_bar(rng: np.random.Generator, steps: int, wide: float, root: int) -> list[int]:
    """Scale degrees (absolute within the key) of a random-walk melody over a chord root."""
    walk = np.cumsum(rng.integers(-2, 3, steps) * (1 + (rng.random(steps) < wide * 0.5)))
    return [int(v) + root for v in np.clip(walk + int(rng.integers(0, 5)), -3, 11)]


# --- rendering ----------------------------------------------------------------------------


def _render_stems(sections, style, sev, rng, sr, beat, total) -> dict[str, np.ndarray]:
    lead = np.zeros(total, np.float32)
    pad = np.zeros(total, np.float32)
    bass = np.zeros(total, np.float32)
    drums = np.zeros(total, np.float32)
    p_off = 0.35 * sev["musicality"]
    jitter = 0.05 * sev["musicality"] * beat / 0.5  # seconds, scaled with the beat
    bar = beat * BEATS_PER_BAR
    kit = _drum_kit(rng, sr)
    lead_gain = 1.0 - 0.3 * sev["memorability"]
    lead_timbre, pad_timbre = style.lead, style.pad
    for s, (_label, mat) in enumerate(sections):
        t0 = s * BARS_PER_SECTION * bar
        if mat.fresh and rng.random() < 0.6:  # incoherent sections also swap instruments
            names = list(TIMBRES)
            lead_timbre = names[int(rng.integers(0, len(names)))]
        for b in range(BARS_PER_SECTION):
            tb = t0 + b * bar
            if tb >= total / sr:
                break
            root_deg = mat.chords[b]
            root = mat.key + int(mat.scale[root_deg % 7]) + 12 * (root_deg // 7)
            triad = [_degree_pitch(mat, root_deg + k) for k in (0, 2, 4)]
            for p in triad:
                _add_note(pad, sr, tb, bar * 0.98, 48 + p, 0.22, pad_timbre, attack=0.05, decay=1.5)
            for beat_i in range(BEATS_PER_BAR):
                pitch = 36 + root % 12
                if rng.random() < p_off * 0.5:
                    pitch += int(rng.choice([-1, 1]))
                on = tb + beat_i * beat + rng.normal(0, jitter)
                _add_note(bass, sr, on, beat * 0.9, pitch, 0.5, style.bass, attack=0.01, decay=0.4)
            step = bar / len(mat.melody[b])
            for k, deg in enumerate(mat.melody[b]):
                pitch = 60 + _degree_pitch(mat, deg)
                if rng.random() < p_off:
                    pitch += int(rng.choice([-1, 1]))  # a semitone off the scale
                swing = style.swing * step * 0.5 if k % 2 else 0.0
                on = tb + k * step + swing + rng.normal(0, jitter)
                _add_note(lead, sr, on, step * 0.9, pitch, 0.32, lead_timbre, attack=0.01, decay=0.35)
            _add_drums(drums, kit, sr, tb, beat, style, rng, jitter)
    return {"lead": lead * lead_gain, "pad": pad, "bass": bass, "drums": drums}


def _degree_pitch(mat: _Material, degree: int) -> int:
    octave, idx = divmod(int(degree), 7)
    return mat.key + int(mat.scale[idx]) + 12 * octave


_TABLES: dict[str, np.ndarray] = {}


def _wavetable(timbre: str) -> np.ndarray:
    if timbre not in _TABLES:
        phase = np.arange(TABLE_SIZE) * 2 * np.pi / TABLE_SIZE
        amps = TIMBRES[timbre]
        wave = sum(a * np.sin((k + 1) * phase) for k, a in enumerate(amps) if a)
        _TABLES[timbre] = (wave / np.max(np.abs(wave))).astype(np.float32)
    return _TABLES[timbre]


def _add_note(buf, sr, onset, dur, midi, vel, timbre, attack, decay) -> None:
    start = int(round(max(onset, 0.0) * sr))
    n = min(int(dur * sr), len(buf) - start)
    if n <= 8:
        return
    freq = 440.0 * 2 ** ((midi - 69) / 12)
    idx = (np.arange(n) * (freq * TABLE_SIZE / sr)).astype(np.int64) % TABLE_SIZE
    t = np.arange(n, dtype=np.float32) / sr
    env = np.minimum(t / attack, 1.0) * np.exp(-t / decay)
    release = min(n, int(0.02 * sr))
    env[-release:] *= np.linspace(1.0, 0.0, release, dtype=np.float32)
    buf[start : start + n] += vel * env * _wavetable(timbre)[idx]


def _drum_kit(rng: np.random.Generator, sr: int) -> dict[str, np.ndarray]:
    t = np.arange(int(0.35 * sr)) / sr
    f0 = rng.uniform(45, 65)
    kick = np.sin(2 * np.pi * (f0 * t + 60 * (1 - np.exp(-t * 30)) / 30)) * np.exp(-t * 9)
    ts = t[: int(0.2 * sr)]
    snare = (rng.standard_normal(len(ts)) * 0.6 + np.sin(2 * np.pi * 190 * ts)) * np.exp(-ts * 22)
    th = t[: int(0.06 * sr)]
    hat = np.diff(rng.standard_normal(len(th) + 1)) * np.exp(-th * 70) * 0.5
    return {k: v.astype(np.float32) for k, v in {"kick": kick, "snare": snare, "hat": hat}.items()}


def _add_drums(buf, kit, sr, tb, beat, style, rng, jitter) -> None:
    hits = [("kick", 0.0, 0.9), ("snare", 1.0, 0.6), ("kick", 2.0, 0.9), ("snare", 3.0, 0.6)]
    hits += [("hat", h * 0.5, style.hat_level) for h in range(8)]
    for name, pos, vel in hits:
        start = int(round(max(tb + pos * beat + rng.normal(0, jitter), 0.0) * sr))
        sample = kit[name]
        n = min(len(sample), len(buf) - start)
        if n > 0:
            buf[start : start + n] += vel * sample[:n]


# --- mixing and the audible defects ------------------------------------------------------


def _mix(stems, style, sr) -> np.ndarray:
    mix = stems["lead"] + stems["pad"] + 0.9 * stems["bass"] + 0.7 * stems["drums"]
    corner = min(style.brightness_hz, 0.45 * sr)
    mix = sosfilt(butter(1, corner, "low", fs=sr, output="sos"), mix).astype(np.float32)
    mix /= np.max(np.abs(mix)) + 1e-9
    return np.tanh(style.compression * mix) / np.tanh(style.compression)


def _apply_clarity(x, severity, shares, rng, sr) -> np.ndarray:
    noise_amt, mud_amt, clip_amt = (severity * s for s in shares)
    corner = min(float(np.exp(np.log(9000) + (np.log(450) - np.log(9000)) * mud_amt)), 0.45 * sr)
    if mud_amt > 0.02:
        x = sosfilt(butter(2, corner, "low", fs=sr, output="sos"), x).astype(np.float32)
        lows = sosfilt(butter(2, 180, "low", fs=sr, output="sos"), x).astype(np.float32)
        x = x + 1.5 * mud_amt * lows  # boomy low end
    x = x / (np.max(np.abs(x)) + 1e-9) * 0.9
    rms = float(np.sqrt(np.mean(x**2))) + 1e-9
    snr_db = 50.0 - 48.0 * noise_amt
    x = x + rng.standard_normal(len(x)).astype(np.float32) * rms * 10 ** (-snr_db / 20)
    x = x / (np.max(np.abs(x)) + 1e-9) * 0.9
    drive = 1.0 + 6.0 * clip_amt**2  # the master is driven into a hard clip
    return np.clip(x * drive, -0.9, 0.9).astype(np.float32)


def _apply_naturalness(x, severity, shares, rng, sr) -> np.ndarray:
    glitch_amt, crush_amt = (severity * s for s in shares)
    x = x.copy()
    for _ in range(int(rng.poisson(14 * glitch_amt**1.3))):
        kind = rng.integers(0, 3)
        pos = int(rng.integers(0, len(x) - sr // 4))
        n = int(rng.uniform(0.02, 0.09) * sr)
        if kind == 0:  # drop-out
            x[pos : pos + n] = 0.0
        elif kind == 1:  # stutter: one buffer repeated
            chunk = x[pos : pos + n].copy()
            reps = min(3, (len(x) - pos) // n)
            x[pos : pos + reps * n] = np.tile(chunk, reps)
        else:  # click
            x[pos : pos + 3] = rng.choice([-0.9, 0.9])
    if crush_amt > 0.25:
        bits = 12.0 - 9.0 * (crush_amt - 0.25) / 0.75
        levels = 2.0 ** (bits - 1)
        x = np.round(x * levels) / levels
        hold = 1 + int(round(5 * crush_amt))
        if hold > 1:
            x = np.repeat(x[::hold], hold)[: len(x)]
    return x.astype(np.float32)


def _finalise(x, style, rng) -> np.ndarray:
    x = x / (np.max(np.abs(x)) + 1e-9) * 0.95
    if not style.stereo:
        return x.astype(np.float32)
    delay = int(rng.integers(5, 40))
    right = np.concatenate([np.zeros(delay, np.float32), x[:-delay]])
    return np.stack([x, 0.85 * x + 0.15 * right], axis=1).astype(np.float32)

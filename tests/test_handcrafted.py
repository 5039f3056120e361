"""The handcrafted descriptors respond to the audible factors they are meant to capture."""

from __future__ import annotations

import numpy as np
import pytest

from apexmusic.encoders import load_encoder
from apexmusic.encoders.handcrafted import FEATURE_NAMES, SAMPLE_RATE
from apexmusic.errors import ConfigError

SR = SAMPLE_RATE
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def enc():
    return load_encoder("handcrafted")


def feats(enc, x: np.ndarray) -> dict[str, float]:
    x = np.asarray(x, np.float32)
    out = enc.encode(x[None], np.array([x.size]))
    assert out.shape == (1, 1, len(FEATURE_NAMES)) and np.isfinite(out).all()
    return dict(zip(FEATURE_NAMES, out[0, 0].tolist(), strict=True))


def notes(pitches_hz, note_s=0.25, amp=0.3) -> np.ndarray:
    """A melody of decaying harmonic tones."""
    n = int(note_s * SR)
    t = np.arange(n) / SR
    env = np.exp(-t * 6)
    parts = [sum(amp / k * np.sin(2 * np.pi * k * f * t) for k in (1, 2, 3)) * env for f in pitches_hz]
    return np.concatenate(parts).astype(np.float32)


def music(seconds=8.0, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c_major = 261.63 * 2 ** (np.array([0, 2, 4, 5, 7, 9, 11, 12]) / 12)
    return notes(rng.choice(c_major, int(seconds / 0.25)))


def click_track(bpm: float, seconds: float = 20.0, jitter_s: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * SR), np.float32)
    click = (np.sin(2 * np.pi * 1500 * np.arange(400) / SR) * np.exp(-np.arange(400) / 80)).astype(np.float32)
    for beat in np.arange(0.1, seconds - 0.1, 60.0 / bpm):
        start = int((beat + rng.uniform(-jitter_s, jitter_s)) * SR)
        x[start : start + 400] += click
    return x


def test_names_dim_and_protocol(enc):
    assert enc.dim == len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) and enc.n_layers == 1
    assert enc.sample_rate == 22050 and enc.weights_id == "none"
    assert enc.describe()["feature_version"] >= 1
    with pytest.raises(ConfigError):
        load_encoder("handcrafted", weights="some/folder")
    with pytest.raises(ConfigError):
        load_encoder("handcrafted", compat="reference")


@pytest.mark.parametrize(
    "signal",
    [
        np.zeros(SR * 30),
        np.zeros(10),
        np.ones(3000),
        np.sign(np.sin(np.arange(SR * 5) / 7.0)),
        RNG.standard_normal(SR * 3) * 100,
        np.full(SR, 1e-30),
    ],
    ids=["silence-30s", "ten-samples", "dc", "full-scale-square", "loud-noise", "denormal"],
)
def test_finite_on_degenerate_input(enc, signal):
    feats(enc, signal)


def test_only_valid_samples_count_and_batching_changes_nothing(enc):
    a, b = music(6.0, 1), music(4.0, 2)
    batch = np.zeros((2, 8 * SR), np.float32)
    batch[0, : a.size], batch[1, : b.size] = a, b
    together = enc.encode(batch, np.array([a.size, b.size]))
    np.testing.assert_allclose(together[0], enc.encode(a[None], np.array([a.size]))[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(together[1], enc.encode(b[None], np.array([b.size]))[0], rtol=1e-5, atol=1e-5)


def test_clipping_features_rise_with_clipping(enc):
    x = music(8.0)
    x = x / np.abs(x).max() * 0.9
    levels = [feats(enc, np.clip(x * gain, -1, 1)) for gain in (1.0, 2.0, 6.0)]
    for name in ("clip_fullscale", "near_peak_ratio", "peak_pileup"):
        values = [f[name] for f in levels]
        assert values[0] < values[1] < values[2], (name, values)
    assert levels[0]["clip_fullscale"] == 0.0 and levels[2]["clip_fullscale"] > 0.2


def test_silence_ratio_rises_with_silence(enc):
    x = music(10.0)
    ratios = []
    for share in (0.0, 0.3, 0.6):
        y = x.copy()
        y[: int(share * y.size)] = 0
        ratios.append(feats(enc, y)["silence_ratio"])
    assert ratios[0] < 0.05 and abs(ratios[1] - 0.3) < 0.05 and abs(ratios[2] - 0.6) < 0.05


def test_centroid_and_rolloff_rise_with_brightness(enc):
    dull = feats(enc, notes([220.0] * 16))
    bright = feats(enc, notes([1760.0] * 16))
    assert bright["centroid_khz_mean"] > 3 * dull["centroid_khz_mean"]
    assert bright["rolloff_khz_mean"] > dull["rolloff_khz_mean"]


@pytest.mark.parametrize("bpm", [90.0, 120.0, 140.0])
def test_tempo_estimate_matches_a_click_track(enc, bpm):
    f = feats(enc, click_track(bpm))
    assert abs(f["tempo_bpm"] - bpm) / bpm < 0.03, f["tempo_bpm"]
    assert abs(f["onset_rate"] - bpm / 60) < 0.3
    assert f["pulse_clarity"] > 0.8


def test_timing_jitter_rises_with_jitter(enc):
    steady = feats(enc, click_track(120.0))
    sloppy = feats(enc, click_track(120.0, jitter_s=0.04))
    assert sloppy["timing_jitter"] > steady["timing_jitter"] + 0.03
    assert sloppy["pulse_clarity"] < steady["pulse_clarity"]


def test_noise_raises_the_noise_floor_and_flatness(enc):
    clean = music(8.0)
    noisy = clean + 0.02 * np.random.default_rng(3).standard_normal(clean.size).astype(np.float32)
    a, b = feats(enc, clean), feats(enc, noisy)
    assert b["hf_floor_db"] > a["hf_floor_db"] + 10
    assert b["flatness_mean"] > a["flatness_mean"]
    assert b["floor_flatness"] > a["floor_flatness"]


def test_bit_crush_shows_in_the_high_band(enc):
    x = music(8.0)
    x = x / np.abs(x).max() * 0.8
    crushed = np.repeat(np.round(x[::4] * 8) / 8, 4)[: x.size]  # 4-bit, quarter sample rate, held
    a, b = feats(enc, x), feats(enc, crushed)
    assert b["band_high_db"] > a["band_high_db"] + 20
    assert b["hf_floor_db"] > a["hf_floor_db"] + 10


def test_muddy_eq_raises_low_mid_share(enc):
    from scipy.signal import butter, sosfilt

    x = music(8.0)
    x = x + 0.05 * np.random.default_rng(4).standard_normal(x.size).astype(np.float32)
    mud = sosfilt(butter(2, [250, 500], btype="band", fs=SR, output="sos"), x).astype(np.float32)
    a, b = feats(enc, x), feats(enc, x + 3 * mud)
    assert b["band_lowmid_db"] > a["band_lowmid_db"] + 1.5
    assert b["band_high_db"] < a["band_high_db"]


def test_off_key_notes_raise_out_of_scale_ratio(enc):
    rng = np.random.default_rng(5)
    scale = 261.63 * 2 ** (np.array([0, 2, 4, 5, 7, 9, 11]) / 12)
    off = 261.63 * 2 ** (np.array([1, 3, 6, 8, 10]) / 12)
    in_key = rng.choice(scale, 48)
    wrong = in_key.copy()
    wrong[::3] = rng.choice(off, 16)
    a, b = feats(enc, notes(in_key)), feats(enc, notes(wrong))
    assert b["out_of_scale_ratio"] > a["out_of_scale_ratio"] + 0.05
    assert a["key_strength"] > b["key_strength"]


def test_repeated_hook_raises_repetition(enc):
    rng = np.random.default_rng(6)
    pitches = 220 * 2 ** (np.arange(24) / 12)
    hook = rng.choice(pitches, 8)
    repeated = notes(np.tile(hook, 6))
    random = notes(rng.choice(pitches, 48))
    assert feats(enc, repeated)["repetition"] > feats(enc, random)["repetition"] + 0.1


def test_clicks_and_dropouts_are_counted(enc):
    x = music(8.0)
    glitchy = x.copy()
    glitchy[np.arange(1, 40) * (x.size // 40)] += 0.9
    assert feats(enc, glitchy)["click_rate"] > feats(enc, x)["click_rate"] + 0.5
    gappy = x.copy()
    for start in np.arange(1, 8) * SR:
        gappy[start : start + 2000] = 0
    assert feats(enc, gappy)["dropout_rate"] > feats(enc, x)["dropout_rate"] + 0.5


def test_dynamics_follow_gain_and_compression(enc):
    x = music(8.0)
    loud, quiet = feats(enc, x), feats(enc, x * 0.1)
    assert abs((loud["rms_db"] - quiet["rms_db"]) - 20) < 0.5
    assert abs(loud["crest_db"] - quiet["crest_db"]) < 0.5
    squashed = feats(enc, np.tanh(5 * x))
    assert squashed["crest_db"] < loud["crest_db"] - 3

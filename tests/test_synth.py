"""The simulated corpus: determinism, audible hidden factors, labels calibrated to real data."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest

from apexmusic.synth import DIMENSIONS, HELDOUT_STYLES, SongSpec, generate_corpus, labels, render_song
from apexmusic.synth.corpus import plan_corpus

# --- simple numpy measurements of the audio -----------------------------------------------


def _mono(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=1) if x.ndim == 2 else x


def _chroma(x: np.ndarray, sr: int, win: int = 2048, hop: int = 1024) -> np.ndarray:
    x = _mono(x)
    n = (len(x) - win) // hop
    frames = np.stack([x[i * hop : i * hop + win] * np.hanning(win) for i in range(n)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(win, 1 / sr)
    band = (freqs > 80) & (freqs < 2100)
    pitch_class = np.round(12 * np.log2(freqs[band] / 440) + 69).astype(int) % 12
    return np.stack([power[:, band][:, pitch_class == k].sum(axis=1) for k in range(12)], axis=1)


def pitch_class_entropy(x, sr) -> float:
    """Spread of the song's pitch-class histogram: off-key notes and key jumps raise it."""
    hist = _chroma(x, sr).sum(axis=0)
    hist /= hist.sum()
    return float(-(hist * np.log(hist + 1e-12)).sum())


def repetition(x, sr) -> float:
    """Best mean chroma similarity along one diagonal of the self-similarity matrix (lag ≥ 1.5 s):
    high when a stretch of music comes back later."""
    c = _chroma(x, sr)
    c = c / (np.linalg.norm(c, axis=1, keepdims=True) + 1e-9)
    sim = c @ c.T
    min_lag = int(1.5 * sr / 1024)
    return max(float(np.mean(np.diagonal(sim, lag))) for lag in range(min_lag, len(c) // 2))


def clipped_share(x) -> float:
    x = _mono(x) if x.ndim == 1 else x[:, 0]
    return float(np.mean(np.abs(x) >= 0.999 * np.abs(x).max()))


def high_band_share(x, sr) -> float:
    power = np.abs(np.fft.rfft(_mono(x))) ** 2
    freqs = np.fft.rfftfreq(len(_mono(x)), 1 / sr)
    return float(power[freqs > 6000].sum() / power.sum())


def spectral_centroid(x, sr) -> float:
    power = np.abs(np.fft.rfft(_mono(x))) ** 2
    return float((power * np.fft.rfftfreq(len(_mono(x)), 1 / sr)).sum() / power.sum())


def distinct_levels(x) -> int:
    return len(np.unique(np.round(_mono(x) * 32768)))


def silent_share(x) -> float:
    return float(np.mean(_mono(x) == 0.0))


def _render(dim: str, severity: float, seed: int, base: float = 0.1, **kw):
    sev = {d: base for d in DIMENSIONS}
    sev[dim] = severity
    return render_song(
        SongSpec(seed, kw.pop("style", "suno-pop"), 16.0, sev, seed=seed, **kw), with_stems=True
    )


def _trend(dim: str, measure, levels=(0.0, 0.5, 1.0), seeds=(0, 1, 2), **kw) -> list[float]:
    out = []
    for s in levels:
        values = []
        for seed in seeds:
            audio, sr, stems = _render(dim, s, seed, **kw)
            values.append(measure(audio, sr, stems))
        out.append(float(np.mean(values)))
    return out


def _increasing(values: list[float]) -> bool:
    return all(b > a for a, b in zip(values, values[1:], strict=False))


# --- audio --------------------------------------------------------------------------------


def test_render_is_a_pure_function_of_the_spec():
    spec = SongSpec(3, "arena-jazz", 15.0, {d: 0.4 for d in DIMENSIONS}, seed=5)
    a, sr = render_song(spec)
    b, _ = render_song(spec)
    c, _ = render_song(SongSpec(3, "arena-jazz", 15.0, {d: 0.4 for d in DIMENSIONS}, seed=6))
    assert sr == 24000 and a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a).max() <= 1.0 and np.isfinite(a).all()


def test_clarity_clipping_rises_as_clarity_falls():
    clip = _trend("clarity", lambda a, sr, st: clipped_share(a), clarity_mix=(0.0, 0.0, 1.0))
    assert _increasing(clip) and clip[-1] > 10 * max(clip[0], 1e-4)
    default_mix = _trend("clarity", lambda a, sr, st: clipped_share(a))
    assert _increasing(default_mix)


def test_clarity_noise_and_muddy_eq():
    hiss = _trend("clarity", lambda a, sr, st: high_band_share(a, sr), clarity_mix=(1.0, 0.0, 0.0))
    assert _increasing(hiss)
    centroid = _trend("clarity", lambda a, sr, st: spectral_centroid(a, sr), clarity_mix=(0.0, 1.0, 0.0))
    assert centroid[0] > centroid[1] > centroid[2]


def test_naturalness_bitcrush_and_glitches():
    levels = _trend("naturalness", lambda a, sr, st: distinct_levels(a), naturalness_mix=(0.0, 1.0))
    assert levels[0] > 10 * levels[2]
    assert levels[0] > levels[1] > levels[2]
    dropouts = _trend("naturalness", lambda a, sr, st: silent_share(a), naturalness_mix=(1.0, 0.0))
    assert dropouts[0] == 0.0 and _increasing(dropouts)


def test_coherence_fresh_unrelated_sections_reduce_repetition():
    rep = _trend("coherence", lambda a, sr, st: repetition(a, sr), seeds=(0, 1, 2, 3))
    assert rep[0] > rep[2] + 0.03
    entropy = _trend("coherence", lambda a, sr, st: pitch_class_entropy(a, sr), seeds=(0, 1, 2, 3))
    assert entropy[2] > entropy[0]


def test_musicality_off_key_notes_spread_the_pitch_classes():
    entropy = _trend("musicality", lambda a, sr, st: pitch_class_entropy(a, sr), seeds=(0, 1, 2, 3))
    assert _increasing(entropy)


def test_musicality_timing_jitter_blurs_the_drum_grid():
    def onset_spread(audio, sr, stems):
        # Drum energy folded onto one eighth-note-independent grid: jitter smears its peaks.
        env = np.abs(stems["drums"])
        frame = int(0.005 * sr)
        env = env[: len(env) // frame * frame].reshape(-1, frame).max(axis=1)
        spectrum = np.abs(np.fft.rfft(env - env.mean()))
        return float(spectrum.max() / spectrum.sum())

    peakiness = _trend("musicality", onset_spread, seeds=(0, 1, 2))
    assert peakiness[0] > peakiness[2]


def test_memorability_hook_repeats_in_the_melody():
    rep = _trend("memorability", lambda a, sr, st: repetition(st["lead"], sr), seeds=(0, 1, 2, 3))
    assert rep[0] > rep[2] + 0.05

    def lead_ratio(audio, sr, st):
        return float(np.sqrt(np.mean(st["lead"] ** 2) / np.mean((st["pad"] + st["bass"]) ** 2)))

    assert _increasing(_trend("memorability", lead_ratio)[::-1])


# --- labels against the real data ---------------------------------------------------------

RATING_TOLERANCE = {
    "mean": 0.15,
    "sd_song_mean": 0.12,
    "sd_rating": 0.12,
    "sd_within_song": 0.1,
    "corr_song_mean": 0.03,
    "corr_rating": 0.03,
    "half_step_share": 0.02,
}


@pytest.fixture(scope="module")
def big_plan():
    return plan_corpus(3000, seed=11)


def test_ratings_match_real_songeval_statistics(shared_data, big_plan):
    real = labels.rating_stats(labels.read_songeval(shared_data / "songeval" / "ratings.jsonl"))
    sim = labels.rating_stats(big_plan["ratings"])
    for key, tol in RATING_TOLERANCE.items():
        diff = np.abs(np.atleast_1d(sim[key]) - np.atleast_1d(real[key]))
        assert diff.max() <= tol, (key, sim[key], real[key])
    values = np.unique(big_plan["ratings"])
    assert set(values) <= set(np.arange(1.0, 5.01, 0.5))


def test_ratings_follow_the_audible_factor(big_plan):
    means = big_plan["ratings"].mean(axis=1)
    for d in range(len(DIMENSIONS)):
        r = np.corrcoef(means[:, d], big_plan["severity"][:, d])[0, 1]
        assert r < -0.7


def test_popularity_matches_real_suno_quantiles(shared_data, big_plan):
    real = labels.popularity_stats(*labels.read_suno_counts(shared_data / "suno" / "songs.json"))
    sim = labels.popularity_stats(big_plan["plays"], big_plan["likes"])
    for key in ("log10_plays_quantiles", "log10_likes_quantiles"):
        diff = np.abs(np.array(sim[key]) - np.array(real[key]))
        assert diff[1:4].max() <= 0.3, (key, sim[key], real[key])  # quartiles within 2x
        assert diff.max() <= 0.65, (key, sim[key], real[key])  # 10 % / 90 % within 4.5x
    assert abs(sim["corr_log_plays_likes"] - real["corr_log_plays_likes"]) <= 0.03
    assert (big_plan["likes"] <= big_plan["plays"]).all()


def test_popularity_is_partly_driven_by_quality_and_partly_by_luck(big_plan):
    quality = -big_plan["severity"].mean(axis=1)
    r = np.corrcoef(quality, np.log(big_plan["plays"]))[0, 1]
    assert 0.25 < r < 0.8


def test_battles_follow_listener_preference_not_just_popularity(big_plan):
    pref, pop = big_plan["preference"], big_plan["pop_latent"]
    decided = [(a, b, o) for a, b, o in big_plan["battles"] if o in ("A", "B")]
    assert len(decided) > 0.8 * len(big_plan["battles"])
    winner_pref = np.mean([(pref[a] > pref[b]) == (o == "A") for a, b, o in decided])
    winner_pop = np.mean([(pop[a] > pop[b]) == (o == "A") for a, b, o in decided])
    assert winner_pref > 0.7
    assert 0.5 < winner_pop < winner_pref
    assert 0.3 < np.corrcoef(pref, pop)[0, 1] < 0.8


# --- the corpus on disk -------------------------------------------------------------------


def _digest(root) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "corpus.json"
    }


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    return generate_corpus(tmp_path_factory.mktemp("corpus") / "c", n_songs=16, seed=3, workers=1)


@pytest.mark.slow  # renders four small corpora (~27 s on 2 busy cores)
def test_corpus_is_deterministic_and_cached(tmp_path, tiny_corpus):
    again = generate_corpus(tmp_path / "again", n_songs=16, seed=3, workers=2)
    assert _digest(tiny_corpus.root) == _digest(again.root)
    assert {p.rsplit(".", 1)[-1] for p in _digest(again.root) if p.startswith("audio/")} == {
        "wav",
        "flac",
        "mp3",
        "ogg",
    }
    cached = generate_corpus(tmp_path / "again", n_songs=16, seed=3)
    assert cached.cached and not again.cached
    other = generate_corpus(tmp_path / "other", n_songs=16, seed=4, workers=1)
    assert other.metadata() != again.metadata()
    (again.root / again.metadata()[0]["path"]).unlink()  # a missing file invalidates the cache
    assert not generate_corpus(tmp_path / "again", n_songs=16, seed=3, workers=1).cached


@pytest.mark.slow  # shares the rendered corpus above
def test_corpus_tables_use_the_real_data_formats(tiny_corpus):
    from apexmusic.audio import decode_mono

    rows = tiny_corpus.metadata()
    assert len(rows) == 16 and len({r["id"] for r in rows}) == 16
    with tiny_corpus.ratings_path.open() as f:
        ratings = {json.loads(line)["id"]: json.loads(line) for line in f}
    for row in rows:
        per_rater = ratings[row["id"]]["annotation"]
        assert len(per_rater) == 4
        for d, key in zip(DIMENSIONS, labels.SONGEVAL_KEYS, strict=True):
            assert float(row[d]) == pytest.approx(np.mean([a[key] for a in per_rater]), abs=1e-4)
        audio, duration = decode_mono(tiny_corpus.root / row["path"], 16000)
        assert 14.9 <= duration <= 30.1 and float(row["duration_s"]) == pytest.approx(duration, abs=0.1)
        assert int(row["likes"]) <= int(row["plays"])
    battles = tiny_corpus.battles()
    assert battles
    for b in battles:
        assert b["system_a"] != b["system_b"] and {b["system_a"], b["system_b"]} <= set(HELDOUT_STYLES)
        assert b["preference"] in {"A", "B", "TIE", "BOTH_BAD"}
        assert (tiny_corpus.root / b["audio_a"]).is_file() and (tiny_corpus.root / b["audio_b"]).is_file()
    with tiny_corpus.truth_path.open() as f:
        assert len(list(csv.DictReader(f))) == 16


def test_corpus_rejects_too_few_songs(tmp_path):
    from apexmusic.errors import ConfigError

    with pytest.raises(ConfigError):
        generate_corpus(tmp_path, n_songs=3)


# Each factor as the offline encoder sees it: (feature, +1 if it rises with severity).
ENCODER_VIEW = {
    "coherence": [("repetition", -1), ("out_of_scale_ratio", +1)],
    "musicality": [("timing_jitter", +1), ("out_of_scale_ratio", +1)],
    "memorability": [("repetition", -1), ("chroma_entropy", +1)],
    "clarity": [("near_peak_ratio", +1), ("hf_floor_db", +1)],
    "naturalness": [("dropout_rate", +1), ("silence_ratio", +1)],
}


@pytest.mark.parametrize("dim", DIMENSIONS)
def test_hidden_factors_move_the_handcrafted_encoder_features(dim):
    from apexmusic.encoders import load_encoder
    from apexmusic.encoders.handcrafted import FEATURE_NAMES

    encoder = load_encoder("handcrafted")
    means = []
    for severity in (0.0, 1.0):
        vectors = []
        for seed in (0, 1, 2):
            audio, sr, _ = _render(dim, severity, seed)
            assert sr == encoder.sample_rate
            out = encoder.encode(_mono(audio)[None].astype(np.float32), np.array([len(audio)]))
            vectors.append(np.asarray(out)[0, 0])
        means.append(np.mean(vectors, axis=0))
    for feature, sign in ENCODER_VIEW[dim]:
        k = FEATURE_NAMES.index(feature)
        assert sign * (means[1][k] - means[0][k]) > 0, (dim, feature, means[0][k], means[1][k])


def test_rating_calibration_recovers_real_moments_from_a_bad_start(shared_data):
    from dataclasses import replace

    real = labels.rating_stats(labels.read_songeval(shared_data / "songeval" / "ratings.jsonl"))
    shipped = labels.RatingModel()
    bad = replace(shipped, centre=(3.0,) * 5, spread=0.9, mood_sd=0.5, noise_sd=0.6)
    fitted = labels.fit_rating_model(real, start=bad, max_iter=150)
    assert labels.rating_fit_loss(fitted, real) < 0.25 * labels.rating_fit_loss(bad, real)
    # the shipped constants are (close to) an optimum of the same loss
    assert labels.rating_fit_loss(shipped, real) <= labels.rating_fit_loss(fitted, real) + 0.01

"""Hidden song quality, simulated human ratings, popularity counts and arena battles.

Each song has a latent quality ``z`` per aesthetic dimension (standard-normal scale, strongly
correlated across dimensions as in SongEval, shifted by the song's style). The audio is
rendered from ``severity = Φ(-z)``, so what the raters hear and what they rate share one cause.

The constants below were calibrated against the real data in ``../shared/data`` (SongEval
ratings, the Suno popularity sample); ``rating_stats`` / ``popularity_stats`` compute the same
statistics for real and simulated labels and the tests hold them within stated tolerances.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import ndtr

from apexmusic.synth.music import DIMENSIONS

SONGEVAL_KEYS = ("Coherence", "Musicality", "Memorability", "Clarity", "Naturalness")


@dataclass(frozen=True)
class RatingModel:
    """rating = centre_d + spread·z_d + rater bias + rater-song mood + noise, then rounded
    to the 1-5 scale (mostly whole points, occasionally a half point, as SongEval raters do)."""

    # ``fit_rating_model(rating_stats(read_songeval(...)))`` on the real SongEval file (2,399
    # songs): Nelder-Mead on the moments, simulating 4,000 songs with the style mix of ``STYLES``.
    centre: tuple[float, float, float, float, float] = (3.372, 2.985, 3.112, 3.133, 3.039)
    spread: float = 1.325
    rho: float = 0.993  # correlation of the latent quality across dimensions
    rater_bias_sd: float = 0.219
    mood_sd: float = 0.956  # one rater's impression of one song, shared across dimensions
    noise_sd: float = 0.348  # per rating
    half_step_prob: float = 0.07
    n_raters: int = 4
    n_panels: int = 4  # SongEval: 16 annotators in panels of 4


@dataclass(frozen=True)
class PopularityModel:
    """log plays: a two-piece normal around the real median; log likes: regression on log plays.

    The latent driving plays is part audible quality, part style, part creator reach and part
    exposure luck (weights squared sum to one).
    """

    log_plays_median: float = 6.52  # real Suno median 679 plays
    log_plays_sd_low: float = 2.3
    log_plays_sd_high: float = 3.6
    likes_intercept: float = 4.97  # real median likes 144 at the median plays
    likes_slope: float = 0.604
    likes_noise_sd: float = 0.36
    w_quality: float = 0.55
    w_style: float = 0.25
    w_creator: float = 0.45
    w_luck: float = 0.655


def draw_latents(style_shift: np.ndarray, rng: np.random.Generator, rho: float) -> np.ndarray:
    """Latent quality [N, 5]: a general factor plus per-dimension parts, shifted per style.

    ``style_shift`` is [N, 5] (the style's overall quality plus its per-dimension bias).
    """
    n = len(style_shift)
    general = rng.standard_normal((n, 1))
    specific = rng.standard_normal((n, len(DIMENSIONS)))
    return np.sqrt(rho) * general + np.sqrt(1 - rho) * specific + style_shift


def severity_of(z: np.ndarray) -> np.ndarray:
    """Audible defect severity in [0, 1] of a latent quality (0 = flawless)."""
    return ndtr(-np.asarray(z, dtype=float))


def simulate_ratings(
    z: np.ndarray, rng: np.random.Generator, model: RatingModel = RatingModel()
) -> tuple[np.ndarray, np.ndarray]:
    """Per-rater ratings [N, n_raters, 5] on the half-step 1-5 scale and rater ids [N, n_raters]."""
    n = len(z)
    n_total_raters = model.n_raters * model.n_panels
    bias = rng.normal(0.0, model.rater_bias_sd, n_total_raters)
    panel = rng.integers(0, model.n_panels, n)
    raters = panel[:, None] * model.n_raters + np.arange(model.n_raters)[None, :]
    true = np.asarray(model.centre)[None, None, :] + model.spread * z[:, None, :]
    mood = rng.normal(0.0, model.mood_sd, (n, model.n_raters, 1))
    noise = rng.normal(0.0, model.noise_sd, (n, model.n_raters, len(DIMENSIONS)))
    raw = true + bias[raters][:, :, None] + mood + noise
    half = rng.random(raw.shape) < model.half_step_prob
    rounded = np.where(half, np.round(raw * 2) / 2, np.round(raw))
    return np.clip(rounded, 1.0, 5.0), raters


def simulate_popularity(
    quality: np.ndarray,
    style_effect: np.ndarray,
    creator_reach: np.ndarray,
    rng: np.random.Generator,
    model: PopularityModel = PopularityModel(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plays, likes (int arrays) and the standardised popularity latent of each song.

    ``quality``, ``style_effect`` and ``creator_reach`` are per-song and roughly unit-variance.
    """
    luck = rng.standard_normal(len(quality))
    latent = (
        model.w_quality * _standardise(quality)
        + model.w_style * style_effect
        + model.w_creator * creator_reach
        + model.w_luck * luck
    )
    latent = _standardise(latent)
    sd = np.where(latent < 0, model.log_plays_sd_low, model.log_plays_sd_high)
    log_plays = model.log_plays_median + sd * latent
    log_likes = (
        model.likes_intercept
        + model.likes_slope * (log_plays - model.log_plays_median)
        + 0.15 * _standardise(quality)
        + rng.normal(0, model.likes_noise_sd, len(quality))
    )
    plays = np.maximum(np.round(np.exp(log_plays)), 1).astype(np.int64)
    likes = np.clip(np.round(np.exp(log_likes)), 0, plays).astype(np.int64)
    return plays, likes, latent


def _standardise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else x - x.mean()


# --- statistics shared by calibration, tests and the report --------------------------------


def read_songeval(path: str | Path) -> np.ndarray:
    """Real SongEval ratings as an array [N songs, 4 raters, 5 dimensions]."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return np.array([[[a[k] for k in SONGEVAL_KEYS] for a in r["annotation"]] for r in rows], float)


def rating_stats(ratings: np.ndarray) -> dict[str, list[float] | float]:
    """Per-dimension mean and sd of song means, rater-level sd, within-song rater sd, and the
    mean inter-dimension correlation of song means and of single ratings."""
    song = ratings.mean(axis=1)
    flat = ratings.reshape(-1, ratings.shape[-1])
    off = ~np.eye(ratings.shape[-1], dtype=bool)
    return {
        "mean": song.mean(axis=0).tolist(),
        "sd_song_mean": song.std(axis=0).tolist(),
        "sd_rating": flat.std(axis=0).tolist(),
        "sd_within_song": ratings.std(axis=1, ddof=1).mean(axis=0).tolist(),
        "corr_song_mean": float(np.corrcoef(song.T)[off].mean()),
        "corr_rating": float(np.corrcoef(flat.T)[off].mean()),
        "half_step_share": float(np.mean(ratings % 1 != 0)),
    }


_FIT_MOMENTS = ("mean", "sd_song_mean", "sd_rating", "sd_within_song")


def rating_fit_loss(model: RatingModel, target: dict, n_songs: int = 4000, seed: int = 1) -> float:
    """Squared moment mismatch between ``model``'s simulated ratings and ``target`` (a
    ``rating_stats`` dict); correlations weigh 50x (they live on a much smaller scale)."""
    from apexmusic.synth.styles import STYLES

    rng = np.random.default_rng(seed)  # common random numbers: a smooth loss for the optimiser
    index = rng.integers(0, len(STYLES), n_songs)
    shift = np.array([[s.quality + b for b in s.dim_bias] for s in STYLES])[index]
    ratings, _ = simulate_ratings(draw_latents(shift, rng, model.rho), rng, model)
    sim = rating_stats(ratings)
    loss = sum(float(np.sum((np.array(sim[k]) - np.array(target[k])) ** 2)) for k in _FIT_MOMENTS)
    return loss + 50 * sum((sim[k] - target[k]) ** 2 for k in ("corr_song_mean", "corr_rating"))


def fit_rating_model(target: dict, start: RatingModel = RatingModel(), max_iter: int = 600) -> RatingModel:
    """Fit centres, spread, rho and the three rater-noise scales to real rating statistics by
    Nelder-Mead (how the ``RatingModel`` defaults were obtained from the SongEval file)."""
    from dataclasses import replace

    from scipy.optimize import minimize

    def unpack(x: np.ndarray) -> RatingModel:
        return replace(
            start,
            centre=tuple(float(v) for v in x[:5]),
            spread=float(x[5]),
            rho=float(np.clip(x[6], 0.0, 0.999)),
            rater_bias_sd=abs(float(x[7])),
            mood_sd=abs(float(x[8])),
            noise_sd=abs(float(x[9])),
        )

    x0 = np.array(
        [*start.centre, start.spread, start.rho, start.rater_bias_sd, start.mood_sd, start.noise_sd]
    )
    result = minimize(
        lambda x: rating_fit_loss(unpack(x), target),
        x0,
        method="Nelder-Mead",
        options={"maxiter": max_iter, "xatol": 1e-3, "fatol": 1e-6},
    )
    return unpack(result.x)


def popularity_stats(plays: np.ndarray, likes: np.ndarray) -> dict[str, list[float] | float]:
    """log10 quantiles (10/25/50/75/90 %) of plays and likes and the log-log correlation."""
    q = [0.1, 0.25, 0.5, 0.75, 0.9]
    lp, ll = np.log10(np.maximum(plays, 1)), np.log10(np.maximum(likes, 1))
    return {
        "log10_plays_quantiles": np.quantile(lp, q).tolist(),
        "log10_likes_quantiles": np.quantile(ll, q).tolist(),
        "corr_log_plays_likes": float(np.corrcoef(lp, ll)[0, 1]),
    }


def read_suno_counts(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Real Suno play and like counts from ``songs.json``."""
    rows = json.loads(Path(path).read_text())
    return (np.array([r["play_count"] for r in rows]), np.array([r["upvote_count"] for r in rows]))


# --- arena battles --------------------------------------------------------------------------


@dataclass(frozen=True)
class ArenaModel:
    """Listener preference: mostly heard quality (musicality and memorability weigh most), partly
    the same appeal that drives popularity, partly taste no audio feature explains."""

    w_aesthetic: float = 0.75
    w_popularity: float = 0.35
    w_taste: float = 0.55
    sharpness: float = 1.6  # logistic slope of P(A wins) in preference units
    tie_prob: float = 0.05
    both_bad_prob: float = 0.5  # when both songs are in the bottom fifth
    dimension_weights: tuple[float, float, float, float, float] = (0.15, 0.3, 0.3, 0.1, 0.15)


def listener_preference(
    z: np.ndarray, popularity_latent: np.ndarray, rng: np.random.Generator, model: ArenaModel = ArenaModel()
) -> np.ndarray:
    aesthetic = _standardise(z @ np.asarray(model.dimension_weights))
    taste = rng.standard_normal(len(z))
    return (
        model.w_aesthetic * aesthetic
        + model.w_popularity * _standardise(popularity_latent)
        + model.w_taste * taste
    )


def draw_battles(
    candidates: np.ndarray,
    systems: np.ndarray,
    preference: np.ndarray,
    n_battles: int,
    rng: np.random.Generator,
    model: ArenaModel = ArenaModel(),
) -> list[tuple[int, int, str]]:
    """``n_battles`` (index_a, index_b, preference) among ``candidates`` (song indices), always
    between two different systems, decided by the listener preference plus per-vote noise."""
    if len(np.unique(systems[candidates])) < 2:
        return []
    low = np.quantile(preference[candidates], 0.2)
    battles = []
    while len(battles) < n_battles:
        a, b = rng.choice(candidates, 2, replace=False)
        if systems[a] == systems[b]:
            continue
        diff = preference[a] - preference[b]
        u = rng.random()
        if preference[a] < low and preference[b] < low and u < model.both_bad_prob:
            outcome = "BOTH_BAD"
        elif u > 1 - model.tie_prob:
            outcome = "TIE"
        else:
            outcome = "A" if rng.random() < 1 / (1 + np.exp(-model.sharpness * diff)) else "B"
        battles.append((int(a), int(b), outcome))
    return battles

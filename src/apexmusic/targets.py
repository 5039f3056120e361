"""Training targets: popularity scores from raw counts, aesthetic labels from rater records.

Popularity: raw play / like counts → percentile rank within platform (ties get the
average rank) → power transform → 0–100::

    p = (rank - 1) / (n - 1)            # 0 = least played on that platform, 1 = most
    score = 100 · p ** exponent

Counts are heavy-tailed and platforms differ by orders of magnitude, so a within-platform
percentile is the robust, comparable scale. The exponent shapes the scale: > 1 compresses the
long low tail and spreads the hits, < 1 does the opposite.

**Default exponent 1.0, derived from data.** :func:`fit_exponent` finds the exponent for which
the score best tracks the min-max-normalised log count (the shape of the real distribution,
least squares). On the real Suno sample in ``shared/data/suno/songs.json`` (234 songs) it gives
0.95 for plays and 1.00 for likes (see ``tests/test_targets.py``), i.e. the percentile is
already linear in log-count there, so the identity is the honest default; pass another value
(``PopularityConfig(exponent=...)``, ``apexmusic train --popularity-exponent``) to emphasise
the top of the ranking.

Optionally the percentile is taken within creation-time cohorts (``cohort="week"|"month"``)
as well as platform, so an old song does not score high only because it had longer to collect
plays. Songs without a creation time, or in a cohort smaller than ``min_cohort``, fall back to
the percentile within their whole platform.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from apexmusic.choices import COHORTS
from apexmusic.errors import ConfigError

log = logging.getLogger(__name__)

COHORT_SECONDS = {"week": 7 * 86400.0, "month": 30.4375 * 86400.0}


@dataclass
class PopularityConfig:
    exponent: float = 1.0
    cohort: str | None = None  # None, "week" or "month"
    min_cohort: int = 5  # smaller cohorts use the whole platform instead

    def __post_init__(self) -> None:
        if not np.isfinite(self.exponent) or self.exponent <= 0:
            raise ConfigError(f"popularity exponent must be > 0, not {self.exponent}")
        if self.cohort not in (None, *COHORTS):
            raise ConfigError(f"cohort must be week, month or none, not {self.cohort!r}")
        if self.cohort == "none":
            self.cohort = None
        if self.min_cohort < 1:
            raise ConfigError(f"min_cohort must be >= 1, not {self.min_cohort}")


def percentile_rank(values: np.ndarray) -> np.ndarray:
    """Ranks scaled to [0, 1], ties averaged; NaN stays NaN; a single value gets 0.5."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, np.nan)
    ok = np.isfinite(values)
    n = int(ok.sum())
    if n == 1:
        out[ok] = 0.5
    elif n > 1:
        out[ok] = (rankdata(values[ok], method="average") - 1.0) / (n - 1)
    return out


def popularity_score(
    counts: np.ndarray,
    platforms: np.ndarray | None = None,
    created_at: np.ndarray | None = None,
    config: PopularityConfig | None = None,
) -> np.ndarray:
    """Raw counts ``[N]`` → scores on 0–100 (NaN where the count is missing or negative).

    ``platforms`` (strings) separates platforms; ``created_at`` (seconds since the epoch,
    NaN if unknown) is used for cohorts when ``config.cohort`` is set.
    """
    config = config or PopularityConfig()
    counts = np.asarray(counts, dtype=np.float64)
    counts = np.where(counts >= 0, counts, np.nan)
    n = len(counts)
    platforms = np.asarray(platforms, dtype=object) if platforms is not None else np.full(n, "", object)
    platform_keys = np.array([str(p) for p in platforms], dtype=object)
    percentile = _percentile_by_group(counts, platform_keys)
    if config.cohort is not None and created_at is not None:
        cohort_keys = _cohort_keys(platform_keys, np.asarray(created_at, np.float64), config)
        in_cohort = cohort_keys != None  # noqa: E711 - elementwise on an object array
        if in_cohort.any():
            percentile[in_cohort] = _percentile_by_group(counts[in_cohort], cohort_keys[in_cohort])
    return 100.0 * percentile**config.exponent


def _percentile_by_group(counts: np.ndarray, keys: np.ndarray) -> np.ndarray:
    percentile = np.full(len(counts), np.nan)
    for key in np.unique(keys.astype(str)):
        members = np.flatnonzero(keys.astype(str) == key)
        percentile[members] = percentile_rank(counts[members])
    return percentile


def _cohort_keys(platform_keys: np.ndarray, created_at: np.ndarray, config: PopularityConfig) -> np.ndarray:
    """``platform|bucket`` per song; None for songs without a time or in a too-small cohort."""
    bucket = np.floor(created_at / COHORT_SECONDS[config.cohort])
    keys = np.array(
        [f"{p}|{int(b)}" if np.isfinite(b) else None for p, b in zip(platform_keys, bucket, strict=True)],
        dtype=object,
    )
    timed = keys != None  # noqa: E711
    names, sizes = np.unique(keys[timed].astype(str), return_counts=True)
    small = set(names[sizes < config.min_cohort])
    keys[[k in small for k in keys]] = None
    n_fallback = int((keys == None).sum())  # noqa: E711
    if n_fallback:
        log.info(
            "%d songs without a time or in cohorts smaller than %d use their platform's percentile",
            n_fallback,
            config.min_cohort,
        )
    return keys


def fit_exponent(counts: np.ndarray, grid: np.ndarray | None = None) -> float:
    """The exponent whose score best tracks min-max-normalised ``log1p(count)`` (least squares).

    This is how the default exponent was derived (module docstring).
    """
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[np.isfinite(counts) & (counts >= 0)]
    if len(counts) < 3 or np.ptp(counts) == 0:
        raise ConfigError("need at least 3 distinct counts to fit an exponent")
    p = percentile_rank(counts)
    log_counts = np.log1p(counts)
    target = (log_counts - log_counts.min()) / np.ptp(log_counts)
    grid = np.round(np.arange(0.25, 4.0001, 0.05), 2) if grid is None else np.asarray(grid)
    errors = [np.mean((p**g - target) ** 2) for g in grid]
    return float(grid[int(np.argmin(errors))])


@dataclass
class RaterAggregate:
    """Per-song mean over raters, their spread (sample sd; 0 with one rater) and count."""

    mean: np.ndarray  # [N]
    sd: np.ndarray  # [N]
    n_raters: np.ndarray  # [N] int


def aggregate_ratings(ratings: list[list[float]]) -> RaterAggregate:
    """Each song's list of rater scores (NaN / missing ignored) → mean, sd and count."""
    means, sds, counts = [], [], []
    for values in ratings:
        v = np.asarray([x for x in values if x is not None], dtype=np.float64)
        v = v[np.isfinite(v)]
        counts.append(len(v))
        means.append(v.mean() if len(v) else np.nan)
        sds.append(v.std(ddof=1) if len(v) > 1 else (0.0 if len(v) else np.nan))
    return RaterAggregate(np.asarray(means), np.asarray(sds), np.asarray(counts, dtype=np.int64))

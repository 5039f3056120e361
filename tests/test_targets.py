"""Popularity scores on the real Suno sample, and rater aggregation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apexmusic.errors import ConfigError
from apexmusic.targets import (
    PopularityConfig,
    aggregate_ratings,
    fit_exponent,
    percentile_rank,
    popularity_score,
)


@pytest.fixture(scope="module")
def suno(shared_data):
    songs = json.loads((shared_data / "suno" / "songs.json").read_text())
    plays = np.array([s["play_count"] for s in songs], float)
    likes = np.array([s["upvote_count"] for s in songs], float)
    created = np.array([s["created_at"] / 1000 for s in songs], float)
    return plays, likes, created


def test_scores_on_real_suno_are_monotone_bounded_and_ties_equal(suno):
    plays, likes, _ = suno
    for counts in (plays, likes):
        for exponent in (0.5, 1.0, 2.0):
            score = popularity_score(counts, config=PopularityConfig(exponent=exponent))
            assert np.all(np.isfinite(score)) and 0.0 <= score.min() and score.max() <= 100.0
            # Independent: average rank = (#smaller) + (#equal + 1) / 2, scaled to [0, 1].
            below = (counts[None, :] < counts[:, None]).sum(1)
            equal = (counts[None, :] == counts[:, None]).sum(1)
            expected = 100 * ((below + (equal + 1) / 2 - 1) / (len(counts) - 1)) ** exponent
            np.testing.assert_allclose(score, expected)
            order = np.argsort(counts, kind="stable")
            assert np.all(np.diff(score[order]) >= 0), "more plays never score lower"
            strictly = np.diff(counts[order]) > 0
            assert np.all(np.diff(score[order])[strictly] > 0)
            _, inverse, n_same = np.unique(counts, return_inverse=True, return_counts=True)
            assert (n_same > 1).any(), "the real sample has tied counts"
            for group in np.flatnonzero(n_same > 1):
                assert np.ptp(score[inverse == group]) == 0.0


def test_ties_get_the_average_rank():
    np.testing.assert_allclose(percentile_rank(np.array([5, 1, 5, 9])), [0.5, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(
        popularity_score([1, 2, 2, 3], config=PopularityConfig(exponent=2.0)),
        100 * np.array([0, 0.5, 0.5, 1.0]) ** 2,
    )


def test_platforms_are_ranked_separately(suno):
    plays, _, _ = suno
    # A second platform whose counts are 1000x larger: each platform keeps its own 0-100 scale.
    counts = np.concatenate([plays, plays * 1000 + 7])
    platforms = np.array(["suno"] * len(plays) + ["udio"] * len(plays), dtype=object)
    together = popularity_score(counts, platforms)
    alone = popularity_score(plays)
    np.testing.assert_allclose(together[: len(plays)], alone)
    np.testing.assert_allclose(together[len(plays) :], alone)
    pooled = popularity_score(counts)
    assert pooled[: len(plays)].mean() < 30, "without platforms the small platform would be squashed"


def test_cohorts_rank_within_creation_week(suno):
    plays, _, created = suno
    platforms = np.full(len(plays), "suno", dtype=object)
    config = PopularityConfig(cohort="week", min_cohort=5)
    score = popularity_score(plays, platforms, created, config)
    week = np.floor(created / (7 * 86400))
    weeks, sizes = np.unique(week, return_counts=True)
    big = weeks[sizes >= 5]
    assert len(big) >= 2
    for w in big:
        members = week == w
        np.testing.assert_allclose(score[members], 100 * percentile_rank(plays[members]))
    assert np.abs(score - popularity_score(plays)).max() > 5, "cohorts change the scores"
    # Songs without a creation time fall back to the platform-wide percentile.
    created_missing = created.copy()
    created_missing[:10] = np.nan
    fallback = popularity_score(plays, platforms, created_missing, config)
    np.testing.assert_allclose(fallback[:10], popularity_score(plays)[:10])
    assert np.all(np.isfinite(fallback))


def test_missing_counts_stay_missing_and_bad_config_is_rejected():
    score = popularity_score(np.array([3.0, np.nan, 1.0, -1.0]))
    assert np.isnan(score[1]) and np.isnan(score[3]) and score[0] == 100 and score[2] == 0
    with pytest.raises(ConfigError):
        PopularityConfig(exponent=0)
    with pytest.raises(ConfigError):
        PopularityConfig(cohort="year")


def test_default_exponent_is_what_the_real_data_supports(suno):
    """docs/training.md: the default exponent is the least-squares fit to log counts."""
    plays, likes, _ = suno
    fitted = [fit_exponent(plays), fit_exponent(likes)]
    assert all(abs(f - PopularityConfig().exponent) <= 0.1 for f in fitted), fitted
    # The fit is not a constant: a sample whose log counts are skewed asks for another exponent.
    skewed = np.exp(np.linspace(0, 1, 200) ** 3 * 10)
    assert fit_exponent(skewed) > 2


def test_rater_aggregation_keeps_spread_and_count(shared_data):
    lines = (shared_data / "songeval" / "ratings.jsonl").read_text().splitlines()[:50]
    records = [json.loads(line) for line in lines]
    per_song = [[a["Coherence"] for a in r["annotation"]] for r in records]
    agg = aggregate_ratings(per_song)
    np.testing.assert_allclose(agg.mean, [np.mean(v) for v in per_song])
    np.testing.assert_allclose(agg.sd, [np.std(v, ddof=1) for v in per_song])
    assert list(agg.n_raters) == [len(v) for v in per_song]
    one = aggregate_ratings([[4.0], [], [3.0, None, 5.0]])
    assert one.sd[0] == 0 and np.isnan(one.mean[1]) and one.n_raters[2] == 2 and one.mean[2] == 4.0

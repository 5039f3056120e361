"""Arena on real Music Arena data (../shared/data/music_arena), read in place.

- ``battles_postcut_scored.csv``: 799 real battles with a published reward model's scores
  (``tj_a``/``tj_b``), its predicted winner (``tj_pred``) and whether it agreed with the
  human (``agree``). Our rule metrics must equal what those columns imply.
- ``leaderboards/*.tsv``: the official Music Arena boards. Our Bradley–Terry board from the
  799 battles, on all battles and on the official subsets (lyrics-capability rule), must order
  the shared systems consistently with each of them.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, spearmanr

from apexmusic import arena


@pytest.fixture(scope="module")
def arena_dir(shared_data):
    return shared_data / "music_arena"


@pytest.fixture(scope="module")
def raw_rows(arena_dir):
    with open(arena_dir / "battles_postcut_scored.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def battles(arena_dir):
    return arena.load_battles(arena_dir / "battles_postcut_scored.csv")


def test_tj_rule_accuracy_and_auc_equal_the_files_own_columns(raw_rows, battles):
    # Independent of our code: the file says whether tj agreed with the human each time.
    agree = np.array([r["agree"] == "True" for r in raw_rows])
    assert len(agree) == 799 and round(agree.mean(), 4) == 0.5369
    # ... and tj_pred is "the higher tj score wins" (no tied scores in this file).
    assert all((float(r["tj_a"]) > float(r["tj_b"])) == (r["tj_pred"] == "A") for r in raw_rows)
    # AUC from the columns: Mann–Whitney U of tj_a - tj_b between A-wins and B-wins.
    diff = np.array([float(r["tj_a"]) - float(r["tj_b"]) for r in raw_rows])
    a_won = np.array([r["preference"] == "A" for r in raw_rows])
    u = mannwhitneyu(diff[a_won], diff[~a_won]).statistic
    auc = u / (a_won.sum() * (~a_won).sum())

    m = arena.rule_metrics(battles.preference, battles.scores_a["tj"] - battles.scores_b["tj"], 200)
    assert m["n"] == 799 and m["n_ties"] == 0
    assert m["accuracy"] == pytest.approx(agree.mean(), abs=1e-12)
    assert m["auc"] == pytest.approx(auc, abs=1e-12)
    assert m["accuracy_ci"][0] < 0.5369 < m["accuracy_ci"][1]


def test_learned_logistic_on_tj_alone_is_the_sign_rule(battles):
    # One feature, no intercept: a positive coefficient predicts exactly "higher tj wins", so the
    # cross-validated accuracy equals the rule's accuracy up to unequal fold sizes (80 vs 79).
    learned = arena.evaluate_learned(battles, arena.EvalConfig(gb_max_iter=5))
    lr = learned["all_scores"]["logistic_regression"]
    assert learned["all_scores"]["n"] == 799 and learned["all_scores"]["folds"] == 10
    assert lr["accuracy_mean"] == pytest.approx(429 / 799, abs=0.002)


def _official(path):
    with open(path, newline="") as f:
        return {r["Model"]: float(r["Arena Score"]) for r in csv.DictReader(f, delimiter="\t")}


def test_our_leaderboard_orders_systems_like_the_official_boards(arena_dir, battles):
    board = arena.arena_leaderboard(battles, arena.LeaderboardConfig(n_bootstrap=20, min_votes=0))
    ours = {r.system: r.score for r in board}
    assert len(ours) == 11
    files = sorted((arena_dir / "leaderboards").glob("*.tsv"))
    assert len(files) == 6
    rhos = {}
    for path in files:
        official = _official(path)
        shared = [s for s in official if s in ours]
        assert len(shared) >= 4, path.name
        rhos[path.name] = spearmanr([official[s] for s in shared], [ours[s] for s in shared])[0]
    print("Spearman vs official boards:", {k: round(v, 3) for k, v in rhos.items()})
    # Observed: 0.643 on each instrumental board (7 shared systems) and 0.800 on each vocal
    # board (4-5 shared). The 799 battles are later (post-cut) and mix vocal and instrumental
    # prompts, and some systems changed between periods, so agreement is clear but not
    # perfect. A random order reaches these values with p = 0.069 (7 systems, rho >= 0.643) and
    # p = 0.17 / 0.067 (4 / 5 systems, rho >= 0.8), so we require every board to be clearly
    # positive and their mean to be well above chance (0).
    assert min(rhos.values()) > 0.5
    assert np.mean(list(rhos.values())) > 0.65


def test_scores_equal_the_official_row_per_battle_fit_on_real_battles(raw_rows, battles):
    # Music Arena's scoring.py fits one ±1 row per battle with sklearn; ours sums battles per
    # pair and adds mirrored half-weight rows. Same penalised likelihood, so the same scores.
    from sklearn.linear_model import LogisticRegression

    systems = sorted({r["system_a"] for r in raw_rows} | {r["system_b"] for r in raw_rows})
    x = np.zeros((len(raw_rows), len(systems)))
    for i, r in enumerate(raw_rows):
        x[i, systems.index(r["system_a"])], x[i, systems.index(r["system_b"])] = 1, -1
    y = np.array([r["preference"] == "A" for r in raw_rows], int)
    lr = LogisticRegression(C=1.0, fit_intercept=False, tol=1e-10, max_iter=10000).fit(x, y)
    official = 400 / np.log(10) * lr.coef_[0]
    official = official - official.mean() + 1000
    ours = arena.bradley_terry_scores(battles)
    for s, v in zip(systems, official, strict=True):
        assert ours[s] == pytest.approx(v, abs=0.05), s


def test_our_lyrics_capability_table_agrees_with_the_official_boards(arena_dir):
    for path in sorted((arena_dir / "leaderboards").glob("*.tsv")):
        with open(path, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                assert arena.LYRICS_CAPABLE[row["Model"]] == (row["supports_lyrics"] == "True"), row["Model"]


def test_official_subset_boards_order_systems_like_the_official_boards(arena_dir, battles):
    # The file has no is_instrumental column, so each board takes every battle and then the
    # lyrics-capability rule: vocal = both systems can sing lyrics (577 battles), instrumental
    # = at most one can (222 battles, each with magenta-rt-large or a musicgen).
    rhos = {}
    for kind, n_battles in (("instrumental", 222), ("vocal", 577)):
        config = arena.LeaderboardConfig(n_bootstrap=20, min_votes=0, subset=kind)
        assert len(arena.leaderboard_battles(battles, config)) == n_battles
        ours = {r.system: r.score for r in arena.arena_leaderboard(battles, config)}
        if kind == "vocal":
            assert all(arena.LYRICS_CAPABLE[s] for s in ours)
        for path in sorted((arena_dir / "leaderboards").glob(f"{kind}_*.tsv")):
            official = _official(path)
            shared = [s for s in official if s in ours]
            assert len(shared) >= 4, path.name
            rhos[path.name] = spearmanr([official[s] for s in shared], [ours[s] for s in shared])[0]
    print("Spearman of the official-subset boards:", {k: round(v, 3) for k, v in rhos.items()})
    # Observed: instrumental 0.643, 0.643, 0.821 (7 shared systems); vocal 0.8 each (4-5).
    assert len(rhos) == 6 and min(rhos.values()) > 0.5
    assert np.mean(list(rhos.values())) > 0.65

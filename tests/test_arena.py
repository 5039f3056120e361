"""Arena: battle loading, score joins, rule metrics, learned models, Bradley–Terry, comparator, CLI."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy.optimize import brentq, minimize
from sklearn.metrics import f1_score, roc_auc_score

from apexmusic import arena
from apexmusic.cli import main
from apexmusic.errors import ConfigError, DataError, ModelLoadError
from apexmusic.tasks import ALL_TASKS

SCALE = 400 / math.log(10)


def _record(i, a, b, pref, **extra):
    return {"battle_uuid": f"b{i}", "system_a": a, "system_b": b, "preference": pref, **extra}


def synthetic_battles(n=300, seed=0, n_systems=5, informative=("coherence", "musicality")):
    """Battles whose human preference follows a latent song quality that some scores track."""
    rng = np.random.default_rng(seed)
    systems = [f"sys{k}" for k in range(n_systems)]
    system_quality = np.linspace(-1, 1, n_systems)
    records, songs = [], {}
    for i in range(n):
        ia, ib = rng.choice(n_systems, 2, replace=False)
        qa = system_quality[ia] + rng.normal(0, 0.7)
        qb = system_quality[ib] + rng.normal(0, 0.7)
        p_a = 1 / (1 + math.exp(-2.5 * (qa - qb)))
        pref = "A" if rng.random() < p_a else "B"
        rec = _record(
            i,
            systems[ia],
            systems[ib],
            pref,
            audio_a=f"songs/{i}_a.mp3",
            audio_b=f"songs/{i}_b.mp3",
            is_instrumental=bool(i % 2),
        )
        for side, q in (("a", qa), ("b", qb)):
            s = {t: float(rng.normal(50 if t.startswith("score") else 3, 1)) for t in ALL_TASKS}
            for t in informative:
                s[t] = float(3 + q + rng.normal(0, 0.3))
            songs[f"{i}_{side}"] = s
        records.append(rec)
    return records, songs, systems


def with_side_columns(records, songs):
    out = []
    for rec in records:
        i = rec["battle_uuid"][1:]
        row = dict(rec)
        for t in ALL_TASKS:
            row[f"{t}_a"], row[f"{t}_b"] = songs[f"{i}_a"][t], songs[f"{i}_b"][t]
        out.append(row)
    return out


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def test_music_arena_schema_any_case_empty_audio_and_invalid_rows(tmp_path):
    rows = [
        _record(
            0,
            "x",
            "y",
            "a",
            audio_a="",
            audio_b="",
            is_instrumental=True,
            duration_a=30.0,
            duration_b=28.5,
            q_a=1.0,
            q_b=2.0,
        ),
        _record(
            1,
            "y",
            "z",
            "Tie",
            audio_a="aud/1.mp3",
            audio_b="",
            is_instrumental="false",
            duration_a=10,
            duration_b=11,
            q_a=0.5,
            q_b=0.5,
        ),
        _record(2, "x", "z", "both_bad", is_instrumental=None, q_a=None, q_b=3),
        _record(3, "x", "z", "maybe", q_a=1, q_b=2),  # unknown preference
        {"battle_uuid": "b4", "system_a": "x", "preference": "B", "q_a": 1, "q_b": 2},  # no system_b
        _record(5, "z", "x", "B", is_instrumental=False, q_a=2, q_b=1),
        _record(6, "x", "x", "A", q_a=2, q_b=1),  # a system against itself
    ]
    path = tmp_path / "battles.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    b = arena.load_battles(path)
    assert list(b.ids) == ["b0", "b1", "b2", "b5"]
    assert list(b.preference) == ["A", "TIE", "BOTH_BAD", "B"]
    assert [r["id"] for r in b.invalid] == ["b3", "b4", "b6"] and "preference" in b.invalid[0]["reason"]
    np.testing.assert_array_equal(b.instrumental[[0, 1, 3]], [1.0, 0.0, 0.0])
    assert np.isnan(b.instrumental[2])
    assert b.score_names == ("q",)  # duration_a/_b are metadata, not a score
    assert np.isnan(b.scores_a["q"][2]) and b.scores_b["q"][2] == 3
    assert b.counts() == {
        "n_battles": 4,
        "n_decisive": 2,
        "n_tie": 1,
        "n_both_bad": 1,
        "n_invalid": 3,
        "n_duplicates": 0,
    }

    # The same battles as one JSON file per battle in a folder (the released dataset layout).
    folder = tmp_path / "battle_data" / "01-2025JULAUG"
    folder.mkdir(parents=True)
    for r in rows:
        (folder / f"{r['battle_uuid']}.json").write_text(json.dumps(r))
    b2 = arena.load_battles(tmp_path / "battle_data")
    assert list(b2.ids) == list(b.ids) and list(b2.preference) == list(b.preference)


def test_plain_csv_and_missing_file(tmp_path, shared_data):
    b = arena.load_battles(shared_data / "music_arena" / "battles_postcut_scored.csv")
    assert len(b) == 799 and b.score_names == ("tj",) and not b.invalid
    assert len(b.systems) == 11 and np.isnan(b.instrumental).all()
    with pytest.raises(Exception, match="not found"):
        arena.load_battles(tmp_path / "nope.csv")


def test_parquet_battles_and_non_object_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        _record(i, "x", "y", p, is_instrumental=i % 2 == 0, s_a=float(i), s_b=1.0)
        for i, p in enumerate("ABA")
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "b.parquet")
    b = arena.load_battles(tmp_path / "b.parquet")
    assert list(b.preference) == ["A", "B", "A"] and list(b.instrumental) == [1.0, 0.0, 1.0]
    np.testing.assert_array_equal(b.scores_a["s"], [0.0, 1.0, 2.0])
    (tmp_path / "bad.json").write_text('["A", "B"]')
    with pytest.raises(DataError, match="JSON object"):
        arena.load_battles(tmp_path / "bad.json")


def test_a_duplicated_battle_counts_once_with_a_warning(tmp_path, caplog):
    rows = [
        _record(0, "x", "y", "A"),
        _record(1, "x", "z", "B"),
        _record(0, "x", "y", "A"),  # the same battle again
        _record(1, "x", "z", "A"),  # the same id with another outcome
        _record(2, "y", "z", "TIE"),
        {"system_a": "y", "system_b": "z", "preference": "A"},  # no id: never a duplicate
        {"system_a": "y", "system_b": "z", "preference": "A"},
    ]
    with caplog.at_level("WARNING", logger="apexmusic.arena"):
        b = arena.battles_from_records(rows)
    assert list(b.ids) == ["b0", "b1", "b2", "row6", "row7"]
    assert list(b.preference) == ["A", "B", "TIE", "A", "A"]  # the first row of an id wins
    assert b.counts()["n_duplicates"] == 2
    assert b.duplicates == [
        {"row": 3, "id": "b0", "first_row": 1, "conflicting": False},
        {"row": 4, "id": "b1", "first_row": 2, "conflicting": True},
    ]
    assert any("repeat an earlier battle id" in r.getMessage() for r in caplog.records)
    assert arena.system_votes(b) == {"x": 2, "y": 4, "z": 4}
    # The Music Arena layout: the same battle file in two month folders counts once.
    for month in ("2025-10", "2025-11"):
        folder = tmp_path / "battle_data" / month
        folder.mkdir(parents=True)
        (folder / "u1.json").write_text(json.dumps(_record(7, "x", "y", "B")))
    (tmp_path / "battle_data" / "2025-11" / "u2.json").write_text(json.dumps(_record(8, "x", "y", "A")))
    loaded = arena.load_battles(tmp_path / "battle_data")
    assert list(loaded.ids) == ["b7", "b8"] and loaded.report()["duplicate_examples"][0]["id"] == "b7"


def test_scores_file_join_rule_and_unmatched_report(tmp_path):
    scores = [
        {"id": "song-1", "path": "/data/ma/audio_files/01/aaa.mp3", **{t: 1.0 for t in ALL_TASKS}},
        {"id": "song-2", "path": "/data/ma/audio_files/01/bbb.mp3", **{t: 2.0 for t in ALL_TASKS}},
        {"id": "song-3", "path": "/other/ccc.wav", **{t: 3.0 for t in ALL_TASKS}},
        {"id": "dup-1", "path": "/x/dup.wav", **{t: 4.0 for t in ALL_TASKS}},
        {"id": "dup-2", "path": "/y/dup.wav", **{t: 5.0 for t in ALL_TASKS}},
    ]
    spath = tmp_path / "scores.jsonl"
    spath.write_text("".join(json.dumps(r) + "\n" for r in scores))
    battles = arena.battles_from_records(
        [
            _record(0, "x", "y", "A", audio_a="song-1", audio_b="audio_files/01/bbb.mp3"),  # id; path suffix
            _record(1, "x", "y", "B", audio_a="ccc.mp3", audio_b="song-2"),  # stem of path; id
            _record(2, "x", "y", "A", audio_a="dup.mp3", audio_b="song-3"),  # ambiguous stem
            _record(3, "x", "y", "A", audio_a="", audio_b="song-3"),  # audio withheld
            _record(4, "x", "y", "B", audio_a="", audio_b="zzz", id_a="song-2", id_b="song-1"),  # song ids
        ]
    )
    table = arena.load_scores(spath)
    assert list(table.values) == list(ALL_TASKS)
    out, report = arena.attach_scores(battles, table)
    np.testing.assert_array_equal(out.scores_a["coherence"][[0, 1, 4]], [1.0, 3.0, 2.0])
    np.testing.assert_array_equal(out.scores_b["coherence"][[0, 1, 4]], [2.0, 2.0, 1.0])
    assert np.isnan(out.scores_a["coherence"][2:4]).all()
    assert (report.n_battles, report.n_matched, report.n_unmatched) == (5, 3, 2)
    assert [u["id"] for u in report.unmatched] == ["b2", "b3"] and report.n_ambiguous_keys >= 1
    metrics = arena.evaluate_arena(
        out, arena.EvalConfig(n_bootstrap=20, folds=2, gb_max_iter=3, paper=None), report
    )
    assert metrics["data"]["scores_join"]["n_unmatched"] == 2
    assert metrics["rules"]["coherence"]["n"] == 3 and metrics["rules"]["coherence"]["n_missing_scores"] == 2

    bad = tmp_path / "bad.csv"
    bad.write_text("id,path,foo\n1,a.wav,3\n")
    with pytest.raises(DataError, match="lacks score columns"):
        arena.load_scores(bad)


# --------------------------------------------------------------------------------------------
# Rule metrics
# --------------------------------------------------------------------------------------------


def test_rule_metrics_equal_independent_computation():
    rng = np.random.default_rng(1)
    n = 200
    pref = rng.choice(np.array(["A", "B", "TIE", "BOTH_BAD"], dtype=object), n, p=[0.4, 0.4, 0.1, 0.1])
    diff = np.round(rng.normal(0, 1, n) + (pref == "A") * 0.5, 1)  # rounding makes tied predictions
    diff[:5] = 0.0
    m = arena.rule_metrics(pref, diff, n_bootstrap=200)

    keep = pref != "BOTH_BAD"
    p, d = pref[keep], diff[keep]
    per_battle = [
        0.5 if lab == "TIE" or x == 0 else float((x > 0) == (lab == "A")) for lab, x in zip(p, d, strict=True)
    ]
    assert m["n"] == keep.sum() and m["n_ties"] == (p == "TIE").sum()
    assert m["accuracy"] == pytest.approx(np.mean(per_battle))
    dec = p != "TIE"
    assert m["accuracy_decisive"] == pytest.approx(np.mean(np.array(per_battle)[dec]))
    y = (p[dec] == "A").astype(int)
    assert m["auc"] == pytest.approx(roc_auc_score(y, d[dec]))
    # F1: macro over both classes; a tied prediction is half a vote for each side.
    dd = d[dec]
    yy = np.concatenate([y, y[dd == 0]])
    pred = np.concatenate([(dd > 0).astype(int), np.ones((dd == 0).sum(), int)])
    w = np.concatenate([np.where(dd == 0, 0.5, 1.0), np.full((dd == 0).sum(), 0.5)])
    assert m["f1"] == pytest.approx(f1_score(yy, pred, average="macro", sample_weight=w))
    abs_dec, abs_tie = np.abs(d[dec]), np.abs(d[~dec])
    greater = (abs_dec[:, None] > abs_tie[None, :]) + 0.5 * (abs_dec[:, None] == abs_tie[None, :])
    assert m["tie_closeness"] == pytest.approx(greater.mean())
    for k in ("accuracy", "auc", "f1"):
        lo, hi = m[f"{k}_ci"]
        assert lo <= m[k] <= hi and hi - lo < 0.3


def test_rules_splits_composites_and_learned_ablation():
    records, songs, _ = synthetic_battles(n=400, informative=("coherence", "musicality", "clarity"))
    b = arena.battles_from_records(with_side_columns(records, songs))
    metrics = arena.evaluate_arena(b, arena.EvalConfig(n_bootstrap=50, folds=5, gb_max_iter=20, paper=None))
    rules = metrics["rules"]
    assert set(rules) == set(ALL_TASKS) | set(arena.COMPOSITES)
    assert set(rules["coherence"]["by_type"]) == {"instrumental", "vocal"}
    assert sum(r["n"] for r in rules["coherence"]["by_type"].values()) == 400
    assert sum(r["n"] for r in rules["coherence"]["by_pair"].values()) == 400
    assert all(" vs " in k for k in rules["coherence"]["by_pair"])
    # Informative scores predict preference, noise does not.
    assert rules["coherence"]["auc"] > 0.7 and rules["apex_aesthetics_z"]["auc"] > 0.75
    assert abs(rules["score_streams"]["auc"] - 0.5) < 0.1
    learned = metrics["learned"]
    assert set(learned) == {"popularity", "popularity+aesthetics"}
    pop, full = learned["popularity"], learned["popularity+aesthetics"]
    assert full["features"] == list(ALL_TASKS) and full["folds"] == 5
    for model in ("logistic_regression", "gradient_boosting"):
        assert full[model]["auc_mean"] > pop[model]["auc_mean"] + 0.15
        assert len(full[model]["auc_folds"]) == 5 and full[model]["auc_sd"] > 0
    assert full["logistic_regression"]["auc_mean"] > 0.75


def test_stratified_folds_balance_classes():
    y = np.array([1] * 37 + [0] * 23)
    folds = arena.stratified_folds(y, 5, seed=3)
    for k in range(5):
        assert (y[folds == k] == 1).sum() in (7, 8) and (y[folds == k] == 0).sum() in (4, 5)
    np.testing.assert_array_equal(arena.stratified_folds(1 - y, 5, seed=3), folds)


# --------------------------------------------------------------------------------------------
# Bradley–Terry, the official Music Arena method
# --------------------------------------------------------------------------------------------


HAND_MADE = [
    ("p", "q", "A"),
    ("p", "q", "A"),
    ("q", "p", "B"),
    ("p", "q", "B"),
    ("p", "r", "A"),
    ("r", "p", "TIE"),
    ("r", "s", "A"),
    ("s", "r", "A"),
    ("q", "s", "tie"),
    ("s", "q", "B"),
    ("q", "r", "A"),
    ("p", "s", "BOTH_BAD"),
    ("s", "p", "B"),
    ("r", "q", "b"),
]


def _official_scores_by_direct_optimisation(battles, C=1.0):
    """Music Arena's penalised likelihood, minimised directly: samples +1 for A / -1 for B,
    label A-won, ties as two half-weight samples, 0.5·||w||² + C·Σ weight·logloss."""
    systems = sorted({s for a, b, _ in battles for s in (a, b)})
    rows, labels, weights = [], [], []
    for a, b, pref in battles:
        pref = pref.upper()
        if pref == "BOTH_BAD":
            continue
        x = np.zeros(len(systems))
        x[systems.index(a)], x[systems.index(b)] = 1, -1
        outcomes = [(1, 0.5), (0, 0.5)] if pref == "TIE" else [(int(pref == "A"), 1.0)]
        for label, weight in outcomes:
            rows.append(x)
            labels.append(label)
            weights.append(weight)
    x, y, w = np.array(rows), np.array(labels), np.array(weights)

    def objective(beta):
        z = x @ beta
        loss = np.logaddexp(0, -z) * y + np.logaddexp(0, z) * (1 - y)
        return 0.5 * beta @ beta + C * (w * loss).sum()

    beta = minimize(objective, np.zeros(len(systems)), method="BFGS", options={"gtol": 1e-10}).x
    scores = SCALE * beta
    return dict(zip(systems, scores - scores.mean() + 1000, strict=True))


def test_bradley_terry_equals_direct_optimisation_of_the_official_likelihood():
    battles = arena.battles_from_records(_record(i, a, b, p) for i, (a, b, p) in enumerate(HAND_MADE))
    ours = arena.bradley_terry_scores(battles)
    expected = _official_scores_by_direct_optimisation(HAND_MADE)
    assert set(ours) == set(expected)
    for s in expected:
        assert ours[s] == pytest.approx(expected[s], abs=0.01)
    assert np.mean(list(ours.values())) == pytest.approx(1000)


def test_bradley_terry_two_systems_closed_form():
    # x beats y 7 times, loses 3, ties 2. With w = (t, -t): minimise t² + Σ logloss(2t).
    rows = [("x", "y", "A")] * 4 + [("y", "x", "B")] * 3 + [("x", "y", "B")] * 3 + [("x", "y", "TIE")] * 2
    battles = arena.battles_from_records(_record(i, a, b, p) for i, (a, b, p) in enumerate(rows))
    wins, losses = 7 + 1, 3 + 1  # each tie: half a win and half a loss, at weight 1 in total

    def grad(t):  # d/dt [t² + wins·log(1+e^{-2t}) + losses·log(1+e^{2t})]
        return 2 * t - 2 * wins / (1 + math.exp(2 * t)) + 2 * losses / (1 + math.exp(-2 * t))

    t = brentq(grad, -10, 10)
    ours = arena.bradley_terry_scores(battles)
    assert ours["x"] == pytest.approx(1000 + SCALE * t, abs=0.01)
    assert ours["y"] == pytest.approx(1000 - SCALE * t, abs=0.01)


def test_leaderboard_votes_min_votes_and_intervals(tmp_path):
    rows = HAND_MADE * 3
    battles = arena.battles_from_records(_record(i, a, b, p) for i, (a, b, p) in enumerate(rows))
    board = arena.arena_leaderboard(battles, arena.LeaderboardConfig(n_bootstrap=60, min_votes=0))
    votes = {r.system: r.votes for r in board}
    # BOTH_BAD battles are not votes: p 7, q 8, r 6, s 5 per copy of HAND_MADE.
    assert votes == {"p": 3 * 7, "q": 3 * 8, "r": 3 * 6, "s": 3 * 5}
    full = arena.bradley_terry_scores(battles)
    for r in board:
        assert r.score == pytest.approx(full[r.system])
        assert r.ci_low < r.score < r.ci_high
        assert r.score - r.ci_low == pytest.approx(r.ci_high - r.score)  # ±1.96 sd, as Music Arena
    assert [r.score for r in board] == sorted((r.score for r in board), reverse=True)
    fewer = arena.arena_leaderboard(battles, arena.LeaderboardConfig(n_bootstrap=5, min_votes=19))
    assert sorted(r.system for r in fewer) == ["p", "q"]
    arena.write_leaderboard_csv(board, tmp_path / "lb.csv")
    with open(tmp_path / "lb.csv") as f:
        assert next(csv.reader(f)) == ["system", "score", "ci_low", "ci_high", "votes"]


def test_official_board_subsets_follow_the_lyrics_capability_rule(caplog):
    # musicgen-small cannot sing lyrics; riffusion and sonauto can; "mystery" is unknown.
    systems = ["musicgen-small", "riffusion-fuzz-1-0", "sonauto-v2-2", "mystery"]
    rng = np.random.default_rng(3)
    rows = []
    for i in range(200):
        a, b = rng.choice(len(systems), 2, replace=False)
        kind = [True, False, None][i % 3]
        rows.append(_record(i, systems[a], systems[b], "AB"[i % 2], is_instrumental=kind))
    battles = arena.battles_from_records(rows)
    capable = {"riffusion-fuzz-1-0", "sonauto-v2-2"}

    def expected(kind, lyrics):
        both = [r["system_a"] in capable and r["system_b"] in capable for r in rows]
        return [
            r["battle_uuid"]
            for r, bc in zip(rows, both, strict=True)
            if r["is_instrumental"] is kind and (not lyrics or (bc if kind is False else not bc))
        ]

    for subset, kind in (("instrumental", True), ("vocal", False)):
        for lyrics in (True, False):
            config = arena.LeaderboardConfig(subset=subset, lyrics_filter=lyrics)
            with caplog.at_level("WARNING", logger="apexmusic.arena"):
                chosen = arena.leaderboard_battles(battles, config)
            assert list(chosen.ids) == expected(kind, lyrics), (subset, lyrics)
            assert arena.leaderboard_battles(chosen, config) is chosen  # selected once
    assert any("mystery" in r.getMessage() for r in caplog.records)
    vocal = arena.leaderboard_battles(battles, arena.LeaderboardConfig(subset="vocal"))
    assert set(vocal.systems) == capable
    board = arena.arena_leaderboard(
        battles, arena.LeaderboardConfig(subset="vocal", n_bootstrap=5, min_votes=0)
    )
    assert {r.system for r in board} == capable
    # Another list of lyrics-capable systems; no is_instrumental at all: every battle's kind.
    unknown = arena.battles_from_records([{**r, "is_instrumental": None} for r in rows])
    config = arena.LeaderboardConfig(subset="vocal", lyrics_systems=frozenset({"mystery", "musicgen-small"}))
    assert set(arena.leaderboard_battles(unknown, config).systems) == {"mystery", "musicgen-small"}
    assert len(arena.leaderboard_battles(unknown, arena.LeaderboardConfig(subset="all"))) == 200


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: arena.EvalConfig(folds=1), "folds"),
        (lambda: arena.EvalConfig(n_bootstrap=-1), "n_bootstrap"),
        (lambda: arena.EvalConfig(ci=1.5), "ci"),
        (lambda: arena.LeaderboardConfig(min_votes=-1), "min_votes"),
        (lambda: arena.LeaderboardConfig(subset="choral"), "subset"),
        (lambda: arena.LeaderboardConfig(C=0), "C"),
        (lambda: arena.PaperConfig(svm_kernels=("cubic",)), "svm_kernels"),
        (lambda: arena.PaperConfig(n_estimators=0), "n_estimators"),
        (lambda: arena.PaperConfig(models=("xgboost",)), "models"),
    ],
)
def test_configs_validate_themselves(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_predicted_leaderboard_counts_each_song_once():
    records, songs, systems = synthetic_battles(n=300, seed=2)
    b = arena.battles_from_records(with_side_columns(records, songs))
    human = arena.arena_leaderboard(b, arena.LeaderboardConfig(n_bootstrap=5, min_votes=0))
    pred = arena.predicted_leaderboard(b, human)
    assert pred["correlations"]["coherence"]["spearman"] > 0.8  # tracks the latent quality
    assert pred["correlations"]["coherence"]["n_systems"] == len(systems)
    # A song in two battles (same audio id) counts once.
    dup = arena.battles_from_records(
        [
            _record(0, "x", "y", "A", audio_a="s1", audio_b="s2", q_a=1.0, q_b=0.0),
            _record(1, "x", "y", "A", audio_a="s1", audio_b="s3", q_a=1.0, q_b=4.0),
            _record(2, "x", "y", "A", audio_a="s4", audio_b="s3", q_a=3.0, q_b=4.0),
        ]
    )
    means = arena.predicted_leaderboard(dup, [])["systems"]
    assert means["x"]["q"] == pytest.approx(2.0) and means["x"]["n_songs_q"] == 2
    assert means["y"]["q"] == pytest.approx(2.0) and means["y"]["n_songs_q"] == 2


# --------------------------------------------------------------------------------------------
# PreferenceComparator
# --------------------------------------------------------------------------------------------


def test_comparator_learns_round_trips_through_json_and_is_antisymmetric():
    records, songs, _ = synthetic_battles(n=400, seed=4)
    comp = arena.PreferenceComparator().fit(with_side_columns(records, songs))
    assert comp.features == ALL_TASKS and comp.n_train == 400
    coef = dict(zip(comp.features, comp.coef, strict=True))
    assert coef["coherence"] > 0.3 and coef["musicality"] > 0.3 and abs(coef["score_likes"]) < 0.2
    base = {t: 3.0 for t in ALL_TASKS}
    better = base | {"coherence": 4.0, "musicality": 4.0}
    p = comp.prob_a_wins(better, base)
    assert p > 0.7 and comp.prob_a_wins(base, better) == pytest.approx(1 - p)
    assert comp.prob_a_wins(base, base) == pytest.approx(0.5)
    restored = arena.PreferenceComparator.from_dict(json.loads(json.dumps(comp.to_dict())))
    assert restored.prob_a_wins(better, base) == pytest.approx(p, abs=1e-12)
    with pytest.raises(DataError):
        comp.prob_a_wins({"coherence": 1.0}, base)
    with pytest.raises(ModelLoadError):
        arena.PreferenceComparator.from_dict(comp.to_dict() | {"coef": [1.0]})
    with pytest.raises(ModelLoadError):
        arena.PreferenceComparator.from_dict({"type": "pickle"})


def test_comparator_save_load(tmp_path):
    records, songs, _ = synthetic_battles(n=60, seed=5)
    b = arena.battles_from_records(with_side_columns(records, songs))
    comp = arena.PreferenceComparator(features=("coherence",)).fit(b)
    comp.save(tmp_path / "comparator.json")
    loaded = arena.PreferenceComparator.load(tmp_path / "comparator.json")
    assert loaded.features == ("coherence",)
    assert loaded.prob_a_wins({"coherence": 4}, {"coherence": 2}) > 0.5


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def test_cli_eval_and_leaderboard_with_scores_file(tmp_path, capsys):
    records, songs, systems = synthetic_battles(n=120, seed=6)
    records.append(_record(999, "sys0", "sys1", "BOTH_BAD", audio_a="songs/none.mp3", audio_b=""))
    bpath = tmp_path / "battles.jsonl"
    bpath.write_text("".join(json.dumps(r) + "\n" for r in records))
    spath = tmp_path / "scores.csv"
    with spath.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", *ALL_TASKS, "coherence_std"])
        for key, s in songs.items():
            w.writerow([key, f"/abs/songs/{key}.mp3", *(s[t] for t in ALL_TASKS), 0.1])
    out = tmp_path / "eval"
    # The BOTH_BAD battle's songs have no scores: reported, exit status 1 (some inputs failed).
    code = main(
        [
            "arena",
            "eval",
            "--battles",
            str(bpath),
            "--scores",
            str(spath),
            "--out",
            str(out),
            "--bootstrap",
            "20",
            "--folds",
            "3",
            "--no-pairs",
            "--no-paper",
        ]
    )
    assert code == 1
    metrics = json.loads((out / "arena_metrics.json").read_text())
    assert metrics["data"]["n_both_bad"] == 1 and metrics["data"]["scores_join"]["n_unmatched"] == 1
    assert metrics["rules"]["coherence"]["n"] == 120 and "apex_all_z" in metrics["rules"]
    assert "paper_protocol" not in metrics
    assert (out / "arena_accuracy.png").stat().st_size > 1000
    assert "rule coherence" in capsys.readouterr().out

    lb = tmp_path / "lb"
    code = main(
        [
            "arena",
            "leaderboard",
            "--battles",
            str(bpath),
            "--out",
            str(lb),
            "--bootstrap",
            "10",
            "--min-votes",
            "1",
            "--scores",
            str(spath),
            "--score-name",
            "coherence",
        ]
    )
    assert code == 1
    with open(lb / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["system"] for r in rows} == set(systems) and (lb / "leaderboard.png").exists()
    with open(lb / "predicted_leaderboard.csv") as f:
        pred = list(csv.DictReader(f))
    assert [r["system"] for r in pred] == [r["system"] for r in rows]
    info = json.loads((lb / "leaderboard.json").read_text())
    assert info["score_name"] == "coherence" and info["correlations"]["coherence"]["n_systems"] == 5

    assert main(["arena", "leaderboard", "--battles", str(tmp_path / "missing.csv"), "--out", str(lb)]) == 2
    capsys.readouterr()
    assert main(["arena", "eval", "--battles", str(bpath), "--out", str(out), "--folds", "1"]) == 2
    assert main(["arena", "leaderboard", "--battles", str(bpath), "--out", str(lb), "--min-votes", "-1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "folds must be >= 2" in err[0] and "min_votes must be >= 0" in err[1]


def test_cli_eval_without_scores_is_a_usage_error(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("battle_id,preference,system_a,system_b\n1,A,x,y\n2,B,x,y\n")
    assert main(["arena", "eval", "--battles", str(path), "--out", str(tmp_path / "o")]) == 2
    assert (
        main(
            [
                "arena",
                "leaderboard",
                "--battles",
                str(path),
                "--out",
                str(tmp_path / "o"),
                "--bootstrap",
                "5",
                "--min-votes",
                "0",
            ]
        )
        == 0
    )

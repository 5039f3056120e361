"""Trust statistics: conformal intervals cover what they claim, the domain alarm holds its false-
alarm rate and fires on shifted inputs, tasks without a basis are not served, training refuses
splits too small to evaluate, and everything survives a round trip through a model directory."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from train_sim import simulate, write_plain_labels, write_store

from apexmusic.cli import main
from apexmusic.data import join_labels, load_labels
from apexmusic.errors import ConfigError, ModelLoadError
from apexmusic.model import ModelDir
from apexmusic.store import EmbeddingStore
from apexmusic.tasks import ALL_TASKS, POPULARITY_TASKS
from apexmusic.train import TrainConfig, save_training_outputs, train
from apexmusic.trust import (
    TRUST_ARRAYS,
    TRUST_JSON,
    check_split,
    conformal_quantile,
    fit_domain,
    fit_intervals,
    head_inputs,
    load_trust,
    measure,
)
from apexmusic.trust.basis import build_basis

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = dict(epochs=12, batch_size=64, lr=1e-2, n_boot=0, device="cpu")


# ---- intervals -------------------------------------------------------------------------------


def test_conformal_quantile_is_the_corrected_order_statistic():
    r = np.arange(1.0, 20.0)[::-1]  # 19 residuals 19..1
    assert conformal_quantile(r, 0.9) == 18.0  # ceil(20 * 0.9) = 18th smallest
    assert conformal_quantile(r, 0.5) == 10.0
    assert conformal_quantile(np.arange(8.0), 0.9) == math.inf  # 8 < 1/0.1 - 1
    assert conformal_quantile(np.array([1.0, np.nan, 2.0, 3.0, 4, 5, 6, 7, 8, 9]), 0.9) == 9.0


def test_split_conformal_coverage_is_at_least_the_level_and_not_much_more():
    # 4000 independent calibration sets of 40 songs, one new song each: the marginal coverage
    # lies in [level, level + 1/(n+1)] for exchangeable data, whatever the noise law.
    rng = np.random.default_rng(0)
    n, reps, level = 40, 4000, 0.9
    noise = rng.standard_t(3, size=(reps, n + 1)) * 7.0
    k = math.ceil((n + 1) * level)
    q = np.sort(np.abs(noise[:, :n]), axis=1)[:, k - 1]
    covered = np.abs(noise[:, n]) <= q
    np.testing.assert_allclose(conformal_quantile(np.abs(noise[0, :n]), level), q[0])
    assert level - 0.015 <= covered.mean() <= level + 1 / (n + 1) + 0.015


def test_intervals_clip_to_the_range_and_measure_coverage():
    tasks = ("score_streams", "coherence")
    rng = np.random.default_rng(1)
    y = np.column_stack([rng.uniform(0, 100, 400), rng.uniform(1, 5, 400)])
    pred = y + rng.normal(0, [5.0, 0.4], size=y.shape)
    y_cal = y[:200].copy()
    y_cal[:150, 1] = np.nan  # 50 coherence labels left
    iv = fit_intervals(tasks, y_cal, pred[:200], level=0.8)
    assert iv.n_calibration == {"score_streams": 200, "coherence": 50}
    measure(iv, tasks, y[200:], pred[200:])
    assert 0.7 < iv.coverage["score_streams"] < 0.9 and 0.65 < iv.coverage["coherence"] < 0.95
    out = iv.apply({"score_streams": 99.0, "coherence": 1.1})
    assert out["score_streams"]["hi"] == 100.0 and out["coherence"]["lo"] == 1.0
    assert out["score_streams"]["lo"] == pytest.approx(99.0 - iv.half_width["score_streams"])
    iv.half_width["coherence"] = math.inf  # too few calibration labels: the whole range
    assert iv.apply({"coherence": 3.0})["coherence"] == {"lo": 1.0, "hi": 5.0}


def test_cross_conformal_calibrates_on_every_out_of_fold_residual():
    from apexmusic.trust import Intervals, fit_cross_conformal

    rng = np.random.default_rng(3)
    tasks = ("score_likes", "clarity")
    n = 600
    y = np.column_stack([rng.uniform(20, 80, n), rng.uniform(2, 4, n)])
    oof = y + rng.laplace(0, [6.0, 0.3], size=y.shape)
    y[:50, 1] = np.nan
    fold = np.arange(n) % 5
    iv = fit_cross_conformal(tasks, y, oof, fold, level=0.9)
    r = np.abs(y - oof)
    assert iv.half_width["score_likes"] == conformal_quantile(r[:, 0], 0.9)
    assert iv.n_calibration == {"score_likes": 600, "clarity": 550} and iv.n_cv["clarity"] == 550
    hits = [
        r[(fold == k) & np.isfinite(r[:, 1]), 1]
        <= conformal_quantile(r[(fold != k) & np.isfinite(r[:, 1]), 1], 0.9)
        for k in range(5)
    ]
    assert iv.cv_coverage["clarity"] == pytest.approx(np.concatenate(hits).mean())
    assert 0.86 <= iv.cv_coverage["score_likes"] <= 0.94  # exchangeable noise: about the level
    assert "cross-conformal" in iv.method and "5 fold models" in iv.method
    again = Intervals.from_dict(json.loads(json.dumps(iv.to_dict())))
    assert again.cv_coverage == iv.cv_coverage and again.method == iv.method and again.n_cv == iv.n_cv


def test_held_out_coverage_pools_the_test_split_and_the_out_of_fold_songs():
    from apexmusic.trust import fit_cross_conformal, measure

    rng = np.random.default_rng(8)
    tasks = ("score_streams", "coherence")
    y = np.column_stack([rng.uniform(10, 90, 300), rng.uniform(1.5, 4.5, 300)])
    oof = y + rng.normal(0, [8.0, 0.4], size=y.shape)
    fold = np.arange(300) % 5
    iv = fit_cross_conformal(tasks, y, oof, fold, level=0.9)
    y_test = np.column_stack([rng.uniform(10, 90, 80), rng.uniform(1.5, 4.5, 80)])
    y_test[:20, 1] = np.nan
    pred_test = y_test + rng.normal(0, [12.0, 0.4], size=y_test.shape)  # a worse test model
    measure(iv, tasks, y_test, pred_test)
    pooled = iv.heldout_coverage()
    for i, task in enumerate(tasks):
        r = np.abs(y[:, i] - oof[:, i])
        cv_hits = sum(int((r[fold == k] <= conformal_quantile(r[fold != k], 0.9)).sum()) for k in range(5))
        ok = np.isfinite(y_test[:, i])
        lo, hi = iv.bounds(task, pred_test[ok, i])
        test_hits = int(((y_test[ok, i] >= lo) & (y_test[ok, i] <= hi)).sum())
        assert pooled[task] == pytest.approx(((cv_hits + test_hits) / (300 + ok.sum()), 300 + ok.sum()))
    assert pooled["coherence"][1] == 360
    assert pooled["score_streams"][0] < iv.cv_coverage["score_streams"]  # the worse test model shows
    written = iv.to_dict()
    assert written["coverage_heldout"]["coherence"] == pytest.approx(pooled["coherence"][0])
    assert written["n_heldout"] == {"score_streams": 380, "coherence": 360}


def test_held_out_coverage_of_split_conformal_is_the_test_split():
    from apexmusic.trust import fit_intervals, measure

    rng = np.random.default_rng(9)
    y = rng.uniform(1, 5, (120, 1))
    iv = fit_intervals(("clarity",), y[:60], y[:60] + rng.normal(0, 0.3, (60, 1)))
    measure(iv, ("clarity",), y[60:], y[60:] + rng.normal(0, 0.3, (60, 1)))
    assert iv.heldout_coverage() == {"clarity": (iv.coverage["clarity"], 60)}


# ---- domain ----------------------------------------------------------------------------------


def test_domain_distance_is_shrinkage_mahalanobis_and_holds_the_false_alarm_rate():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(2)
    dim = 24
    mix = rng.normal(size=(dim, dim)) / np.sqrt(dim) + np.eye(dim)
    draw = lambda n: rng.normal(size=(n, dim)) @ mix  # noqa: E731
    train_x, cal_x, new_x = draw(300), draw(400), draw(3000)
    domain = fit_domain(train_x, cal_x, false_alarm_rate=0.05)
    expected = np.sqrt(LedoitWolf().fit(train_x).mahalanobis(new_x[:5]) / dim)
    np.testing.assert_allclose(domain.distance(new_x[:5]), expected, rtol=1e-8)
    assert 0.0 < domain.shrinkage < 1.0 and domain.false_alarm_bound <= 0.05
    flagged = ~domain.in_domain(domain.distance(new_x))
    assert 0.02 < flagged.mean() < 0.08  # the stated 5 %, within sampling error
    # Songs unlike the training inputs: the same law along a direction it never varied in.
    shifted = draw(500) + 2.5 * np.linalg.svd(mix)[2][-1] * np.sqrt(dim) / 4
    assert (~domain.in_domain(domain.distance(shifted))).mean() > 0.9


def test_domain_threshold_rests_on_cross_fitted_training_distances():
    rng = np.random.default_rng(3)
    # No validation songs: each training song's distance under a fit on the other folds.
    domain = fit_domain(rng.normal(size=(600, 8)), np.zeros((0, 8)), false_alarm_rate=0.05)
    assert domain.n_calibration == 600
    flagged = ~domain.in_domain(domain.distance(rng.normal(size=(4000, 8))))
    assert 0.025 < flagged.mean() < 0.07
    # Too few songs for the rate: the largest calibration distance, and the weaker bound stated.
    cal = rng.normal(size=(9, 5))
    small = fit_domain(rng.normal(size=(6, 5)), cal, false_alarm_rate=0.01)
    assert small.threshold == small.distance(cal).max() and small.false_alarm_bound == pytest.approx(1 / 10)
    none = fit_domain(rng.normal(size=(4, 5)), np.zeros((0, 5)))
    assert none.threshold is None and none.in_domain(np.array([1.0])) is None


# ---- basis -----------------------------------------------------------------------------------


def test_tasks_below_the_minimum_are_not_served_unless_allowed():
    counts = {
        "train": {"score_streams": 0, "coherence": 200, "clarity": 12},
        "val": {"score_streams": 0, "coherence": 30, "clarity": 3},
        "test": {"score_streams": 0, "coherence": 30, "clarity": 3},
    }
    sizes = {"train": 200, "val": 30, "test": 30}
    tasks = ("score_streams", "coherence", "clarity")
    basis = build_basis(tasks, counts, sizes, {"coherence": {"spearman": 0.5, "mae": float("nan")}})
    assert basis.served() == ("coherence",)
    assert basis.tasks["coherence"].metrics == {"spearman": 0.5, "mae": None}
    assert set(basis.reasons()) == {"score_streams", "clarity"}
    small = build_basis(tasks, counts, sizes, None, allow_small=True)
    assert small.served() == ("coherence", "clarity") and small.status("clarity") == "below_minimum"


def test_check_split_refuses_in_one_line_and_allow_small_overrides():
    with pytest.raises(ConfigError) as err:
        check_split({"train": 5, "val": 1, "test": 1}, {"coherence": 5})
    assert "\n" not in str(err.value) and "--allow-small" in str(err.value)
    with pytest.raises(ConfigError, match="no task"):
        check_split({"train": 100, "val": 20, "test": 20}, {"coherence": 10, "clarity": 0})
    check_split({"train": 5, "val": 1, "test": 1}, {"coherence": 5}, allow_small=True)
    check_split({"train": 30, "val": 10, "test": 10}, {"coherence": 30})


# ---- training writes it; a model directory reads it back ---------------------------------------


@pytest.fixture(scope="module")
def no_popularity(tmp_path_factory):
    """A store of 400 songs whose labels file has only the five aesthetic columns."""
    root = tmp_path_factory.mktemp("trust")
    songs, targets, creators, created = simulate(n=400, n_layers=2, dim=16, seed=1)
    store = write_store(root / "store", songs, 2, 16)
    drop = np.zeros(targets.shape, bool)
    drop[:, :2] = True
    labels = write_plain_labels(root / "labels.csv", [s.id for s in songs], targets, creators, created, drop)
    dataset = join_labels(EmbeddingStore(store).load(), load_labels(labels))
    return root, store, labels, dataset


def test_training_records_basis_intervals_and_domain_and_they_round_trip(no_popularity, tmp_path):
    _, _, _, dataset = no_popularity
    result = train(dataset, TrainConfig(val_fraction=0.2, test_fraction=0.2, **FAST))
    trust = result.trust
    assert trust.served() == ALL_TASKS[2:]
    for task in POPULARITY_TASKS:
        assert trust.basis.tasks[task].n_train == 0 and trust.basis.status(task) == "not_served"
    # Coverage at 90 % on 80 test songs: binomial sd ≈ 3.4 points.
    for task in ALL_TASKS[2:]:
        assert trust.intervals.n_calibration[task] == len(result.split.val)
        assert 0.78 <= trust.intervals.coverage[task] <= 1.0, (task, trust.intervals.coverage[task])
    assert trust.domain.measured["n"] == len(result.split.test) and trust.domain.measured["rate"] <= 0.08

    model_dir = save_training_outputs(result, tmp_path / "model")
    assert (model_dir / TRUST_JSON).is_file() and (model_dir / TRUST_ARRAYS).is_file()
    modes = {p.name: p.stat().st_mode & 0o777 for p in model_dir.iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1, f"model files differ in mode: {modes}"
    saved = json.loads((model_dir / TRUST_JSON).read_text())
    assert saved["basis"]["status"]["score_streams"] == "not_served"
    again = ModelDir(model_dir).trust(model_id=result.model.model_id)
    assert again.summary() == trust.summary() and again.model_id == result.model.model_id
    with pytest.raises(ModelLoadError, match="fitted for model"):
        load_trust(model_dir, model_id="other-weights")
    np.testing.assert_array_equal(again.domain.precision, trust.domain.precision)

    song = dataset.store.layers[result.split.test[:1]]
    scores = result.model.predict_layers(song)
    row = again.annotate({t: v[0] for t, v in scores.items()}, head_inputs(result.model, song)[0])
    assert row["scores"]["score_streams"] is None and row["scores"]["coherence"] is not None
    assert set(row["intervals"]) == set(ALL_TASKS[2:])
    lo, hi = row["intervals"]["coherence"]["lo"], row["intervals"]["coherence"]["hi"]
    assert 1.0 <= lo <= row["scores"]["coherence"] <= hi <= 5.0
    assert isinstance(row["in_domain"], bool) and row["domain_distance"] > 0
    flat = again.row_fields({t: v[0] for t, v in scores.items()}, head_inputs(result.model, song)[0])
    assert flat["score_likes"] is None and flat["score_likes_lo"] is None and flat["interval_level"] == 0.9
    assert (flat["coherence_lo"], flat["coherence_hi"]) == (lo, hi) and flat["in_domain"] == row["in_domain"]
    far = head_inputs(result.model, song * 0 + 25.0)  # nothing like the training songs
    assert not again.annotate({}, far[0])["in_domain"]


def test_cli_train_refuses_a_tiny_split_and_allow_small_is_recorded(no_popularity, tmp_path, capsys):
    root, store, _, _ = no_popularity
    songs, targets, creators, created = simulate(n=12, n_layers=2, dim=16, seed=1)
    labels = write_plain_labels(root / "tiny.csv", [s.id for s in songs], targets, creators, created)
    args = ["train", "--embeddings", str(store), "--labels", str(labels), "--epochs", "2", "--n-boot", "0"]
    assert main([*args, "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "too few songs" in err[-1] and "--allow-small" in err[-1]
    assert main([*args, "--out", str(tmp_path / "m"), "--allow-small", "--device", "cpu"]) == 0
    saved = json.loads((tmp_path / "m" / TRUST_JSON).read_text())
    assert saved["basis"]["allow_small"] is True
    assert json.loads((tmp_path / "m" / "config.json").read_text())["training"]["allow_small"] is True
    assert "small splits: allowed (--allow-small)" in (tmp_path / "m" / "README.md").read_text()

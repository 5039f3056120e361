"""A small end-to-end demo run through the CLI: it learns, it beats a mean predictor, the arena
numbers come with intervals, and every artefact (model, comparator, summary, report) is usable."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from apexmusic.cli import main
from apexmusic.tasks import AESTHETIC_TASKS, ALL_TASKS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    code = main(["-q", "demo", "--out", str(out)])  # the demo a user runs: its defaults, 600 songs
    assert code == 0
    return out


@pytest.fixture(scope="module")
def summary(demo_dir):
    return json.loads((demo_dir / "summary.json").read_text())


def test_demo_learns_every_aesthetic_dimension_on_held_out_songs(summary):
    rho = summary["headline"]["test_spearman"]
    for task in AESTHETIC_TASKS:
        assert rho[task] > 0.35, (task, rho[task])
    ci = summary["headline"]["test_spearman_ci"]
    assert all(ci[t][0] > 0 for t in AESTHETIC_TASKS)  # the interval excludes zero


def test_demo_beats_a_mean_predictor(summary):
    skill = summary["headline"]["test_skill_vs_mean_predictor"]
    assert all(skill[t] > 0.1 for t in AESTHETIC_TASKS), skill
    base = summary["evaluation"]["test_songs"]["mean_predictor"]
    for t in AESTHETIC_TASKS:
        assert base[t]["mse_model"] < base[t]["mse_mean_predictor"]
    assert np.mean([skill[t] for t in ALL_TASKS]) > 0.1


def test_demo_reports_held_out_styles_and_popularity_ablation(summary):
    held = summary["evaluation"]["heldout_styles"]
    assert held["n"] > 0 and set(held["styles"]) == set(summary["corpus"]["heldout_styles"])
    assert np.mean([held["multi_task"][t]["spearman"] for t in AESTHETIC_TASKS]) > 0.2
    pop_only = summary["evaluation"]["test_songs"]["popularity_only"]
    assert set(pop_only) == {"score_streams", "score_likes"}
    assert len(summary["evaluation"]["per_style_spearman"]) == 8


def test_demo_arena_accuracy_comes_with_intervals(summary):
    arena = summary["arena"]
    assert arena["matched"] == arena["n_battles"] > 0
    for name in ("apex_popularity_z", "apex_aesthetics_z", "apex_all_z"):
        rule = arena["rules"][name]
        lo, hi = rule["accuracy_ci"]
        assert 0.0 <= lo <= rule["accuracy"] <= hi <= 1.0
    learned = summary["headline"]["arena_learned_auc"]
    assert {"popularity", "popularity+aesthetics"} <= set(learned)
    assert 0.5 < summary["headline"]["arena_hidden_preference_accuracy"] <= 1.0


def test_demo_model_directory_and_comparator_are_usable(demo_dir):
    from apexmusic.arena import PreferenceComparator
    from apexmusic.model import ScoringModel
    from apexmusic.store import EmbeddingStore

    model = ScoringModel.from_pretrained(demo_dir / "model")
    assert model.tasks == ALL_TASKS
    store_dir = next((demo_dir / "embeddings").iterdir())
    data = EmbeddingStore.open(store_dir).load()
    scores = model.predict_layers(data.layers[:5])
    assert all(1.0 <= v <= 5.0 for t in AESTHETIC_TASKS for v in scores[t])
    comparator = PreferenceComparator.load(demo_dir / "model" / "comparator.json")
    a = {t: float(scores[t][0]) for t in ALL_TASKS}
    b = {t: float(scores[t][1]) for t in ALL_TASKS}
    assert comparator.prob_a_wins(a, b) == pytest.approx(1 - comparator.prob_a_wins(b, a))


def test_demo_model_scores_a_song_through_predict(demo_dir, tmp_path, capsys):
    song = next((demo_dir / "corpus" / "audio").rglob("*.mp3"))
    out = tmp_path / "scores.jsonl"
    assert main(["-q", "predict", str(song), "--model", str(demo_dir / "model"), "--out", str(out)]) == 0
    row = json.loads(out.read_text().splitlines()[0])
    assert all(1.0 <= row[t] <= 5.0 for t in AESTHETIC_TASKS) and 0.0 <= row["score_streams"] <= 100.0
    # provenance travels with every row and the summary says it plainly
    model_id = json.loads((demo_dir / "model" / "config.json").read_text())["model_id"]
    assert row["simulated_training_data"] is True and row["model_id"] == model_id
    assert row["score_streams_lo"] <= row["score_streams"] <= row["score_streams_hi"]
    printed = capsys.readouterr().out
    assert f"model {model_id}: trained on simulated songs — not predictions for real music" in printed


def test_demo_provenance_on_the_card_the_api_and_the_page(demo_dir, tmp_path):
    from test_web import CHROMIUM, CHROMIUM_ARGS

    from apexmusic.predict import Predictor
    from apexmusic.serve import ServeConfig, background_server, create_app

    config = json.loads((demo_dir / "model" / "config.json").read_text())
    assert config["provenance"]["simulated"] is True and "/" not in config["provenance"]["labels"]
    card = (demo_dir / "model" / "README.md").read_text()
    top = card.split("## Model")[0]
    assert "TRAINED ON SIMULATED SONGS — NOT PREDICTIONS FOR REAL MUSIC" in top and "simulated: true" in top
    predictor = Predictor.from_pretrained(demo_dir / "model", mc_samples=0)
    api = predictor.card()
    assert api["provenance"]["simulated"] is True and str(demo_dir) not in json.dumps(api)
    from playwright.sync_api import sync_playwright

    with (
        background_server(create_app(predictor=predictor, config=ServeConfig())) as url,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#provenance.simulated")
        assert "Trained on simulated songs — not predictions for real music" in page.inner_text("#provenance")
        browser.close()


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.headings: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


def test_demo_report_is_self_contained_with_its_pictures(demo_dir):
    page = (demo_dir / "report.html").read_text()
    parser = _Images()
    parser.feed(page)
    assert len(parser.images) >= 8
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for heading in (
        "Predicted vs true",
        "Training curves",
        "Popularity-only vs multi-task",
        "Arena: pairwise preferences",
        "Per-style breakdown",
        "Scores you can trust",
    ):
        assert heading in parser.headings
    assert "http://" not in page and "https://" not in page  # no external assets
    assert "not</b> predictions for real songs" in page
    assert "coverage, out of fold" in page and "cross-conformal" in page
    assert "coverage, all held-out songs" in page


def test_demo_model_flags_real_songs_and_keeps_simulated_ones_in_domain(demo_dir, summary, tmp_path):
    from apexmusic.embed import EmbedConfig, embed_inputs
    from apexmusic.model import ScoringModel
    from apexmusic.sources import resolve_inputs
    from apexmusic.store import EmbeddingStore
    from apexmusic.trust import head_inputs, load_trust

    trust = load_trust(demo_dir / "model")
    assert trust.served() == ALL_TASKS
    intervals = summary["trust"]["intervals"]
    assert "cross-conformal" in intervals["method"] and set(intervals["n_cv"].values()) == {len_pool(summary)}
    n_test = summary["training"]["multi_task"]["split_sizes"]["test"]
    # Every held-out song: the test split, and each training/validation song out of fold. At
    # 375 songs a calibrated 90 % interval's coverage has a binomial sd of 1.5 points.
    assert set(intervals["n_heldout"].values()) == {len_pool(summary) + n_test}
    assert all(0.85 <= c <= 0.95 for c in intervals["coverage_heldout"].values()), intervals
    assert all(0.7 <= c <= 1.0 for c in intervals["coverage_test"].values()), intervals  # 75 songs: sd 3.5
    assert trust.domain.measured["rate"] <= 0.05
    real_dir = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real-audio"
    embed_inputs(resolve_inputs([str(real_dir)]), tmp_path / "real", EmbedConfig(encoder="handcrafted"))
    real = EmbeddingStore.open(tmp_path / "real").load()
    model = ScoringModel.from_pretrained(demo_dir / "model")
    flags = trust.domain.in_domain(trust.domain.distance(head_inputs(model, real.layers)))
    assert len(flags) == 7 and (~flags).sum() >= 6, dict(zip(real.ids, flags, strict=True))


def len_pool(summary) -> int:
    sizes = summary["training"]["multi_task"]["split_sizes"]
    return sizes["train"] + sizes["val"]


def test_encoder_comparison_uses_paired_bootstrap_on_the_same_songs(tmp_path):
    import csv

    from scipy.stats import spearmanr

    from apexmusic.demo.summary import _paired_difference
    from apexmusic.metrics import rowwise_spearman

    rng = np.random.default_rng(1)
    y = rng.normal(size=(4, 30))
    p = y + rng.normal(size=y.shape)
    np.testing.assert_allclose(
        rowwise_spearman(y, p), [spearmanr(a, b)[0] for a, b in zip(y, p, strict=True)]
    )

    n = 120
    truth = rng.normal(size=(n, len(ALL_TASKS)))
    noise = {"weak": 2.0, "strong": 0.3}
    for name, sd in noise.items():
        (tmp_path / name).mkdir()
        with (tmp_path / name / "predictions.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "group", *[f"true_{t}" for t in ALL_TASKS], *[f"pred_{t}" for t in ALL_TASKS]])
            pred = truth + rng.normal(size=truth.shape) * sd
            for i in range(n):
                w.writerow([f"s{i}", "test" if i % 2 else "heldout_style", *truth[i], *pred[i]])
    diff = _paired_difference(
        tmp_path / "weak" / "predictions.csv", tmp_path / "strong" / "predictions.csv", 300
    )
    for group in ("test", "heldout_style"):
        d = diff[group]["aesthetic_mean"]
        assert diff[group]["n"] == 60
        assert d["ci"][0] > 0 and d["ci"][0] <= d["difference"] <= d["ci"][1]


def test_every_demo_report_figure_fits_its_labels_and_legends(demo_dir, tmp_path, monkeypatch):
    """The figures as the demo report shows them: no clipped label, no legend over a bar, no
    text under 8 pt (checked on the drawn figure, at the size the page shows it)."""
    from _figures import layout_problems, report_figures

    figures = report_figures(demo_dir, tmp_path / "report.html", monkeypatch)
    assert len(figures) >= 7  # scatter, metric bars x2, mean predictor, ablation, training, arena, styles
    assert [p for fig in figures for p in layout_problems(fig)] == []


def test_demo_prints_the_held_out_coverage(summary):
    from apexmusic.cli.demo import _demo_trust_lines

    line = _demo_trust_lines(summary["trust"])[0]
    held = summary["trust"]["intervals"]["coverage_heldout"].values()
    n = len_pool(summary) + summary["training"]["multi_task"]["split_sizes"]["test"]
    figure = f"{100 * min(held):.1f}-{100 * max(held):.1f}%"
    assert line.startswith(f"90% intervals cover {figure} of {n} held-out songs per task")

"""Trust fields reach every output: a model trained without popularity labels serves null
popularity in the Python API, the CLI's JSONL / CSV / Parquet rows (audio and store scoring) and
the service; every row carries intervals at the stated level, the domain alarm and the model id;
``/v1/model`` carries provenance and the trust summary without server paths."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from predict_fixtures import SHORT_SONGS

from apexmusic.cli import main
from apexmusic.model import ModelDir
from apexmusic.predict import Predictor
from apexmusic.tasks import AESTHETIC_TASKS, POPULARITY_TASKS, TASKS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OTHER_SONG = "acestep_female_pop.opus"  # not among the songs the training vectors were jittered from


@pytest.fixture(scope="module")
def trusted(aesthetics_only_model: Path) -> Predictor:
    return Predictor.from_pretrained(aesthetics_only_model, mc_samples=4)


def _check_row(row: dict, model_id: str, level: float, null=None) -> None:
    for task in POPULARITY_TASKS:
        assert row[task] is null and row[f"{task}_lo"] is null and row[f"{task}_hi"] is null, row
    for task in AESTHETIC_TASKS:
        lo, value, hi = float(row[f"{task}_lo"]), float(row[task]), float(row[f"{task}_hi"])
        assert TASKS[task].low <= lo <= value <= hi <= TASKS[task].high and hi > lo, (task, row)
    assert float(row["interval_level"]) == level and float(row["domain_distance"]) > 0
    assert str(row["in_domain"]).lower() in ("true", "false") and row["model_id"] == model_id


def test_python_api_serves_null_popularity_with_intervals_and_the_alarm(
    trusted, aesthetics_only_model, shared_data
):
    trust = ModelDir(aesthetics_only_model).trust()
    assert trust.served() == AESTHETIC_TASKS
    preds = trusted.predict(
        [shared_data / "real-audio" / SHORT_SONGS[0], shared_data / "real-audio" / OTHER_SONG]
    )
    for pred in preds:
        assert all(pred.scores[t] is None and pred.uncertainty[t] is None for t in POPULARITY_TASKS)
        assert set(pred.intervals) == set(AESTHETIC_TASKS) and pred.interval_level == 0.9
        assert all(seg.scores["score_likes"] is None for seg in pred.timeline)
        assert pred.simulated_training_data is False and pred.model_id == trusted.model_id
        # the intervals are the stored half-widths around the score, clipped to the range
        q = trust.intervals.half_width["coherence"]
        v = pred.scores["coherence"]
        assert pred.intervals["coherence"]["lo"] == pytest.approx(max(1.0, v - q))
        assert pred.intervals["coherence"]["hi"] == pytest.approx(min(5.0, v + q))
    near, far = preds
    assert near.in_domain is True and far.in_domain is False  # trained around the first, never the other
    assert far.domain_distance > trust.domain.threshold >= near.domain_distance
    assert trusted.compare(*[shared_data / "real-audio" / s for s in SHORT_SONGS[:2]]).prob_a is not None


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_cli_rows_leave_untrained_tasks_empty(suffix, aesthetics_only_model, shared_data, tmp_path, capsys):
    model_id = json.loads((aesthetics_only_model / "config.json").read_text())["model_id"]
    songs = [str(shared_data / "real-audio" / s) for s in (SHORT_SONGS[0], OTHER_SONG)]
    out = tmp_path / f"scores{suffix}"
    assert (
        main(
            ["predict", *songs, "--model", str(aesthetics_only_model), "--out", str(out), "--mc-samples", "2"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "1 of 2 songs are unlike the training data" in printed
    assert (
        f"model {model_id}: trained on" in printed
        and "not trained (empty in the output): score_streams" in printed
    )
    if suffix == ".jsonl":
        rows, null = [json.loads(line) for line in out.read_text().splitlines()], None
    elif suffix == ".csv":
        rows, null = list(csv.DictReader(out.open())), ""
    else:
        table = pq.read_table(out)
        assert str(table.schema.field("score_streams").type) == "double"
        rows, null = table.to_pylist(), None
    assert len(rows) == 2
    for row in rows:
        _check_row(row, model_id, 0.9, null)
        assert str(row["simulated_training_data"]).lower() == "false" and row["score_streams_std"] in (
            None,
            "",
        )
    flags = {Path(r["path"]).name: str(r["in_domain"]).lower() for r in rows}
    assert flags == {SHORT_SONGS[0]: "true", OTHER_SONG: "false"}


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_store_scoring_carries_the_same_trust_fields(
    suffix, aesthetics_only_model, trusted, tmp_path, capsys
):
    store = aesthetics_only_model.parent / "real-store"
    out = tmp_path / f"store{suffix}"
    assert (
        main(
            ["predict", "--embeddings", str(store), "--model", str(aesthetics_only_model), "--out", str(out)]
        )
        == 0
    )
    assert "of 3 songs are unlike the training data" in capsys.readouterr().out
    if suffix == ".jsonl":
        rows, null = [json.loads(line) for line in out.read_text().splitlines()], None
    elif suffix == ".csv":
        rows, null = list(csv.DictReader(out.open())), ""
    else:
        rows, null = pq.read_table(out).to_pylist(), None
    by_id = {r["id"]: r for r in rows}
    from apexmusic.store import EmbeddingStore, SongEmbedding

    data = EmbeddingStore.open(store).load(with_segments=True)
    songs = [
        SongEmbedding(i, "", "0" * 64, 60.0, layers, segments, weights)
        for i, layers, segments, weights in zip(
            data.ids, data.layers, data.segments, data.segment_weights, strict=True
        )
    ]
    expected = trusted.score_embeddings(songs)
    for pred in expected:
        row = by_id[pred.id]
        _check_row(row, trusted.model_id, 0.9, null)
        for task in AESTHETIC_TASKS:  # the same numbers as the audio path's
            assert float(row[task]) == pytest.approx(pred.scores[task], abs=1e-5)
            assert float(row[f"{task}_hi"]) == pytest.approx(pred.intervals[task]["hi"], abs=1e-5)
        assert float(row["domain_distance"]) == pytest.approx(pred.domain_distance, rel=1e-5)


def test_service_returns_null_popularity_and_provenance_without_paths(
    trusted, aesthetics_only_model, shared_data
):
    from fastapi.testclient import TestClient

    from apexmusic.serve import ServeConfig, create_app

    song = shared_data / "real-audio" / OTHER_SONG
    with TestClient(create_app(predictor=trusted, config=ServeConfig())) as client:
        body = client.post("/v1/predict", files={"file": (song.name, song.read_bytes())}).json()
        card = client.get("/v1/model").json()
    assert all(body["scores"][t] is None for t in POPULARITY_TASKS) and body["in_domain"] is False
    assert set(body["intervals"]) == set(AESTHETIC_TASKS) and body["interval_level"] == 0.9
    assert body["domain_distance"] > 0 and body["simulated_training_data"] is False
    assert card["provenance"] == {
        "labels": "labels.csv (plain)",
        "simulated": False,
        "songs": 240,
        "notice": "trained on 240 songs, labels from labels.csv (plain)",
    }
    assert card["served_tasks"] == list(AESTHETIC_TASKS)
    assert card["trust"]["basis"]["status"]["score_streams"] == "not_served"
    assert card["trust"]["intervals"]["level"] == 0.9 and card["trust"]["domain"]["threshold"] > 0
    text = json.dumps(card)
    assert str(aesthetics_only_model.parent) not in text and "/tmp" not in text


def test_model_card_states_status_intervals_alarm_and_provenance(aesthetics_only_model):
    card = (aesthetics_only_model / "README.md").read_text()
    head = card.split("## Model")[0]
    assert "Provenance: trained on 240 songs, labels from labels.csv (plain)" in head
    assert "simulated: false" in head and "/tmp" not in card
    trust = ModelDir(aesthetics_only_model).trust()
    assert "| score_streams | not trained | 0 / 0 / 0 |" in card
    cov = trust.intervals.coverage["coherence"]
    assert f"| coherence | served | {trust.basis.tasks['coherence'].n_train} / " in card
    assert f"{cov:.0%} of {trust.intervals.n_test['coherence']}" in card
    assert "Intervals at 90%: split-conformal, absolute residuals, fitted on the validation split" in card
    measured = trust.domain.measured
    assert f"above {trust.domain.threshold:.3g}" in card and f"{measured['rate']:.1%}" in card
    assert np.isfinite(trust.domain.threshold)


def test_cli_compare_says_not_trained_and_flags_the_unlike_song(aesthetics_only_model, shared_data, capsys):
    a, b = shared_data / "real-audio" / SHORT_SONGS[0], shared_data / "real-audio" / OTHER_SONG
    assert main(["compare", str(a), str(b), "--model", str(aesthetics_only_model)]) == 0
    out = capsys.readouterr().out
    assert "score_streams " in out and out.count("not trained") == 4  # two tasks, two songs
    assert f"song {b.name} is unlike the training data" in out and f"song {a.name} is unlike" not in out

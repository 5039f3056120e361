"""The inference pooling rule: one function, the same song scores on every scoring path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from predict_fixtures import pooled_segment_scores

from apexmusic.cli import main
from apexmusic.errors import ConfigError
from apexmusic.model import ModelDir, ScoringModel, score_songs, weighted_song_mean
from apexmusic.store import EmbeddingStore
from apexmusic.tasks import TASKS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tolerances(model: ScoringModel) -> np.ndarray:
    return np.array([1e-4 * TASKS[t].span for t in model.tasks])


def _rows(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def _assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], tol: np.ndarray, where: str):
    assert sorted(got) == sorted(want), where
    for song_id, scores in want.items():
        diff = np.abs(np.asarray(got[song_id], np.float64) - scores)
        assert (diff <= tol).all(), (where, song_id, diff / tol)


@pytest.mark.slow  # five scoring paths, ~16 s on 2 busy cores
def test_a_segment_mode_model_scores_alike_on_every_path(segment_model_setup, tmp_path):
    from fastapi.testclient import TestClient

    from apexmusic.data import load_dataset
    from apexmusic.serve import ServeConfig, create_app
    from apexmusic.train import predict_dataset

    paths, store, model_dir = segment_model_setup
    model = ScoringModel.from_pretrained(model_dir)
    assert model.pooling == "segment"
    tol = _tolerances(model)
    want = pooled_segment_scores(model, store)

    # The rule matters here: the song vector alone scores measurably differently.
    data = EmbeddingStore.open(store).load(with_segments=True)
    as_song = model.predict_layers(data.layers)
    song_vector = np.stack([as_song[t] for t in model.tasks], 1)
    apart = max((np.abs(song_vector[i] - want[s]) / tol).max() for i, s in enumerate(data.ids))
    assert apart > 20

    # evaluate
    labels = tmp_path / "labels.csv"
    labels.write_text("id,coherence\n" + "".join(f"{Path(p).stem},3.0\n" for p in paths))
    dataset = load_dataset(store, labels, model.tasks, "plain", with_segments=True)
    pred = predict_dataset(model, dataset)
    _assert_close(dict(zip(dataset.labels.ids, pred, strict=True)), want, tol, "evaluate")

    # predict --embeddings
    scored = tmp_path / "s.jsonl"
    assert main(["predict", "--embeddings", str(store), "--model", str(model_dir), "--out", str(scored)]) == 0
    rows = _rows(scored)
    _assert_close(
        {k: [r[t] for t in model.tasks] for k, r in rows.items()}, want, tol, "predict --embeddings"
    )

    # predict from audio
    out = tmp_path / "a.jsonl"
    assert main(["predict", *paths, "--model", str(model_dir), "--out", str(out), "--mc-samples", "2"]) == 0
    rows = _rows(out)
    _assert_close({k: [r[t] for t in model.tasks] for k, r in rows.items()}, want, tol, "predict")
    assert all(r[f"{t}_std"] > 0 for r in rows.values() for t in model.tasks)

    # serve
    app = create_app(model_dir=model_dir, config=ServeConfig(mc_samples=0, max_seconds=300))
    served = {}
    with TestClient(app) as client:
        for p in paths:
            r = client.post("/v1/predict", files={"file": (Path(p).name, Path(p).read_bytes(), "audio/ogg")})
            assert r.status_code == 200, r.text
            body = r.json()
            served[body["id"]] = [body["scores"][t] for t in model.tasks]
            timeline = np.array([[seg["scores"][t] for t in model.tasks] for seg in body["timeline"]])
            assert len(timeline) == len(data.segments[data.ids.index(body["id"])])
    _assert_close(served, want, tol, "serve")


def test_weighted_song_mean_equals_a_plain_loop():
    rng = np.random.default_rng(0)
    rows, weights = rng.normal(size=(9, 3)), rng.uniform(0.1, 2.0, 9)
    song_of = np.array([0, 0, 1, 2, 2, 2, 0, 1, 2])
    got = weighted_song_mean(rows, song_of, weights, 4)
    for s in range(3):
        m = song_of == s
        np.testing.assert_allclose(got[s], (rows[m] * weights[m, None]).sum(0) / weights[m].sum())
    np.testing.assert_array_equal(got[3], 0.0)  # a song with no rows stays at zero, never NaN


def test_a_segment_mode_model_refuses_song_vectors_alone(segment_model_setup):
    _, store, model_dir = segment_model_setup
    model = ModelDir(model_dir).load()
    data = EmbeddingStore.open(store).load()  # no segments loaded
    with pytest.raises(ConfigError, match="segment"):
        score_songs(model, data.layers)
    song_mode = ScoringModel(net=model.net, encoder_spec=model.encoder_spec, training={"mode": "song"})
    direct = song_mode.predict_layers(data.layers)
    np.testing.assert_allclose(score_songs(song_mode, data.layers).songs[:, 0], direct[song_mode.tasks[0]])

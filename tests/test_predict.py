"""Predictor API, batch CLI (resume, failure log, formats), compare, and store scoring."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from apexmusic.cli import main
from apexmusic.errors import AudioDecodeError, ConfigError
from apexmusic.predict import (
    Predictor,
    compare_scores,
    failures_path,
    predict_inputs,
    score_store,
)
from apexmusic.sources import Song, read_rows
from apexmusic.store import EmbeddingStore, SongEmbedding
from apexmusic.tasks import ALL_TASKS, TASKS

HIPHOP = "acestep_hiphop_rap_shirt_song.opus"
JAZZ = "acestep_saxphone_jazz.opus"


@pytest.fixture(scope="module")
def audio_dir(shared_data: Path) -> Path:
    return shared_data / "real-audio"


@pytest.fixture(scope="module")
def hiphop_prediction(predictor: Predictor, audio_dir: Path):
    return predictor.predict(audio_dir / HIPHOP)[0]


@pytest.fixture(scope="module")
def clips(audio_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """12 s WAV excerpts of two real songs (fast inputs for the resume tests)."""
    import wave

    from apexmusic.audio import decode_mono

    out = {}
    folder = tmp_path_factory.mktemp("clips")
    for name in (HIPHOP, JAZZ):
        audio, sr = decode_mono(audio_dir / name, 22050)[0], 22050
        pcm = (np.clip(audio[5 * sr : 17 * sr], -1, 1) * 32767).astype("<i2")
        path = folder / f"{Path(name).stem}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sr)
            w.writeframes(pcm.tobytes())
        out[name] = path
    return out


@pytest.fixture()
def not_audio(tmp_path: Path) -> Path:
    bad = tmp_path / "notes.mp3"
    bad.write_text("this is a text file, not audio\n" * 50)
    return bad


def _in_range(task: str, value: float) -> bool:
    return TASKS[task].low <= value <= TASKS[task].high


# ---- Predictor ------------------------------------------------------------------------------


def test_prediction_has_scores_uncertainty_and_timeline(hiphop_prediction, predictor):
    p = hiphop_prediction
    assert p.id == Path(HIPHOP).stem and p.path.endswith(HIPHOP)
    assert p.model_id == predictor.model_id
    assert set(p.scores) == set(ALL_TASKS) == set(p.uncertainty)
    assert all(_in_range(t, v) for t, v in p.scores.items())
    assert all(s > 0 for s in p.uncertainty.values())  # MC dropout spread
    assert p.duration_s == pytest.approx(63.53, abs=0.05)
    # 30 s segments back to back: 0-30, 30-60, 60-63.5
    assert [(s.start_s, s.end_s) for s in p.timeline] == [
        (0.0, 30.0),
        (30.0, 60.0),
        (60.0, round(p.duration_s, 3)),
    ]
    for seg in p.timeline:
        assert set(seg.scores) == set(ALL_TASKS)
        assert all(_in_range(t, v) for t, v in seg.scores.items())
    assert p.novelty is not None and 0.0 < p.novelty < 5.0  # a training song: in range
    row = p.to_row()
    assert {"id", "path", "model_id", "duration_s", *ALL_TASKS, *(f"{t}_std" for t in ALL_TASKS)} <= set(row)


def test_scores_equal_the_model_on_the_embedding(hiphop_prediction, predictor, audio_dir):
    """Song and segment scores are the model's outputs on an independently made embedding."""
    emb = predictor.embedder.embed_path(Song("x", str(audio_dir / HIPHOP)))
    song = predictor.model.predict_layers(emb.layers[None], mc_samples=0)
    segs = predictor.model.predict_layers(emb.segments, mc_samples=0)
    for t in ALL_TASKS:
        assert hiphop_prediction.scores[t] == pytest.approx(float(song[t][0]), rel=1e-5)
        got = [s.scores[t] for s in hiphop_prediction.timeline]
        assert got == pytest.approx(segs[t].tolist(), rel=1e-5)
    # segments are scored on their own: the timeline is not a flat line
    assert len({round(s.scores["score_streams"], 4) for s in hiphop_prediction.timeline}) > 1


def test_array_input_matches_file_input(predictor, audio_dir, hiphop_prediction):
    from apexmusic.audio import decode_mono

    sr = predictor.embedder.encoder.sample_rate
    audio, _ = decode_mono(audio_dir / HIPHOP, sr)
    [p] = predictor.predict([(audio, sr)])
    assert p.id == "array-0" and p.path == ""
    assert p.duration_s == pytest.approx(hiphop_prediction.duration_s, abs=0.01)
    for t in ALL_TASKS:
        assert p.scores[t] == pytest.approx(hiphop_prediction.scores[t], abs=1e-3 * TASKS[t].span)


def _fake_song(layers: np.ndarray, sid: str) -> SongEmbedding:
    return SongEmbedding(sid, "", "", 30.0, layers[None], layers[None, None], np.ones(1, np.float32))


def test_uncertainty_is_larger_out_of_range(predictor, predict_model_dir):
    """In-range: the training inputs. Out of range: the same inputs shifted 6 sd, and random
    vectors 10 sd wide. MC-dropout spread and novelty must both be larger out of range."""
    rows = np.load(predict_model_dir.parent / "train_rows.npy")[::7][:24]
    std = rows.std(0)
    rng = np.random.default_rng(0)
    sets = {
        "in": rows,
        "shifted": rows + 6 * std,
        "random": rows.mean(0) + 10 * std * rng.normal(size=rows.shape).astype(np.float32),
    }
    spread, novelty = {}, {}
    for name, x in sets.items():
        preds = predictor.score_embeddings([_fake_song(v, f"{name}{i}") for i, v in enumerate(x)])
        spread[name] = {t: np.mean([p.uncertainty[t] for p in preds]) for t in ALL_TASKS}
        novelty[name] = np.mean([p.novelty for p in preds])
    for name in ("shifted", "random"):
        for t in ALL_TASKS:
            assert spread[name][t] > 1.5 * spread["in"][t], (name, t, spread)
        assert novelty[name] > 4 * novelty["in"]


def test_mc_samples_zero_switches_uncertainty_off(predict_model_dir, hiphop_prediction, audio_dir):
    quiet = Predictor.from_pretrained(predict_model_dir, mc_samples=0)
    [p] = quiet.predict(audio_dir / HIPHOP)
    assert all(v == 0.0 for v in p.uncertainty.values())
    assert p.scores == pytest.approx(hiphop_prediction.scores)  # scores are dropout-free


def test_predict_raises_typed_error_and_iter_predict_keeps_going(predictor, not_audio, audio_dir):
    with pytest.raises(AudioDecodeError):
        predictor.predict(not_audio)
    results = list(predictor.iter_predict([str(not_audio), str(audio_dir / HIPHOP)]))
    kinds = sorted(type(r).__name__ for r in results)
    assert kinds == ["Failure", "Prediction"]
    failure = next(r for r in results if type(r).__name__ == "Failure")
    assert failure.kind == "decode" and failure.path == str(not_audio)


def test_too_long_is_rejected(predict_model_dir, audio_dir):
    from apexmusic.errors import AudioContentError

    short = Predictor.from_pretrained(predict_model_dir, max_seconds=20)
    with pytest.raises(AudioContentError):
        short.predict(audio_dir / HIPHOP)


def test_top_tags_from_encoder_extras(predictor):
    class TaggingEncoder:
        labels = {"tags": ["rock", "jazz", "instrumental", "blues"]}

    class Embedder:
        encoder = TaggingEncoder()
        segment_config = predictor.embedder.segment_config

    tagged = Predictor(predictor.model, Embedder(), mc_samples=0)
    song = _fake_song(np.zeros(predictor.model.config.dim, np.float32), "t")
    song.extras = {"tags": np.array([0.1, 0.7, 0.5, 0.3], np.float32)}
    [p] = tagged.score_embeddings([song])
    assert [t for t, _ in p.tags] == ["jazz", "instrumental", "blues"]
    assert p.tags[0][1] == pytest.approx(0.7)
    assert p.to_row()["tags"] == "jazz=0.700;instrumental=0.500;blues=0.300"
    assert p.to_dict()["tags"][0] == {"tag": "jazz", "prob": pytest.approx(0.7)}


# ---- compare --------------------------------------------------------------------------------


def test_fallback_comparison_is_symmetric_and_matches_its_formula():
    a = {t: TASKS[t].low + 0.7 * TASKS[t].span for t in ALL_TASKS}
    b = {t: TASKS[t].low + 0.4 * TASKS[t].span for t in ALL_TASKS}
    p, method = compare_scores(a, b)
    assert method == "fallback"
    assert p == pytest.approx(1 / (1 + math.exp(-1.2)))  # mean of 0.3 span / (span / 4)
    assert compare_scores(b, a)[0] == pytest.approx(1 - p)
    assert compare_scores(a, a)[0] == pytest.approx(0.5)


def test_compare_uses_comparator_json_when_present(predict_model_dir, tmp_path, audio_dir, capsys):
    from apexmusic.arena import PreferenceComparator
    from apexmusic.model import ModelDir

    model_dir = tmp_path / "model"
    shutil.copytree(predict_model_dir, model_dir)
    comp = PreferenceComparator(
        features=("musicality",), coef=np.array([2.0]), scale=np.array([0.5]), n_train=10
    )
    ModelDir(model_dir).save_comparator(comp)
    code = main(
        ["compare", str(audio_dir / HIPHOP), str(audio_dir / JAZZ), "--model", str(model_dir), "--json"]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "comparator"
    diff = out["a"]["scores"]["musicality"] - out["b"]["scores"]["musicality"]
    assert out["prob_a"] == pytest.approx(1 / (1 + math.exp(-4.0 * diff)))

    code = main(
        ["compare", str(audio_dir / HIPHOP), str(audio_dir / JAZZ), "--model", str(predict_model_dir)]
    )
    text = capsys.readouterr().out
    assert code == 0 and f"P(listeners prefer {HIPHOP} to {JAZZ}) = " in text and "fallback" in text


def test_compare_with_a_bad_file_exits_1(predict_model_dir, audio_dir, not_audio, capsys):
    assert main(["compare", str(audio_dir / HIPHOP), str(not_audio), "--model", str(predict_model_dir)]) == 1
    assert "decode error" in capsys.readouterr().err


# ---- batch CLI ------------------------------------------------------------------------------


def test_cli_predict_real_songs_with_a_bad_file(predict_model_dir, audio_dir, not_audio, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    code = main(
        [
            "predict",
            str(audio_dir / HIPHOP),
            str(not_audio),
            "--model",
            str(predict_model_dir),
            "--out",
            str(out),
        ]
    )
    assert code == 1  # some inputs failed, the rest done
    rows = read_rows(out)
    assert [r["id"] for r in rows] == [Path(HIPHOP).stem]
    row = rows[0]
    assert {"id", "path", "model_id", "duration_s", *ALL_TASKS, *(f"{t}_std" for t in ALL_TASKS)} <= set(row)
    failures = [json.loads(x) for x in failures_path(out).read_text().splitlines()]
    assert [(f["id"], f["kind"]) for f in failures] == [("notes", "decode")]
    assert "1 failed" in capsys.readouterr().out
    # without --resume an existing output is never overwritten
    assert (
        main(["predict", str(audio_dir / HIPHOP), "--model", str(predict_model_dir), "--out", str(out)]) == 2
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_resume_skips_done_ids_and_appends(predictor, predict_model_dir, clips, tmp_path, suffix):
    from apexmusic.predict import PredictConfig

    out = tmp_path / f"scores{suffix}"
    first = [Song("hiphop", str(clips[HIPHOP]))]
    both = first + [Song("jazz", str(clips[JAZZ]))]
    r1 = predict_inputs(first, predict_model_dir, out, PredictConfig(), predictor=predictor)
    assert (r1.n_done, r1.n_skipped) == (1, 0)
    before = read_rows(out)
    if suffix == ".jsonl":  # an interrupted run left half a line behind
        with out.open("a") as f:
            f.write('{"id": "jazz", "score_str')
    r2 = predict_inputs(both, predict_model_dir, out, PredictConfig(resume=True), predictor=predictor)
    assert (r2.n_done, r2.n_skipped, r2.n_failed) == (1, 1, 0)
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ["hiphop", "jazz"]
    assert float(rows[0]["score_streams"]) == pytest.approx(float(before[0]["score_streams"]))
    r3 = predict_inputs(both, predict_model_dir, out, PredictConfig(resume=True), predictor=predictor)
    assert (r3.n_done, r3.n_skipped) == (0, 2)
    assert len(read_rows(out)) == 2


def test_cli_rejects_bad_usage(predict_model_dir, tmp_path):
    model = str(predict_model_dir)
    assert main(["predict", "--model", model, "--out", str(tmp_path / "x.jsonl")]) == 2  # no INPUT
    assert main(["predict", "a.wav", "--model", model, "--out", str(tmp_path / "x.txt")]) == 2  # format
    assert main(["predict", "a.wav", "--model", str(tmp_path), "--out", str(tmp_path / "y.jsonl")]) == 2


# ---- scoring a store ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_score_store_equals_model_on_store_vectors(predict_model_dir, predictor, tmp_path, suffix):
    store_dir = predict_model_dir.parent / "store"
    out = tmp_path / f"store_scores{suffix}"
    argv = ["predict", "--embeddings", str(store_dir), "--model", str(predict_model_dir), "--out", str(out)]
    assert main([*argv, "--full-precision"]) == 0
    rows = {r["id"]: r for r in read_rows(out)}
    data = EmbeddingStore.open(store_dir).load()
    expected = predictor.model.predict_layers(data.layers)
    assert sorted(rows) == sorted(data.ids)
    for i, sid in enumerate(data.ids):
        assert rows[sid]["path"] == data.paths[i]
        for t in ALL_TASKS:
            assert float(rows[sid][t]) == pytest.approx(float(expected[t][i]), rel=1e-6)


def test_store_scores_equal_audio_scores(predict_model_dir, hiphop_prediction, tmp_path):
    """Two routes to one number: re-scoring the stored vectors and scoring the audio file."""
    out = tmp_path / "s.jsonl"
    score_store(predict_model_dir.parent / "store", predict_model_dir, out)
    row = next(r for r in read_rows(out) if r["id"] == Path(HIPHOP).stem)
    for t in ALL_TASKS:
        assert row[t] == pytest.approx(hiphop_prediction.scores[t], rel=1e-5)


def test_score_store_refuses_a_store_embedded_differently(predict_model_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(predict_model_dir, model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["encoder"]["segment_seconds"] = 10.0
    (model_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="segment_seconds"):
        score_store(predict_model_dir.parent / "store", model_dir, tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_store_jsonl_writer_escapes_strings_and_keeps_floats_exact():
    import pyarrow as pa

    from apexmusic.predict import jsonl_lines

    ids = ["plain", 'quote"d', "back\\slash", "new\nline", "ünï"]
    values = np.array([0.1, 53.25123596191406, 1e-7, 3.0, 2.5], np.float32).astype(np.float64)
    for id_column in (ids, pa.array(ids)):
        text = jsonl_lines({"id": id_column, "path": pa.array(["/a"] * 5), "score": values}).decode()
        rows = [json.loads(line) for line in text.splitlines()]
        assert [r["id"] for r in rows] == ids
        assert [r["score"] for r in rows] == values.tolist()


def test_an_unexpected_encoder_crash_is_one_failure_not_the_end_of_the_batch(predictor, audio_dir):
    class CrashOnce:
        def __init__(self, inner):
            self.inner, self.calls = inner, 0
            self.encoder, self.segment_config = inner.encoder, inner.segment_config

        def embed_path(self, song):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("encoder blew up")
            return self.inner.embed_path(song)

    flaky = Predictor(predictor.model, CrashOnce(predictor.embedder), mc_samples=0)
    songs = [Song("first", str(audio_dir / HIPHOP)), Song("second", str(audio_dir / HIPHOP))]
    results = list(flaky.iter_predict(songs))
    assert [type(r).__name__ for r in results] == ["Failure", "Prediction"]
    assert results[0].kind == "error" and "blew up" in results[0].message


@pytest.mark.slow
def test_a_musicnn_model_says_what_the_song_sounds_like(musicnn_wheel, shared_data, tmp_path):
    """End to end with a real pretrained tagger: the top tags equal the original musicnn's."""
    from predict_fixtures import build_store, train_tiny_model

    store = build_store(
        shared_data / "real-audio", tmp_path / "store", "musicnn-msd", str(musicnn_wheel), (JAZZ,)
    )
    model_dir = train_tiny_model(store, tmp_path / "model", steps=30)
    [p] = Predictor.from_pretrained(model_dir, weights=str(musicnn_wheel)).predict(
        shared_data / "real-audio" / JAZZ
    )
    golden = json.loads((shared_data / "musicnn" / "golden_msd_musicnn.json").read_text())["songs"][JAZZ][
        "top5"
    ]
    names = [t for t, _ in p.tags]
    assert names[0] == golden[0] == "jazz"
    assert set(names) <= set(golden)
    assert all(0 < prob < 1 for _, prob in p.tags)
    assert p.to_row()["tags"].startswith("jazz=")


def test_cli_predict_from_a_manifest_keeps_its_ids(predict_model_dir, clips, tmp_path):
    manifest = tmp_path / "songs.csv"
    manifest.write_text(f"id,path\ntrack-1,{clips[HIPHOP]}\ntrack-2,{clips[JAZZ]}\n")
    out = tmp_path / "scores.parquet"
    code = main(
        ["predict", str(manifest), "--model", str(predict_model_dir), "--out", str(out), "--mc-samples", "0"]
    )
    assert code == 0
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ["track-1", "track-2"]
    assert [r["path"] for r in rows] == [str(clips[HIPHOP]), str(clips[JAZZ])]
    assert all(r["score_streams_std"] == 0.0 for r in rows)
    assert not failures_path(out).exists() or failures_path(out).read_text() == ""

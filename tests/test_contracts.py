"""The shared contracts: task names, input resolution and the embedding store round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apexmusic.errors import ConfigError, StoreError
from apexmusic.sources import Song, resolve_inputs
from apexmusic.store import EmbeddingSpec, EmbeddingStore, SongEmbedding
from apexmusic.tasks import ALL_TASKS, TASKS, tasks_for


def test_task_names_match_reference_checkpoint():
    assert ALL_TASKS == (
        "score_streams",
        "score_likes",
        "coherence",
        "musicality",
        "memorability",
        "clarity",
        "naturalness",
    )
    assert TASKS["score_likes"].high == 100 and TASKS["clarity"].low == 1
    assert tasks_for("popularity") == ("score_streams", "score_likes")
    with pytest.raises(ConfigError):
        tasks_for("nope")


def test_resolve_folder_glob_manifest_and_missing(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ["a/x.wav", "a/y.mp3", "z.flac", "notes.txt"]:
        (tmp_path / name).write_bytes(b"0")
    songs = resolve_inputs([str(tmp_path)])
    assert [s.id for s in songs] == ["a/x", "a/y", "z"]
    assert [s.id for s in resolve_inputs([str(tmp_path / "a" / "*.wav")])] == ["x"]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "song-1", "path": "z.flac"}) + "\n")
    (song,) = resolve_inputs([str(manifest)])
    assert song.id == "song-1" and song.path == str(tmp_path / "z.flac")
    # A missing path is kept so the pipeline can report it, not dropped silently.
    assert resolve_inputs([str(tmp_path / "gone.mp3")])[0].id == "gone"


def test_object_store_uris_are_kept_verbatim(tmp_path):
    (song,) = resolve_inputs(["s3://bucket/album/x.mp3"])
    assert song == Song("x", "s3://bucket/album/x.mp3")
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,path\na,s3://bucket/a.flac\nb,local/b.wav\n")
    songs = resolve_inputs([str(manifest)])
    assert [s.path for s in songs] == ["s3://bucket/a.flac", str(tmp_path / "local" / "b.wav")]


def test_duplicate_ids_are_a_config_error(tmp_path):
    for sub in ["a", "b"]:
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "x.wav").write_bytes(b"0")
    with pytest.raises(ConfigError):
        resolve_inputs([str(tmp_path / "a" / "x.wav"), str(tmp_path / "b" / "x.wav")])


def _song(i: int, n_seg: int, rng) -> SongEmbedding:
    segs = rng.standard_normal((n_seg, 3, 4)).astype(np.float32)
    w = np.ones(n_seg, np.float32)
    return SongEmbedding(f"s{i}", f"/x/{i}.wav", "h", 1.5 * n_seg, segs.mean(0), segs, w)


def test_store_round_trip_resume_and_settings_guard(tmp_path):
    rng = np.random.default_rng(0)
    spec = EmbeddingSpec(encoder="t", n_layers=3, dim=4, sample_rate=8)
    store = EmbeddingStore.create(tmp_path, spec)
    songs = [_song(i, i + 1, rng) for i in range(3)]
    store.write(songs[:2])
    store.write(songs[2:])
    assert store.done_ids() == {"s0", "s1", "s2"}
    data = EmbeddingStore.open(tmp_path).load(with_segments=True, ids=["s2", "s0"])
    assert data.ids == ["s2", "s0"]
    np.testing.assert_array_equal(data.layers[0], songs[2].layers)
    np.testing.assert_array_equal(data.segments[1], songs[0].segments)
    with pytest.raises(StoreError):  # rows present, no --resume
        EmbeddingStore.create(tmp_path, spec)
    EmbeddingStore.create(tmp_path, spec, resume=True)
    with pytest.raises(StoreError):  # other settings
        EmbeddingStore.create(tmp_path, spec.with_(dim=5), resume=True)
    assert EmbeddingStore.open(tmp_path).spec() == spec == data.spec


def test_the_public_api_is_importable_from_the_top_without_loading_torch_up_front():
    import subprocess
    import sys

    code = (
        "import sys, apexmusic; assert 'torch' not in sys.modules; "
        "from apexmusic import EmbeddingSpec, EmbeddingStore, ModelDir, Predictor, ScoringModel; "
        "from apexmusic import load_encoder; "
        "from apexmusic.predict import Predictor as P; assert Predictor is P; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
    import apexmusic

    with pytest.raises(AttributeError):
        apexmusic.NotAName  # noqa: B018

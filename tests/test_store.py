"""Store shards describe themselves: every shard carries the embedding spec, reading checks
it against the manifest, and a store that lost its manifest is rebuilt from its shards."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from _audio_files import music_like, write_audio

from apexmusic.cli import main
from apexmusic.embed import EmbedConfig, embed_inputs
from apexmusic.errors import StoreError
from apexmusic.sources import resolve_inputs
from apexmusic.store import (
    MANIFEST,
    EmbeddingSpec,
    EmbeddingStore,
    SongEmbedding,
    repair_manifest,
    shard_spec,
)


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("songs")
    for i, seconds in enumerate((5.0, 3.0, 4.0)):
        write_audio(folder / f"s{i}.wav", music_like(seconds, 22050, seed=i), 22050)
    return resolve_inputs([str(folder)])


def _embed(songs, out, **settings):
    report = embed_inputs(songs, out, EmbedConfig(**{"workers": 0, "segment_seconds": 2.0, **settings}))
    assert report.n_failed == 0
    return EmbeddingStore.open(out)


def _strip_spec(shard) -> None:
    """Rewrite a shard as apexmusic wrote them before shards carried their spec."""
    import pyarrow.parquet as pq

    table = pq.read_table(shard)
    pq.write_table(table.replace_schema_metadata({}), shard)


def test_every_shard_carries_the_manifest_spec(songs, tmp_path):
    store = _embed(songs[:2], tmp_path / "s")
    _embed(songs, tmp_path / "s", resume=True)
    spec = store.spec()
    assert len(store.shards()) == 2
    assert all(shard_spec(shard) == spec for shard in store.shards())
    manifest = json.loads((tmp_path / "s" / MANIFEST).read_text())
    assert EmbeddingSpec.from_dict(manifest) == spec and manifest["config_hash"] == spec.store_key()
    assert spec.segment_seconds == 2.0 and spec.decoder and spec.resampler and spec.version
    assert store.load().spec == spec


def test_a_shard_from_other_settings_is_an_error_naming_the_file(songs, tmp_path):
    store = _embed(songs[:2], tmp_path / "a")
    other = _embed(songs[2:], tmp_path / "b", segment_seconds=1.0)
    stray = shutil.copy(other.shards()[0], tmp_path / "a" / other.shards()[0].name)
    with pytest.raises(StoreError, match=rf"{stray.name}.*segment_seconds: 2.0 vs 1.0"):
        EmbeddingStore.open(tmp_path / "a").load()
    with pytest.raises(StoreError, match=stray.name):
        store.done_ids()


def test_repair_rebuilds_the_manifest_from_the_shards(songs, tmp_path, capsys):
    out = tmp_path / "s"
    before = _embed(songs, out)
    spec, data = before.spec(), before.load(with_segments=True)
    (out / MANIFEST).unlink()
    with pytest.raises(StoreError, match="store repair"):
        EmbeddingStore.open(out)
    assert main(["store", "repair", str(out)]) == 0
    assert "rebuilt" in capsys.readouterr().out
    after = EmbeddingStore.open(out)
    assert after.spec() == spec
    again = after.load(with_segments=True)
    assert again.ids == data.ids
    np.testing.assert_array_equal(again.layers, data.layers)
    assert embed_inputs(songs, out, EmbedConfig(workers=0, segment_seconds=2.0, resume=True)).n_skipped == 3


def test_resuming_without_a_manifest_with_other_segments_is_refused(songs, tmp_path, capsys):
    out = tmp_path / "s"
    _embed(songs[:2], out)
    (out / MANIFEST).unlink()
    folder = str(tmp_path / "songs-in")
    shutil.copytree(songs[0].path.rsplit("/", 1)[0], folder)
    args = ["embed", folder, "--out", str(out), "--resume", "--workers", "0"]
    assert main([*args, "--segment-seconds", "3"]) == 2
    err = capsys.readouterr().err
    [line] = [x for x in err.splitlines() if x.startswith("apexmusic:")]  # beside the progress bar
    assert "other settings" in line and "segment_seconds: 2.0 vs 3.0" in line
    assert "Traceback" not in err and not (out / MANIFEST).exists()
    assert main([*args, "--segment-seconds", "2"]) == 0  # the shards' own settings: resumes
    assert EmbeddingStore.open(out).spec().segment_seconds == 2.0
    assert "2 already done" in capsys.readouterr().out


def test_repair_refuses_shards_that_disagree(songs, tmp_path, capsys):
    out = tmp_path / "a"
    _embed(songs[:2], out)
    other = _embed(songs[2:], tmp_path / "b", segment_seconds=1.0)
    shutil.copy(other.shards()[0], out / other.shards()[0].name)
    (out / MANIFEST).unlink()
    assert main(["store", "repair", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "disagree" in err and other.shards()[0].name in err
    assert not (out / MANIFEST).exists()


def test_shards_without_a_spec_cannot_be_repaired_but_still_read(songs, tmp_path, capsys):
    out = tmp_path / "s"
    store = _embed(songs, out)
    for shard in store.shards():
        _strip_spec(shard)
    assert len(EmbeddingStore.open(out).load()) == 3  # older shards are trusted
    (out / MANIFEST).unlink()
    assert main(["store", "repair", str(out)]) == 2
    err = capsys.readouterr().err
    assert "written before shards recorded their embedding spec" in err and "Traceback" not in err
    with pytest.raises(StoreError, match="cannot rebuild"):
        repair_manifest(out)
    with pytest.raises(StoreError, match="cannot rebuild"):  # nor resumed into blindly
        embed_inputs(songs, out, EmbedConfig(workers=0, segment_seconds=2.0, resume=True))


def test_a_store_from_before_the_spec_resumes_with_the_same_settings(songs, tmp_path):
    out = tmp_path / "s"
    store = _embed(songs[:2], out)
    spec = store.spec()
    legacy = {  # the manifest keys older apexmusic versions wrote
        "encoder": spec.encoder,
        "weights": "none",
        "n_layers": spec.n_layers,
        "dim": spec.dim,
        "sample_rate": spec.sample_rate,
        "segment_seconds": 2.0,
        "hop_seconds": 2.0,
        "compat": None,
        "encoder_settings": dict(spec.encoder_settings),
        "pad_last": False,
        "segment_weighting": "valid_seconds",
        "code_version": "0.0.9",
        "config_hash": "0123456789abcdef",
        "format": 1,
    }
    (out / MANIFEST).write_text(json.dumps(legacy))
    for shard in store.shards():
        _strip_spec(shard)
    with pytest.raises(StoreError, match="other settings"):
        embed_inputs(songs, out, EmbedConfig(workers=0, segment_seconds=1.0, resume=True))
    report = embed_inputs(songs, out, EmbedConfig(workers=0, segment_seconds=2.0, resume=True))
    assert (report.n_done, report.n_skipped) == (1, 2)
    assert EmbeddingStore.open(out).spec() == spec  # the manifest now records the full spec


def test_the_spec_cannot_be_changed_in_place(tmp_path):
    spec = EmbeddingSpec(encoder="t", n_layers=1, dim=2, sample_rate=8)
    store = EmbeddingStore.create(tmp_path, spec)
    store.write([SongEmbedding("x", "x.wav", "h", 1.0, np.ones((1, 2)), np.ones((1, 1, 2)), np.ones(1))])
    store.update_manifest(note="kept")
    with pytest.raises(StoreError):
        store.update_manifest(segment_seconds=10.0)
    assert store.manifest()["note"] == "kept" and store.spec() == spec

"""musicnn in PyTorch: agreement with the original TensorFlow model's outputs on real songs, the
encoder protocol (pooling over valid audio only, extras, layouts), precision, and weight sources."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from apexmusic.encoders import load_encoder
from apexmusic.encoders.musicnn import (
    HOP,
    MSD_LABELS,
    SAMPLE_RATE,
    WINDOW_FRAMES,
    golden_window_starts,
    hz_to_mel,
    load_msd,
    mel_filterbank,
    mel_to_hz,
    segment_window_starts,
)
from apexmusic.encoders.tf_checkpoint import read_index
from apexmusic.errors import ConfigError, ModelLoadError


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _decode(path: Path) -> np.ndarray:
    from apexmusic.audio import decode_mono

    audio, _ = decode_mono(path, SAMPLE_RATE)
    return audio


@pytest.fixture(scope="module")
def msd(musicnn_wheel):
    return load_msd(weights=str(musicnn_wheel), device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def song_clip(real_audio_files) -> np.ndarray:
    """20 s from the middle of a real song."""
    audio = _decode(next(p for p in real_audio_files if p.name == "yue_01_en.mp3"))
    return audio[30 * SAMPLE_RATE : 50 * SAMPLE_RATE].copy()


def test_mel_filterbank_is_slaney_triangles():
    fb = mel_filterbank()
    assert fb.shape == (96, 257) and fb.dtype == np.float32 and (fb >= 0).all()
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(SAMPLE_RATE / 2), 98))
    assert np.allclose(edges[[0, -1]], [0.0, SAMPLE_RATE / 2])
    freqs = np.fft.rfftfreq(512, 1.0 / SAMPLE_RATE)
    for i in (10, 50, 90):  # each filter is nonzero strictly between its two neighbours' centres
        support = freqs[fb[i] > 0]
        assert support.min() > edges[i] and support.max() < edges[i + 2]
        # Slaney normalisation: the triangle's peak height is 2 / (its width in Hz)
        peak_freq = freqs[fb[i].argmax()]
        tri = np.minimum((peak_freq - edges[i]) / (edges[i + 1] - edges[i]),
                         (edges[i + 2] - peak_freq) / (edges[i + 2] - edges[i + 1]))  # fmt: skip
        assert fb[i].max() == pytest.approx(tri * 2.0 / (edges[i + 2] - edges[i]), rel=1e-5)
    # Slaney's scale is linear below 1 kHz (equal spacing) and logarithmic above (ratio spacing)
    low, high = edges[edges < 1000], edges[edges > 1000]
    assert np.allclose(np.diff(low), low[1])
    assert np.allclose(high[1:] / high[:-1], high[1] / high[0])


def test_window_plans():
    assert WINDOW_FRAMES == 187
    assert golden_window_starts(7494) == list(range(0, 7308, 187))  # 119.9 s song: 40 windows
    assert golden_window_starts(186) == []
    assert segment_window_starts(1876) == list(range(0, 1870, 187))  # 30 s: 10 windows, 6 frames left
    assert segment_window_starts(187 + 100) == [0, 100]  # remainder >= half a window: end-aligned one
    assert segment_window_starts(187 + 50) == [0]
    assert segment_window_starts(120) == []  # shorter than a window: runs as one short window


@pytest.mark.slow
def test_matches_original_tensorflow_model_on_real_songs(msd, shared_data, real_audio_files):
    """The golden file holds the original MSD_musicnn (TensorFlow) outputs on every real song."""
    golden = json.loads((shared_data / "musicnn" / "golden_msd_musicnn.json").read_text())
    assert tuple(golden["labels"]) == MSD_LABELS
    assert len(golden["songs"]) == len(real_audio_files) == 7
    worst = {"mean": 0.0, "first3": 0.0, "pen_cos": 1.0, "maxpool_cos": 1.0}
    for path in real_audio_files:
        ref = golden["songs"][path.name]
        out = msd.tag_audio(_decode(path))
        assert len(out.tags) == ref["n_windows"], path.name
        mean_tags = out.tags.mean(axis=0)
        top5 = [MSD_LABELS[i] for i in np.argsort(-mean_tags)[:5]]
        assert top5 == ref["top5"], path.name
        worst["mean"] = max(worst["mean"], float(np.abs(mean_tags - ref["taggram_mean"]).max()))
        worst["first3"] = max(worst["first3"], float(np.abs(out.tags[:3] - ref["taggram_first3"]).max()))
        # musicnn 0.1.0's extractor never refreshes `penultimate` after the first batch, so the
        # golden "penultimate_mean" is the first window's penultimate vector repeated.
        worst["pen_cos"] = min(
            worst["pen_cos"], _cos(out.features["penultimate"][0], np.asarray(ref["penultimate_mean"]))
        )
        maxpool_cos = _cos(out.features["max_pool"].mean(axis=0), np.asarray(ref["max_pool_mean"]))
        worst["maxpool_cos"] = min(worst["maxpool_cos"], maxpool_cos)
    print("musicnn vs TensorFlow golden, worst over 7 songs:", worst)
    assert worst["mean"] <= 0.02
    assert worst["first3"] <= 0.03
    assert worst["pen_cos"] >= 0.99
    assert worst["maxpool_cos"] >= 0.99


def test_encode_pools_only_valid_audio(msd, song_clip):
    """A zero-padded row encodes exactly like the same audio given alone at its own length."""
    short = 7 * SAMPLE_RATE + 1234
    batch = np.zeros((2, len(song_clip)), dtype=np.float32)
    batch[0] = song_clip
    batch[1, :short] = song_clip[:short]
    layers = msd.encode(batch, np.array([len(song_clip), short]))
    assert layers.shape == (2, 3, 753) and layers.dtype == np.float32 and np.isfinite(layers).all()
    alone = msd.encode(song_clip[None, :short].copy(), np.array([short]))
    np.testing.assert_allclose(layers[1], alone[0], atol=2e-4, rtol=1e-4)
    assert not np.allclose(layers[0], layers[1], atol=1e-2)
    assert (layers[:, 0, 200:] == 0).all() and (layers[:, 0, :200] != 0).any()


def test_encode_and_extras_average_the_tagger_windows(msd, song_clip):
    """For 6 s of audio (two whole windows) encode/extras are the means of the per-window outputs."""
    clip = song_clip[: 6 * SAMPLE_RATE]
    windows = msd.tag_audio(clip)
    assert len(windows.tags) == 2
    layers = msd.encode(clip[None], np.array([len(clip)]))
    extras = msd.extras(clip[None], np.array([len(clip)]))
    assert set(extras) == {"tags"} and extras["tags"].shape == (1, 50)
    np.testing.assert_allclose(extras["tags"][0], windows.tags.mean(0), atol=1e-5)
    np.testing.assert_allclose(layers[0, 0, :200], windows.features["penultimate"].mean(0), atol=1e-4)
    np.testing.assert_allclose(layers[0, 1], windows.features["mean_pool"].mean(0), atol=1e-4)
    np.testing.assert_allclose(layers[0, 2], windows.features["max_pool"].mean(0), atol=1e-4)
    assert msd.labels == {"tags": list(MSD_LABELS)}


def test_short_segment_runs_as_one_short_window(msd, song_clip):
    clip = song_clip[: SAMPLE_RATE + 300]  # ~1 s, shorter than one 3 s window
    tags = msd.extras(clip[None], np.array([len(clip)]))["tags"]
    assert tags.shape == (1, 50) and ((tags > 0) & (tags < 1)).all()
    padded = np.zeros((1, 3 * SAMPLE_RATE), dtype=np.float32)
    padded[0, : len(clip)] = clip
    np.testing.assert_allclose(msd.extras(padded, np.array([len(clip)]))["tags"], tags, atol=1e-5)
    assert (len(clip) // HOP + 1) < WINDOW_FRAMES


def test_bf16_stays_close_to_fp32(musicnn_wheel, msd, song_clip):
    fast = load_msd(weights=str(musicnn_wheel), device="cpu", precision="bf16")
    clip = song_clip[None, : 9 * SAMPLE_RATE]
    lengths = np.array([clip.shape[1]])
    ref, got = msd.extras(clip, lengths)["tags"], fast.extras(clip, lengths)["tags"]
    assert np.abs(ref - got).max() < 0.05
    assert _cos(msd.encode(clip, lengths)[0, 0], fast.encode(clip, lengths)[0, 0]) > 0.99
    assert fast.describe()["precision"] == "bfloat16"


def test_concat_layout_and_registry(musicnn_wheel, msd, song_clip):
    clip = song_clip[None, : 4 * SAMPLE_RATE]
    lengths = np.array([clip.shape[1]])
    concat = load_encoder("musicnn-msd", weights=str(musicnn_wheel), device="cpu", layout="concat")
    assert (concat.n_layers, concat.dim) == (1, 1706)
    stacked = msd.encode(clip, lengths)[0]
    np.testing.assert_allclose(
        concat.encode(clip, lengths)[0, 0],
        np.concatenate([stacked[0, :200], stacked[1], stacked[2]]),
        atol=1e-6,
    )
    mtt = load_encoder("musicnn-mtt", weights=str(musicnn_wheel), device="cpu")
    assert mtt.name == "musicnn-mtt" and mtt.labels["tags"][:3] == ["guitar", "classical", "slow"]
    assert "MTT_musicnn" in mtt.weights_id and mtt.describe()["checkpoint"] == "MTT_musicnn"
    assert not np.allclose(mtt.extras(clip, lengths)["tags"], msd.extras(clip, lengths)["tags"], atol=1e-3)
    with pytest.raises(ConfigError):
        load_encoder("musicnn-msd", weights="random", layout="nope")


def test_weight_sources_agree_and_conversion_is_cached(musicnn_wheel, tmp_path, monkeypatch, song_clip):
    monkeypatch.setenv("APEXMUSIC_CACHE", str(tmp_path / "cache"))
    from_wheel = load_msd(weights=str(musicnn_wheel), device="cpu")
    converted = sorted((tmp_path / "cache" / "musicnn").glob("MSD_musicnn-*.safetensors"))
    assert len(converted) == 1
    stamp = converted[0].stat().st_mtime_ns
    load_msd(weights=str(musicnn_wheel), device="cpu")
    assert converted[0].stat().st_mtime_ns == stamp  # reused, not rebuilt

    extracted = tmp_path / "extracted"
    with zipfile.ZipFile(musicnn_wheel) as archive:
        archive.extractall(extracted, [n for n in archive.namelist() if n.startswith("musicnn/MSD_musicnn/")])
    from_folder = load_msd(weights=str(extracted), device="cpu")
    from_file = load_msd(weights=str(converted[0]), device="cpu")
    clip, lengths = song_clip[None, : 3 * SAMPLE_RATE], np.array([3 * SAMPLE_RATE])
    expected = from_wheel.extras(clip, lengths)["tags"]
    for other in (from_folder, from_file):
        np.testing.assert_array_equal(other.extras(clip, lengths)["tags"], expected)

    folder = extracted / "musicnn" / "MSD_musicnn"
    _, entries = read_index((folder / ".index").read_bytes())
    data = folder / ".data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[entries["dense/kernel"].offset + 1000] ^= 0x10  # one flipped bit in the weights
    data.write_bytes(bytes(raw))
    with pytest.raises(ModelLoadError, match="crc32c"):
        load_msd(weights=str(extracted), device="cpu")
    with pytest.raises(ModelLoadError):
        load_msd(weights=str(tmp_path / "missing.whl"), device="cpu")


@pytest.mark.parametrize("name", ["musicnn-mtt", "musicnn-mtt-vgg"])
def test_mtt_models_tag_real_songs_sensibly(name, musicnn_wheel, real_audio_files):
    """No TF reference exists for the MTT models; their tags on real songs must still make sense."""
    mtt = load_encoder(name, weights=str(musicnn_wheel), device="cpu")
    by_name = {p.name: p for p in real_audio_files}

    def top(song: str, k: int) -> list[str]:
        clip = _decode(by_name[song])[20 * SAMPLE_RATE : 32 * SAMPLE_RATE]
        probs = mtt.extras(clip[None], np.array([len(clip)]))["tags"][0]
        return [mtt.labels["tags"][i] for i in np.argsort(-probs)[:k]]

    sonata = top("acestep_sonata_piano_violin.opus", 4)
    assert "classical" in sonata and "violin" in sonata
    rap = top("acestep_hiphop_rap_shirt_song.opus", 6)
    assert {"male", "vocal", "voice", "man", "male vocal"} & set(rap) and "classical" not in rap


def test_msd_vgg_agrees_with_the_original_musicnn_on_a_real_song(musicnn_wheel, shared_data):
    """The VGG baseline is a different network, but on the same tags it must broadly agree."""
    vgg = load_encoder("musicnn-msd-vgg", weights=str(musicnn_wheel), device="cpu")
    assert (vgg.n_layers, vgg.dim) == (3, 256) and vgg.describe()["layers"] == ["pool5", "pool4", "pool3"]
    ref = json.loads((shared_data / "musicnn" / "golden_msd_musicnn.json").read_text())["songs"][
        "yue_01_en.mp3"
    ]
    out = vgg.tag_audio(_decode(shared_data / "real-audio" / "yue_01_en.mp3"))
    assert len(out.tags) == ref["n_windows"] and set(out.features) == {"pool5", "pool4", "pool3"}
    mean = out.tags.mean(axis=0)
    assert np.corrcoef(mean, ref["taggram_mean"])[0, 1] > 0.8
    assert len({MSD_LABELS[i] for i in np.argsort(-mean)[:5]} & set(ref["top5"])) >= 3
    short = vgg.encode(np.zeros((1, 3 * SAMPLE_RATE), np.float32) + 0.01, np.array([SAMPLE_RATE]))
    assert short.shape == (1, 3, 256) and np.isfinite(short).all()  # 1 s: repeat-padded window


def test_embed_cli_stores_musicnn_layers_and_tags(musicnn_wheel, shared_data, tmp_path):
    """``apexmusic embed --encoder musicnn-msd`` on a real song (and a bad file): the store holds
    [3, 753] layers and song-level tags whose top 5 equal the original model's."""
    from apexmusic.cli import main
    from apexmusic.store import EmbeddingStore

    song = shared_data / "real-audio" / "acestep_hiphop_rap_shirt_song.opus"
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(b"not audio at all" * 64)
    out = tmp_path / "store"
    argv = ["embed", str(song), str(bad), "--out", str(out), "--encoder", "musicnn-msd"]
    rc = main([*argv, "--weights", str(musicnn_wheel), "--device", "cpu"])
    assert rc == 1  # one input failed, the other was embedded
    store = EmbeddingStore.open(out)
    assert (store.manifest()["n_layers"], store.manifest()["dim"]) == (3, 753)
    assert [f["id"] for f in store.failures()] == ["broken"]
    (row,) = list(store.iter_rows(["id", "layers", "extra_tags"]))
    tags = np.asarray(row["extra_tags"], dtype=np.float32).ravel()
    golden = json.loads((shared_data / "musicnn" / "golden_msd_musicnn.json").read_text())
    ref = golden["songs"][song.name]
    assert [MSD_LABELS[i] for i in np.argsort(-tags)[:5]] == ref["top5"]
    # 30 s segments with an end-aligned last window differ slightly from the tagger's windows
    assert np.abs(tags - np.asarray(ref["taggram_mean"])).max() < 0.02
    layers = np.asarray(row["layers"], dtype=np.float32).reshape(3, 753)
    assert np.isfinite(layers).all() and (layers[0, 200:] == 0).all()

"""Hostile inputs: each becomes a finite embedding or exactly one failure line; good songs survive."""

from __future__ import annotations

import os

import numpy as np
import pytest
from _audio_files import music_like, tone, write_audio

from apexmusic.audio import SegmentConfig, iter_segments, segment_array
from apexmusic.cli import main
from apexmusic.errors import AudioContentError, AudioDecodeError, InputError
from apexmusic.store import EmbeddingStore

SR = 44100


def _hostile_folder(root):
    """Good songs in every format beside every kind of bad input. Returns (folder, expectations)."""
    folder = root / "in"
    folder.mkdir()
    good = {}
    for ext, sr in [(".wav", SR), (".flac", SR), (".mp3", SR), (".ogg", SR), (".opus", 48000), (".m4a", SR)]:
        name = f"good_{ext[1:]}"
        write_audio(folder / f"{name}{ext}", np.stack([music_like(4.0, sr)] * 2, axis=1), sr)
        good[name] = "embedding"
    rng = np.random.default_rng(0)
    # must fail, with this error kind
    (folder / "empty.mp3").write_bytes(b"")
    (folder / "text.mp3").write_text("This is a text file with an mp3 name.\n" * 50)
    (folder / "garbage.wav").write_bytes(rng.bytes(50_000))
    write_audio(folder / "ten_samples.wav", tone(10 / SR, SR), SR)
    os.symlink(folder / "does_not_exist.wav", folder / "dangling.wav")
    write_audio(folder / "too_long.flac", tone(20.0, 8000), 8000)  # run with --max-seconds 15
    mostly_nan = music_like(3.0, SR)
    mostly_nan[::10] = np.nan
    write_audio(folder / "mostly_nan.wav", mostly_nan, SR, float_wav=True)
    full = write_audio(folder / "full.flac", music_like(6.0, SR), SR).read_bytes()
    (folder / "header_only.flac").write_bytes(full[:60])
    fail = {
        "empty": "decode",
        "text": "decode",
        "garbage": "decode",
        "ten_samples": "content",
        "dangling": "input",
        "too_long": "content",
        "mostly_nan": "content",
        "header_only": "decode",
    }
    # must embed (valid, finite)
    (folder / "truncated.flac").write_bytes(full[: len(full) // 2])
    (folder / "full.flac").unlink()
    some_nan = music_like(3.0, SR)
    some_nan[[100, 5000, 9000]] = [np.nan, np.inf, -np.inf]
    write_audio(folder / "some_nan_inf.wav", some_nan, SR, float_wav=True)
    huge = music_like(3.0, SR) * 1e30
    write_audio(folder / "huge_values.wav", huge, SR, float_wav=True)
    write_audio(folder / "silence.wav", np.zeros(3 * SR, np.float32), SR)
    write_audio(
        folder / "eight_channels.wav", np.stack([music_like(3.0, SR, seed=c) for c in range(8)], 1), SR
    )
    write_audio(folder / "rate_8k.wav", music_like(3.0, 8000), 8000)
    write_audio(folder / "rate_192k.wav", music_like(3.0, 192000), 192000)
    ok = dict.fromkeys(
        ["truncated", "some_nan_inf", "huge_values", "silence", "eight_channels", "rate_8k", "rate_192k"],
        "embedding",
    )
    return folder, {**good, **ok}, fail


@pytest.mark.parametrize("workers", ["1", "0"])
def test_hostile_inputs_fail_one_line_each_and_keep_the_good_songs(tmp_path, capfd, workers):
    folder, embeds, fails = _hostile_folder(tmp_path)
    out = tmp_path / "store"
    args = ["embed", str(folder), "--out", str(out), "--max-seconds", "15", "--workers", workers]
    assert main(args) == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Fatal" not in err
    store = EmbeddingStore.open(out)
    failures = store.failures()
    assert sorted(f["id"] for f in failures) == sorted(fails)  # exactly one line per failed input
    for f in failures:
        assert f["kind"] == fails[f["id"]], f
        assert (
            f["message"]
            and "\n" not in f["message"]
            and f["path"].endswith(f["id"] + os.path.splitext(f["path"])[1])
        )
        assert err.count(f"failed {f['id']} (") == 1
    data = store.load(with_segments=True)
    assert sorted(data.ids) == sorted(embeds)
    assert np.isfinite(data.layers).all() and all(np.isfinite(s).all() for s in data.segments)
    durations = dict(zip(data.ids, data.duration_s, strict=True))
    assert 2.0 < durations["truncated"] < 4.0  # the intact first half of a 6 s file
    assert durations["rate_192k"] == pytest.approx(3.0, abs=0.01)
    assert durations["good_opus"] == pytest.approx(4.0, abs=0.05)


def test_library_errors_are_typed_and_one_line(tmp_path):
    config = SegmentConfig()
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.mp3").write_text("hello")
    cases = [
        (tmp_path / "empty.wav", AudioDecodeError),
        (tmp_path / "text.mp3", AudioDecodeError),
        (tmp_path / "missing.wav", InputError),
        (tmp_path, InputError),
    ]
    for path, error in cases:
        with pytest.raises(error) as info:
            list(iter_segments(path, 16000, config))
        assert "\n" not in str(info.value) and str(info.value)
    with pytest.raises(AudioContentError):
        segment_array(np.zeros(10, np.float32), 16000, 16000, config)
    with pytest.raises(AudioContentError):
        segment_array(np.full(1000, np.nan, np.float32), 16000, 16000, config)
    with pytest.raises(AudioContentError):
        segment_array(np.zeros(100 * 16000, np.float32), 16000, 16000, SegmentConfig(max_seconds=60))
    with pytest.raises(AudioContentError):  # the header says too long: refused before decoding
        path = write_audio(tmp_path / "long.wav", np.zeros(100 * 8000, np.float32), 8000)
        list(iter_segments(path, 16000, SegmentConfig(max_seconds=60)))
    # A name that looks like an FFmpeg protocol is only ever a local file.
    (tmp_path / "http:").mkdir()
    write_audio(tmp_path / "http:" / "x.wav", np.zeros(8000, np.float32), 8000)
    assert len(list(iter_segments(tmp_path / "http:" / "x.wav", 8000, config))) == 1
    sanitised = segment_array(
        np.array([np.nan, np.inf, 1e9] + [0.1] * 3000, np.float32), 16000, 16000, config
    )
    assert np.isfinite(sanitised[0].audio).all() and np.abs(sanitised[0].audio).max() <= 16.0

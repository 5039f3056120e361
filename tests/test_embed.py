"""The extraction pipeline: real songs end to end, batching across songs, resume, cache, CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from _audio_files import music_like, write_audio

from apexmusic import embed
from apexmusic.audio import SegmentConfig
from apexmusic.cli import main
from apexmusic.embed import EmbedConfig, SongEmbedder, embed_inputs
from apexmusic.encoders.handcrafted import HandcraftedEncoder
from apexmusic.errors import ConfigError, RunInterrupted, StoreError
from apexmusic.sources import Song, resolve_inputs
from apexmusic.store import EmbeddingStore


class RecordingEncoder(HandcraftedEncoder):
    """The handcrafted encoder, remembering what each encode() call received."""

    def __init__(self, fail_on_length: int | None = None):
        super().__init__()
        self.calls: list[tuple[tuple[int, int], list[int]]] = []
        self.fail_on_length = fail_on_length

    def encode(self, segments, lengths):
        self.calls.append((segments.shape, [int(n) for n in lengths]))
        if self.fail_on_length is not None and self.fail_on_length in lengths:
            raise RuntimeError("boom")
        return super().encode(segments, lengths)


@pytest.fixture
def recording(monkeypatch):
    encoder = RecordingEncoder()
    monkeypatch.setattr(embed.local, "build_encoder", lambda config: encoder)
    return encoder


def _songs(tmp_path, seconds=(7.0, 5.0, 3.0), sr=22050) -> list[Song]:
    folder = tmp_path / "songs"
    folder.mkdir(exist_ok=True)
    for i, s in enumerate(seconds):
        write_audio(folder / f"s{i}.wav", music_like(s, sr, seed=i), sr)
    return resolve_inputs([str(folder)])


@pytest.mark.slow  # decodes all seven real songs (~21 s on 2 busy cores)
def test_every_real_song_embeds_with_handcrafted(real_audio_files, tmp_path):
    songs = [Song(p.stem, str(p)) for p in real_audio_files]
    progress = []
    report = embed_inputs(songs, tmp_path / "store", EmbedConfig(workers=1), on_progress=progress.append)
    assert (report.n_done, report.n_failed, report.n_skipped) == (7, 0, 0)
    assert progress[-1].done == 7 and progress[-1].audio_seconds == pytest.approx(report.audio_seconds)
    store = EmbeddingStore.open(tmp_path / "store")
    data = store.load(with_segments=True)
    manifest = store.manifest()
    assert manifest["encoder"] == "handcrafted" and manifest["dim"] == data.layers.shape[2]
    assert manifest["segment_seconds"] == 30.0 and manifest["version"] and manifest["config_hash"]
    assert data.layers.shape == (7, 1, manifest["dim"]) and np.isfinite(data.layers).all()
    for i, song_id in enumerate(data.ids):
        duration = data.duration_s[i]
        segments, weights = data.segments[i], data.segment_weights[i]
        assert len(segments) == int(np.ceil(duration / 30 - 1e-3)), song_id
        assert weights.sum() == pytest.approx(duration, abs=0.05)  # valid seconds
        expected = (weights[:, None, None] * segments).sum(0) / weights.sum()
        np.testing.assert_allclose(data.layers[i], expected, rtol=1e-4, atol=1e-4)
    rows = {r["id"]: r for r in store.iter_rows(columns=["id", "sha256"])}
    assert len({r["sha256"] for r in rows.values()}) == 7


def test_segments_are_batched_across_songs(tmp_path, recording):
    songs = _songs(tmp_path, seconds=(7.0, 5.0, 3.0))
    config = EmbedConfig(segment_seconds=2.0, batch_size=4, workers=0)
    report = embed_inputs(songs, tmp_path / "store", config)
    assert report.n_done == 3
    full = [lengths for shape, lengths in recording.calls if all(n == 44100 for n in lengths)]
    assert sum(map(len, full)) == 3 + 2 + 1  # 2 s segments of 7, 5 and 3 s songs
    assert any(len(lengths) == 4 for lengths in full)  # a batch holds segments of several songs
    partial = [n for shape, lengths in recording.calls for n in lengths if n != 44100]
    assert sorted(partial) == [22050, 22050, 22050]  # the three 1 s tails, never padded into a mean
    data = EmbeddingStore.open(tmp_path / "store").load(with_segments=True)
    assert [len(s) for s in data.segments] == [4, 3, 2]
    np.testing.assert_allclose(data.segment_weights[0], [2, 2, 2, 1])


def test_resume_skips_finished_songs_and_never_writes_twice(tmp_path):
    songs = _songs(tmp_path, seconds=(3.0, 3.0, 2.0, 2.0))
    out = tmp_path / "store"
    first = embed_inputs(songs[:2], out, EmbedConfig(workers=0))
    assert first.n_done == 2
    with pytest.raises(StoreError):
        embed_inputs(songs, out, EmbedConfig(workers=0))  # no --resume: refuse to mix runs
    second = embed_inputs(songs, out, EmbedConfig(workers=0, resume=True))
    assert (second.n_done, second.n_skipped) == (2, 2)
    store = EmbeddingStore.open(out)
    shards = store.shards()
    third = embed_inputs(songs, out, EmbedConfig(workers=0, resume=True))
    assert (third.n_done, third.n_skipped) == (0, 4) and store.shards() == shards
    ids = [r["id"] for r in store.iter_rows(columns=["id"])]
    assert sorted(ids) == sorted(s.id for s in songs) and len(ids) == len(set(ids))
    with pytest.raises(StoreError):  # other settings: never mixed into the same store
        embed_inputs(songs, out, EmbedConfig(workers=0, resume=True, segment_seconds=10.0))


def test_same_content_under_two_names_is_decoded_once(tmp_path, monkeypatch):
    songs = _songs(tmp_path, seconds=(3.0, 2.0))
    copy = tmp_path / "songs" / "copy_of_s0.wav"
    shutil.copy(songs[0].path, copy)
    songs.append(Song("copy_of_s0", str(copy)))
    decoded = []
    real = embed.messages.iter_segments
    monkeypatch.setattr(
        embed.messages, "iter_segments", lambda path, *a: decoded.append(path) or real(path, *a)
    )
    report = embed_inputs(songs, tmp_path / "store", EmbedConfig(workers=0))
    assert report.n_done == 3 and report.n_cached == 1
    assert sorted(decoded) == sorted([songs[0].path, songs[1].path])
    data = EmbeddingStore.open(tmp_path / "store").load()
    a, b = data.ids.index(songs[0].id), data.ids.index("copy_of_s0")
    np.testing.assert_array_equal(data.layers[a], data.layers[b])
    assert data.paths[b] == str(copy)


def test_an_encoder_error_costs_one_song(tmp_path, monkeypatch):
    encoder = RecordingEncoder(fail_on_length=2 * 22050)  # only the 2 s song has a 2 s segment
    monkeypatch.setattr(embed.local, "build_encoder", lambda config: encoder)
    songs = _songs(tmp_path, seconds=(6.0, 2.0, 4.0))
    report = embed_inputs(
        songs, tmp_path / "store", EmbedConfig(workers=0, segment_seconds=6.0, batch_size=8)
    )
    assert report.n_done == 2 and [f.id for f in report.failures] == ["s1"]
    assert report.failures[0].kind == "encode" and "boom" in report.failures[0].message


def test_reference_compat_pads_the_last_segment_and_takes_a_plain_mean(tmp_path, recording):
    songs = _songs(tmp_path, seconds=(40.0,), sr=8000)
    report = embed_inputs(songs, tmp_path / "store", EmbedConfig(workers=0, compat="reference"))
    assert report.n_done == 1
    lengths = [n for _, ls in recording.calls for n in ls]
    assert lengths == [30 * 22050, 30 * 22050]  # the 10 s tail padded and counted as 30 s
    store = EmbeddingStore.open(tmp_path / "store")
    data = store.load(with_segments=True)
    np.testing.assert_array_equal(data.segment_weights[0], [1, 1])
    np.testing.assert_allclose(data.layers[0], data.segments[0].mean(0), rtol=1e-6)
    assert store.manifest()["compat"] == "reference" and store.manifest()["pad_last"] is True


def test_song_embedder_matches_the_pipeline(tmp_path):
    songs = _songs(tmp_path, seconds=(5.0,))
    embed_inputs(songs, tmp_path / "store", EmbedConfig(workers=0, segment_seconds=2.0))
    stored = EmbeddingStore.open(tmp_path / "store").load()
    embedder = SongEmbedder(HandcraftedEncoder(), SegmentConfig(segment_seconds=2.0))
    from_path = embedder.embed_path(songs[0])
    np.testing.assert_allclose(from_path.layers, stored.layers[0], rtol=1e-5, atol=1e-5)
    assert from_path.n_segments == 3 and from_path.duration_s == pytest.approx(5.0)
    audio = music_like(5.0, 22050, seed=0)
    float_wav = write_audio(tmp_path / "f.wav", audio, 22050, float_wav=True)
    from_float_file = embedder.embed_path(Song("f", str(float_wav)))
    from_array = embedder.embed_array(np.stack([audio, audio]), 22050, id="x")  # [C, T] stereo
    assert from_array.id == "x" and from_array.duration_s == pytest.approx(5.0)
    np.testing.assert_allclose(from_array.layers, from_float_file.layers, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(from_array.segments, from_float_file.segments, rtol=1e-5, atol=1e-5)


def test_cli_exit_codes(tmp_path, capsys):
    songs = _songs(tmp_path, seconds=(3.0, 2.0))
    folder = tmp_path / "songs"
    out = tmp_path / "store"
    assert main(["embed", str(folder), "--out", str(out), "--workers", "0"]) == 0
    assert "embedded 2 songs" in capsys.readouterr().out
    (folder / "bad.mp3").write_text("not audio at all")
    assert main(["embed", str(folder), "--out", str(out), "--resume", "--workers", "0"]) == 1
    err = capsys.readouterr().err
    assert "failed bad" in err and "decode" in err and "Traceback" not in err
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [(f["id"], f["kind"]) for f in failures] == [("bad", "decode")]
    assert main(["embed", str(folder), "--out", str(out), "--workers", "0"]) == 2  # exists, no --resume
    assert main(["embed", str(songs[0].path), "--out", str(tmp_path / "x"), "--segment-seconds", "0"]) == 2
    assert main(["embed", str(songs[0].path), "--out", str(tmp_path / "y"), "--compat", "reference"]) == 2
    assert main(["embed", str(songs[0].path), "--out", str(tmp_path / "z"), "--encoder", "nope"]) == 2
    assert main(["embed", str(songs[0].path), "--out", str(tmp_path / "w"), "--precision", "fp8"]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "settings",
    [
        {"precision": "fp8"},
        {"compat": "reference", "segment_seconds": 10.0},
        {"compat": "nope"},
        {"batch_size": 0},
        {"workers": -1},
        {"shard_songs": 0},
        {"segment_seconds": 0.0},
        {"hop_seconds": 40.0},
        {"max_seconds": -1.0},
        {"encoder": ""},
    ],
)
def test_an_embed_config_checks_itself_on_construction(settings):
    with pytest.raises(ConfigError):
        EmbedConfig(**settings)


def test_an_interrupted_run_keeps_finished_songs_and_resume_completes_it(tmp_path):
    songs = _songs(tmp_path, seconds=(2.0, 2.0, 2.0, 2.0))
    out = tmp_path / "store"

    def interrupt_after_two(progress):
        if progress.done == 2:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted, match="SIGINT: 2 songs finished in this run are kept") as stopped:
        embed_inputs(songs, out, EmbedConfig(workers=1), on_progress=interrupt_after_two)
    assert (stopped.value.kept, stopped.value.signum) == (2, 2)
    store = EmbeddingStore.open(out)
    assert len(store.done_ids()) == 2  # written on the way out, as a whole shard
    report = embed_inputs(songs, out, EmbedConfig(workers=1, resume=True))
    assert (report.n_done, report.n_skipped) == (2, 2)
    ids = [r["id"] for r in store.iter_rows(columns=["id"])]
    assert sorted(ids) == sorted(s.id for s in songs)


def test_a_killed_decoder_process_costs_one_song_and_is_replaced(tmp_path):
    import os
    import signal

    from apexmusic.embed import DecodeTask, SegmentAudio, SongEnd, SongFailed, WorkerPool

    long_song = write_audio(tmp_path / "long.wav", music_like(1200.0, 8000), 8000)
    short_song = write_audio(tmp_path / "short.wav", music_like(2.0, 8000), 8000)
    segment = SegmentConfig(segment_seconds=30.0)
    pool = WorkerPool(1, 8000, segment, queue_size=4, timeout_s=600)
    resolved: dict[int, SongEnd | SongFailed] = {}
    try:
        pool.submit([DecodeTask(0, str(long_song))])
        killed = False
        for message in pool.messages(lambda: len(resolved) >= 2):
            if isinstance(message, SegmentAudio) and message.idx == 0 and not killed:
                os.kill(pool.workers[0].proc.pid, signal.SIGKILL)  # the decoder dies mid-song
                killed = True
                pool.submit([DecodeTask(1, str(short_song))])
            elif isinstance(message, (SongEnd, SongFailed)):
                resolved[message.idx] = message
    finally:
        pool.close()
    assert isinstance(resolved[0], SongFailed) and resolved[0].kind == "decode"
    assert "died" in resolved[0].message
    assert resolved[1] == SongEnd(
        1, 1, resolved[1].duration_s, resolved[1].sha256
    )  # the replacement decoded it


def test_encoding_inside_decoder_processes_equals_encoding_in_the_main_process(tmp_path):
    songs = _songs(tmp_path, seconds=(7.0, 3.0, 5.0))
    config = dict(segment_seconds=2.0)
    in_main = embed_inputs(songs, tmp_path / "main", EmbedConfig(workers=0, **config))
    in_workers = embed_inputs(songs, tmp_path / "workers", EmbedConfig(workers=2, **config))
    assert in_main.n_done == in_workers.n_done == 3
    a = EmbeddingStore.open(tmp_path / "main").load(with_segments=True)
    b = EmbeddingStore.open(tmp_path / "workers").load(with_segments=True)
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.layers, b.layers)
    for sa, sb, wa, wb in zip(a.segments, b.segments, a.segment_weights, b.segment_weights, strict=True):
        np.testing.assert_array_equal(sa, sb)
        np.testing.assert_array_equal(wa, wb)
    assert EmbeddingStore.open(tmp_path / "workers").manifest()["last_run"]["workers"] == 2

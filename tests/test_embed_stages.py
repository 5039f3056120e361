"""The stage parts both engines share: typed messages, the Ray row boundary, song assembly."""

from __future__ import annotations

import numpy as np
import pytest

from apexmusic.embed import (
    SegmentAudio,
    SegmentVectors,
    SongAssembler,
    SongEnd,
    SongFailed,
    combine_segments,
    encode_segments,
)
from apexmusic.embed.ray_stages import message_row, row_message
from apexmusic.encoders.handcrafted import HandcraftedEncoder
from apexmusic.sources import Song
from apexmusic.store import Failure, SongEmbedding

SR = 100


def _vectors(idx: int, k: int, valid: int, rng) -> SegmentVectors:
    return SegmentVectors(
        idx, k, rng.standard_normal((2, 3)).astype(np.float32), valid, {"tags": rng.random(4)}
    )


def test_every_message_survives_the_ray_row_boundary():
    rng = np.random.default_rng(0)
    messages = [
        SegmentAudio(3, 1, rng.standard_normal(50).astype(np.float32), 50),
        _vectors(3, 2, 40, rng),
        SongEnd(3, 4, 12.5, "ab" * 32),
        SongFailed(3, "decode", "not audio"),
    ]
    for message in messages:
        back = row_message(message_row(message), shape=(2, 3))
        assert type(back) is type(message)
        for name, value in vars(message).items():
            got = getattr(back, name)
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(got, value)
            elif isinstance(value, dict):
                assert got.keys() == value.keys()
                for key in value:
                    np.testing.assert_allclose(got[key], value[key], rtol=1e-6)
            else:
                assert got == value


def test_each_song_comes_out_once_whatever_the_order_or_repeats():
    rng = np.random.default_rng(1)
    songs = [Song("a", "a.wav"), Song("b", "b.wav"), Song("c", "c.wav")]
    assembler = SongAssembler(songs, SR, compat=None)
    a = [_vectors(0, k, v, rng) for k, v in enumerate((100, 100, 30))]
    stream = [
        a[2],
        SongEnd(0, 3, 2.3, "sha-a"),
        _vectors(1, 0, 100, rng),
        a[0],
        a[0],  # a retried task repeats a row
        SongFailed(1, "encode", "boom"),
        _vectors(1, 1, 100, rng),  # after its failure: ignored
        a[1],
        a[1],  # after the song is done: ignored
        SongFailed(1, "encode", "again"),
    ]
    out = list(assembler.add_all(stream))
    assert [type(x) for x in out] == [Failure, SongEmbedding]
    assert (out[0].id, out[0].kind, out[0].message) == ("b", "encode", "boom")
    song = out[1]
    vectors = np.stack([m.vectors for m in a])
    layers, weights = combine_segments(vectors, np.array([100, 100, 30]), SR)
    np.testing.assert_array_equal(song.segments, vectors)
    np.testing.assert_allclose(song.layers, layers)
    np.testing.assert_allclose(weights, [1.0, 1.0, 0.3])
    tags = np.stack([m.extras["tags"] for m in a])
    np.testing.assert_allclose(
        song.extras["tags"], (weights[:, None] * tags).sum(0) / weights.sum(), rtol=1e-6
    )
    assert (song.id, song.sha256, song.duration_s) == ("a", "sha-a", 2.3)
    assert len(assembler) == 1 and [f.id for f in assembler.fail_open("worker", "lost")] == ["c"]
    assert len(assembler) == 0
    with pytest.raises(TypeError):
        SongAssembler(songs, SR, None).add(SegmentAudio(0, 0, np.zeros(3, np.float32), 3))


def test_reference_compat_pools_with_a_plain_mean():
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((3, 2, 3))
    layers, weights = combine_segments(vectors, np.array([100, 100, 30]), SR, compat="reference")
    np.testing.assert_allclose(weights, 1.0)
    np.testing.assert_allclose(layers, vectors.mean(0), rtol=1e-6)


class _Picky(HandcraftedEncoder):
    """Rejects any batch holding a segment of 777 samples; returns NaN for 555-sample ones."""

    def encode(self, segments, lengths):
        if 777 in lengths:
            raise RuntimeError("cannot encode this")
        out = super().encode(segments, lengths)
        out[np.asarray(lengths) == 555] = np.nan
        return out


def test_a_bad_segment_fails_its_own_song_and_the_batch_goes_on():
    rng = np.random.default_rng(3)
    sr = HandcraftedEncoder.sample_rate
    segments = [
        SegmentAudio(0, 0, (0.1 * rng.standard_normal(sr)).astype(np.float32), sr),
        SegmentAudio(1, 0, (0.1 * rng.standard_normal(777)).astype(np.float32), 777),
        SegmentAudio(2, 0, (0.1 * rng.standard_normal(555)).astype(np.float32), 555),
        SegmentAudio(0, 1, (0.1 * rng.standard_normal(900)).astype(np.float32), 900),
    ]
    out = encode_segments(_Picky(), segments)
    assert [(type(m).__name__, m.idx) for m in out] == [
        ("SegmentVectors", 0),
        ("SongFailed", 1),
        ("SongFailed", 2),
        ("SegmentVectors", 0),
    ]
    assert out[1].kind == "encode" and "cannot encode this" in out[1].message
    assert out[2].kind == "content" and "non-finite" in out[2].message
    alone = encode_segments(HandcraftedEncoder(), [segments[3]])[0]
    np.testing.assert_allclose(out[3].vectors, alone.vectors, rtol=1e-5, atol=1e-6)

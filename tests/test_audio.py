"""Decoding, resampling and segmenting (apexmusic.audio) on real songs and synthetic signals."""

from __future__ import annotations

import numpy as np
import pytest

from apexmusic.audio import SegmentConfig, decode_mono, file_sha256, iter_segments, segment_array

# Durations from ../shared/data/README.md (real-audio table).
README_SECONDS = {
    "suno_01_en.mp3": 150.0,
    "yue_01_en.mp3": 90.0,
    "mureka_01_en.mp3": 97.7,
    "acestep_female_pop.opus": 195.1,
    "acestep_hiphop_rap_shirt_song.opus": 63.5,
    "acestep_saxphone_jazz.opus": 70.2,
    "acestep_sonata_piano_violin.opus": 119.9,
}


def test_every_real_song_decodes_with_its_documented_duration(real_audio_files):
    assert {f.name for f in real_audio_files} == set(README_SECONDS)
    for path in real_audio_files:
        audio, duration = decode_mono(path, 16000)
        assert abs(duration - README_SECONDS[path.name]) < 0.1, path.name
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert abs(audio.size / 16000 - duration) < 0.01
        assert np.isfinite(audio).all() and 0.1 < np.abs(audio).max() <= 1.5


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / sr)[np.argmax(spectrum)])


@pytest.mark.parametrize(
    "ext, sr, channels",
    [
        (".wav", 44100, 2),
        (".flac", 44100, 1),
        (".mp3", 44100, 2),
        (".ogg", 44100, 2),
        (".opus", 48000, 2),
        (".m4a", 44100, 1),
        (".wav", 8000, 1),
        (".wav", 192000, 2),
        (".wav", 44100, 8),
    ],
)
def test_every_format_rate_and_layout_decodes_to_the_same_tone(tmp_path, ext, sr, channels):
    from _audio_files import tone, write_audio

    path = write_audio(tmp_path / f"tone{ext}", tone(2.0, sr, freq=1000.0, amp=0.5, channels=channels), sr)
    audio, duration = decode_mono(path, 24000)
    assert abs(duration - 2.0) < 0.05, duration  # codecs add at most a frame of priming
    assert abs(_peak_hz(audio[2400:-2400], 24000) - 1000.0) < 2.0
    # The channel mean of identical channels keeps the amplitude.
    assert 0.4 < np.percentile(np.abs(audio[2400:-2400]), 99.9) < 0.6


def test_resampling_keeps_a_sine_at_its_frequency_44k_to_24k(tmp_path):
    from _audio_files import tone, write_audio

    path = write_audio(tmp_path / "a.wav", tone(3.0, 44100, freq=3517.0, amp=0.5), 44100)
    audio, _ = decode_mono(path, 24000)
    assert audio.size == 72000
    assert abs(_peak_hz(audio, 24000) - 3517.0) < 1.0
    # A tone above the new Nyquist is removed, not aliased.
    path = write_audio(tmp_path / "b.wav", tone(3.0, 44100, freq=15000.0, amp=0.5), 44100)
    audio, _ = decode_mono(path, 24000)
    assert np.abs(audio[1000:-1000]).max() < 0.01


def test_streaming_equals_one_shot_decode_and_resample(real_audio_files):
    import soxr

    path = next(f for f in real_audio_files if f.name == "yue_01_en.mp3")
    native, _ = decode_mono(path, 44100)  # the file's own rate: no resampling
    expected = soxr.resample(native, 44100, 24000, quality="HQ")
    config = SegmentConfig(segment_seconds=10.0, hop_seconds=7.5)
    stream = iter_segments(path, 24000, config)
    segments = list(stream)
    assert abs(stream.duration_s - 90.0) < 0.1 and stream.source_rate == 44100 and stream.channels == 1
    assert [s.start for s in segments] == [i * 180000 for i in range(len(segments))]
    for seg in segments:
        assert seg.audio.shape == (240000,)
        want = expected[seg.start : seg.start + seg.valid]
        np.testing.assert_allclose(seg.audio[: seg.valid], want, atol=2e-4)
        assert not seg.audio[seg.valid :].any()
    last = segments[-1]
    assert last.start + last.valid == expected.size  # the stream covers the whole song


def test_valid_counts_padding_and_the_reference_pad_last():
    sr = 1000
    audio = np.ones(65 * sr, np.float32)
    plain = segment_array(audio, sr, sr, SegmentConfig(segment_seconds=30))
    assert [s.valid for s in plain] == [30000, 30000, 5000]
    assert plain[-1].audio.shape == (30000,) and plain[-1].audio[5000:].sum() == 0
    reference = segment_array(audio, sr, sr, SegmentConfig(segment_seconds=30, pad_last=True))
    assert [s.valid for s in reference] == [30000, 30000, 30000]
    assert reference[-1].audio[:5000].all() and not reference[-1].audio[5000:].any()
    short = segment_array(audio[:12000], sr, sr, SegmentConfig(segment_seconds=30))
    assert [s.valid for s in short] == [12000]
    # An exact multiple has no empty tail; a tail under min_seconds is dropped, not a segment.
    assert [s.valid for s in segment_array(audio[:60000], sr, sr, SegmentConfig())] == [30000, 30000]
    assert [s.valid for s in segment_array(audio[:60050], sr, sr, SegmentConfig())] == [30000, 30000]
    overlap = segment_array(audio[:20000], sr, sr, SegmentConfig(segment_seconds=10, hop_seconds=5))
    assert [(s.start, s.valid) for s in overlap] == [(0, 10000), (5000, 10000), (10000, 10000)]


def test_segment_array_layouts_and_integer_input():
    sr = 16000
    mono = np.sin(np.linspace(0, 200 * np.pi, sr)).astype(np.float32) * 0.5
    stereo_tc = np.stack([mono, mono], axis=1)
    config = SegmentConfig(segment_seconds=1.0)
    ref = segment_array(mono, sr, sr, config)[0].audio
    np.testing.assert_allclose(segment_array(stereo_tc, sr, sr, config)[0].audio, ref)
    np.testing.assert_allclose(segment_array(stereo_tc.T, sr, sr, config)[0].audio, ref)
    as_int = (mono * 32768).astype(np.int16)
    np.testing.assert_allclose(segment_array(as_int, sr, sr, config)[0].audio, ref, atol=1e-4)
    resampled = segment_array(mono, sr, 8000, config)
    assert resampled[0].valid == 8000


def test_file_sha256_matches_hashlib(tmp_path):
    import hashlib

    data = np.random.default_rng(0).bytes(3 << 20)
    (tmp_path / "x.bin").write_bytes(data)
    assert file_sha256(tmp_path / "x.bin") == hashlib.sha256(data).hexdigest()

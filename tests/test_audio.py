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

"""Reference compat against a literal oracle of the published pipeline (tests/official_pipeline.py).

The oracle runs torchaudio's own ``resample`` (from its PyPI wheel), soundfile, transformers'
``Wav2Vec2FeatureExtractor`` and a plain ``HubertModel``; apexmusic runs its own decoder policy,
sinc resampler, segmenter, input normalisation and fast MERT path on a published-layout folder.
Tiny 12-layer MERT configs keep this fast; real-size figures are in benchmarks/bench_compat.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from official_pipeline import OracleUnavailable, cosine, load_waveform, song_vector, torchaudio_functional
from test_mert import tiny, write_published_folder
from torch import nn

from apexmusic.audio import (
    REFERENCE_DECODER,
    REFERENCE_RESAMPLER,
    SegmentConfig,
    decode_mono,
    iter_segments,
    segment_array,
)
from apexmusic.compat import reference_vector
from apexmusic.embed import REFERENCE, EmbedConfig, SongEmbedder
from apexmusic.encoders.input_norm import normalise_rows, read_do_normalize
from apexmusic.encoders.mert import MertEncoder, build_model, load_folder
from apexmusic.model import import_reference_checkpoint
from apexmusic.sinc import SincResampler, sinc_resample
from apexmusic.sources import Song

SR = 24000
TASKS = ["score_streams", "score_likes", "coherence", "musicality", "memorability", "clarity", "naturalness"]
PREPROCESSOR = {
    "feature_extractor_type": "Wav2Vec2FeatureExtractor",
    "feature_size": 1,
    "padding_side": "right",
    "padding_value": 0,
    "return_attention_mask": True,
    "sampling_rate": SR,
}


@pytest.fixture(scope="module")
def taf(tmp_path_factory):
    try:
        return torchaudio_functional(tmp_path_factory.mktemp("torchaudio"))
    except OracleUnavailable as exc:
        pytest.skip(f"PyPI unreachable, torchaudio oracle unavailable: {exc}")


def _mert(folder, do_normalize: bool, seed: int = 7):
    """A published-layout tiny MERT folder and the plain HubertModel it was written from."""
    arch = tiny(layers=12)
    model = build_model(arch, None, seed=seed)
    write_published_folder(model, arch, folder, "safetensors")
    preprocessor = {**PREPROCESSOR, "do_normalize": do_normalize}
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return arch, model


def _ours(folder, arch, precision: str = "fp32") -> SongEmbedder:
    loaded, loaded_arch = load_folder(folder, arch)
    encoder = MertEncoder(loaded, loaded_arch, "tiny", device="cpu", precision=precision, compat=REFERENCE)
    return SongEmbedder(encoder, SegmentConfig(), compat=REFERENCE)


def _processor(folder):
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor.from_pretrained(str(folder))


# ---- resampler -------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [44100, 48000, 22050, 16000, 8000, 96000, 32000, 11025])
def test_sinc_resampler_equals_torchaudio_on_noise(taf, rate):
    x = np.random.default_rng(rate).standard_normal(rate * 2 + 17).astype(np.float32)
    theirs = taf.resample(torch.from_numpy(x), rate, SR).numpy()
    ours = sinc_resample(x, rate, SR)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=2e-6, rtol=0)
    streamed = SincResampler(rate, SR)
    parts = [streamed.push(x[i : i + 4099]) for i in range(0, x.size, 4099)] + [streamed.finish()]
    np.testing.assert_allclose(np.concatenate(parts), theirs, atol=2e-6, rtol=0)


def test_soxr_is_not_the_reference_kernel(taf):
    """The old compat resampler (soxr) differs from torchaudio's kernel: this test can fail."""
    import soxr

    x = np.random.default_rng(0).standard_normal(44100 * 2).astype(np.float32)
    theirs = taf.resample(torch.from_numpy(x), 44100, SR).numpy()
    n = min(theirs.size, 48000)
    assert cosine(soxr.resample(x, 44100, SR)[:n], theirs[:n]) < 0.999
    assert cosine(sinc_resample(x, 44100, SR)[:n], theirs[:n]) > 0.999999


def test_reference_decoding_of_a_real_song_equals_the_official_loader(taf, real_audio_files):
    path = next(f for f in real_audio_files if f.name == "yue_01_en.mp3")  # the shortest
    theirs = load_waveform(path, SR, taf).numpy()
    ours, _ = decode_mono(path, SR, decoder=REFERENCE_DECODER, resampler=REFERENCE_RESAMPLER)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=5e-6, rtol=0)


# ---- decoder policy and segmenting -----------------------------------------------------------
def test_libsndfile_decodes_what_it_reads_and_pyav_the_rest(tmp_path, real_audio_files):
    import av

    config = SegmentConfig().for_reference()
    song = next(f for f in real_audio_files if f.name == "acestep_hiphop_rap_shirt_song.opus")
    stream = iter_segments(song, SR, config)
    list(stream)
    assert stream.decoder == "soundfile"
    m4a = tmp_path / "tone.m4a"  # AAC in MP4: libsndfile cannot read it
    with av.open(str(m4a), "w") as out:
        s = out.add_stream("aac", rate=48000)
        t = np.arange(48000 * 2) / 48000
        frame = av.AudioFrame.from_ndarray(
            (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], format="fltp", layout="mono"
        )
        frame.sample_rate = 48000
        for packet in s.encode(frame):
            out.mux(packet)
        for packet in s.encode(None):
            out.mux(packet)
    stream = iter_segments(m4a, SR, config)
    segments = list(stream)
    assert stream.decoder == "pyav" and len(segments) == 1 and np.abs(segments[0].audio).max() > 0.1
    default = iter_segments(song, SR, SegmentConfig())
    list(default)
    assert default.decoder == "pyav"


def test_reference_mode_keeps_every_nonempty_tail():
    audio = np.ones(int(30.05 * SR), np.float32)
    assert len(segment_array(audio, SR, SR, SegmentConfig())) == 1  # ours: a 0.05 s tail is dropped
    reference = segment_array(audio, SR, SR, SegmentConfig().for_reference())
    assert [s.valid for s in reference] == [30 * SR, 30 * SR]
    assert reference[1].audio[: int(0.05 * SR)].all() and not reference[1].audio[int(0.05 * SR) :].any()
    one_sample = np.ones(60 * SR + 1, np.float32)
    assert len(segment_array(one_sample, SR, SR, SegmentConfig().for_reference())) == 3


def test_the_spec_records_the_reference_decoder_and_resampler():
    reference = EmbedConfig(compat=REFERENCE).segment_config()
    assert reference.decoder == REFERENCE_DECODER and reference.resampler == REFERENCE_RESAMPLER
    assert reference.pad_last
    plain = EmbedConfig().segment_config()
    assert (plain.decoder, plain.resampler) == ("pyav", "soxr-hq")


# ---- do_normalize ----------------------------------------------------------------------------
def test_input_normalisation_equals_wav2vec2_feature_extractor(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    extractor = Wav2Vec2FeatureExtractor(**{**PREPROCESSOR, "do_normalize": True})
    rng = np.random.default_rng(1)
    rows = [(rng.standard_normal(n) * 0.3 + 0.1).astype(np.float32) for n in (5000, 3100, 4000)]
    theirs = extractor(rows, sampling_rate=SR, padding=True, return_tensors="np")["input_values"]
    batch = np.zeros((3, 5000), np.float32)
    for row, x in zip(batch, rows, strict=True):
        row[: x.size] = x
    ours = normalise_rows(batch, np.array([5000, 3100, 4000]))
    np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    assert read_do_normalize(tmp_path) is True
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"feature_size": 1}))
    assert read_do_normalize(tmp_path) is True  # the feature extractor's own default
    (tmp_path / "preprocessor_config.json").unlink()
    assert read_do_normalize(tmp_path) is False


# ---- the whole pipeline ----------------------------------------------------------------------
class _Block(nn.Module):
    def __init__(self, i, o, p):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(i, o), nn.BatchNorm1d(o), nn.GELU(), nn.Dropout(p))

    def forward(self, x):
        return self.block(x)


class _Branch(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch = nn.Sequential(_Block(256, 128, 0.1), _Block(128, 64, 0.1), nn.Linear(64, 1))


class _OfficialHead(nn.Module):
    """inference.py's apexMLP (2 shared layers, full task) on ``dim``-d song vectors."""

    def __init__(self, dim: int):
        super().__init__()
        self.shared = nn.Sequential(_Block(dim, 512, 0.3), _Block(512, 256, 0.3))
        for t in TASKS:
            setattr(self, f"branch_{t}", _Branch())

    def forward(self, x):
        h = self.shared(x)
        return {
            t: torch.sigmoid(getattr(self, f"branch_{t}").branch(h)).squeeze(1) * (100 if i < 2 else 4)
            + (0 if i < 2 else 1)
            for i, t in enumerate(TASKS)
        }


def _official_head(path, dim: int, seed: int = 3) -> _OfficialHead:
    torch.manual_seed(seed)
    head = _OfficialHead(dim).eval()
    torch.save({"model_state": head.state_dict(), "task": "full", "shared": 2, "mode": "song",
                "epoch": 9, "val_loss": 1.0}, path)  # fmt: skip
    return head


def _compare(tmp_path, songs, do_normalize: bool, taf, precision: str = "fp32") -> None:
    """Our song vectors and an imported official head's scores against the official pipeline's:
    fp32 within cosine 1e-4 of it, other precisions within 1e-3; scores within 0.1 (0-100) and
    0.005 (1-5) at every precision."""
    arch, hubert = _mert(tmp_path / "mert", do_normalize)
    ours = _ours(tmp_path / "mert", arch, precision)
    assert ours.encoder.precision == precision
    min_cosine = 0.9999 if precision == "fp32" else 0.999
    processor = _processor(tmp_path / "mert")
    head = _official_head(tmp_path / "best_model.pt", arch.hidden_size)
    imported = import_reference_checkpoint(tmp_path / "best_model.pt")
    for path in songs:
        theirs = song_vector(load_waveform(path, SR, taf), processor, hubert)
        embedding = ours.embed_path(Song(path.stem, str(path)))
        assert cosine(reference_vector(embedding.layers), theirs) >= min_cosine, path.name
        with torch.no_grad():
            expected = head(torch.from_numpy(theirs)[None])
        got = imported.predict_layers(embedding.layers[None])
        values = [float(expected[t][0]) for t in TASKS]
        assert all(2 < v < 98 for v in values[:2]) and all(1.1 < v < 4.9 for v in values[2:]), values
        for i, t in enumerate(TASKS):
            assert abs(float(got[t][0]) - float(expected[t][0])) <= (0.1 if i < 2 else 0.005), (path.name, t)


@pytest.mark.parametrize("do_normalize", [pytest.param(False, marks=pytest.mark.slow), True])
def test_a_song_cut_to_30_05_s_equals_the_official_pipeline(tmp_path, taf, real_audio_files, do_normalize):
    source = next(f for f in real_audio_files if f.name == "suno_01_en.mp3")  # 48 kHz stereo
    audio, rate = sf.read(str(source), dtype="float32")
    cut = tmp_path / "cut.wav"
    sf.write(str(cut), audio[: int(30.05 * rate)], rate, subtype="FLOAT")
    _compare(tmp_path, [cut], do_normalize, taf)


@pytest.mark.slow
def test_every_real_song_equals_the_official_pipeline(tmp_path, taf, real_audio_files):
    _compare(tmp_path, real_audio_files, True, taf)


def test_bf16_compat_scores_within_the_published_tolerances(tmp_path, taf, real_audio_files):
    """Compat at bf16 (what ``auto`` picks on CPUs with native bf16) keeps an imported official
    head's scores within 0.1 / 0.005 of the official fp32 pipeline, on a padded two-segment cut."""
    source = next(f for f in real_audio_files if f.name == "suno_01_en.mp3")
    audio, rate = sf.read(str(source), dtype="float32")
    cut = tmp_path / "cut.wav"
    sf.write(str(cut), audio[: int(45.5 * rate)], rate, subtype="FLOAT")
    _compare(tmp_path, [cut], True, taf, precision="bf16")

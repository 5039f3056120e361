"""Weights fingerprints: what the weights are, whatever the file format or location, cached by
the files' identity so a start-up does not re-hash hundreds of megabytes."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from test_mert import tiny, write_published_folder

from apexmusic.embed import EmbedConfig, spec_for
from apexmusic.encoders import Encoder, EncoderBase, load_encoder
from apexmusic.encoders import fingerprint as fp
from apexmusic.encoders.mert import build_model, load_mert
from apexmusic.store import weights_fingerprint


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("APEXMUSIC_CACHE", str(tmp_path / "cache"))


def _folder(tmp_path, fmt: str = "safetensors", seed: int = 3):
    arch = tiny()
    model = build_model(arch, seed=seed)
    folder = tmp_path / f"ckpt-{fmt}-{seed}"
    write_published_folder(model, arch, folder, fmt)
    return arch, model, folder


@pytest.mark.slow  # three MERT checkpoints written and loaded, ~14 s
def test_mert_fingerprint_is_the_content_of_the_loaded_state_dict(tmp_path):
    arch, model, folder = _folder(tmp_path)
    encoder = load_mert(arch, str(folder), "cpu", "fp32")
    expected = weights_fingerprint(
        {
            k.replace("parametrizations.weight.original0", "weight_g").replace(
                "parametrizations.weight.original1", "weight_v"
            ): v
            for k, v in model.state_dict().items()
        }
    )
    assert encoder.fingerprint == expected
    _, _, bin_folder = _folder(tmp_path, "bin")  # same weights as a pickle-free .bin elsewhere
    assert load_mert(arch, str(bin_folder), "cpu", "fp32").fingerprint == expected
    _, _, other = _folder(tmp_path, seed=4)
    assert load_mert(arch, str(other), "cpu", "fp32").fingerprint != expected


def test_the_fingerprint_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    arch, _, folder = _folder(tmp_path)
    first = load_mert(arch, str(folder), "cpu", "fp32").fingerprint
    assert len(list((tmp_path / "cache" / "fingerprints").glob("*.json"))) == 1

    def no_hashing(state):
        raise AssertionError("hashed again")

    monkeypatch.setattr(fp, "state_fingerprint", no_hashing)
    assert load_mert(arch, str(folder), "cpu", "fp32").fingerprint == first  # from the cache
    _, _, other = _folder(tmp_path, seed=5)
    weights = folder / "model.safetensors"
    shutil.copy(other / "model.safetensors", weights)  # new content under the same name
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(AssertionError, match="hashed again"):
        load_mert(arch, str(folder), "cpu", "fp32")


def test_random_weights_get_a_seeded_marker(tmp_path):
    arch = tiny()
    assert load_mert(arch, "random", "cpu", "fp32").fingerprint == "random:mert-v1-95m:seed=0"
    assert load_mert(arch, "random", "cpu", "fp32", seed=7).fingerprint == "random:mert-v1-95m:seed=7"


def test_handcrafted_has_no_weights_and_musicnn_hashes_its_state(tmp_path):
    handcrafted = load_encoder("handcrafted")
    assert handcrafted.fingerprint is None
    musicnn = load_encoder("musicnn-msd", weights="random", device="cpu")
    assert musicnn.fingerprint == fp.state_fingerprint(musicnn.model.state_dict())
    assert musicnn.precision == "fp32" and musicnn.labels["tags"]
    spec = spec_for(musicnn, EmbedConfig(encoder="musicnn-msd", weights="random"))
    assert spec.fingerprint == musicnn.fingerprint and spec.precision == "fp32"


def test_the_protocol_defaults_are_what_the_pipeline_reads():
    class Minimal(EncoderBase):
        name, sample_rate, n_layers, dim, weights_id = "m", 8000, 1, 2, "none"

        def encode(self, segments, lengths):
            return np.zeros((len(segments), 1, 2), np.float32)

        def describe(self):
            return {}

    enc = Minimal()
    assert (enc.fingerprint, enc.precision, enc.default_batch_size, enc.encode_in_decoder) == (
        None,
        "fp32",
        8,
        False,
    )
    assert dict(enc.labels) == {} and enc.extras(np.zeros((1, 4)), np.array([4])) == {}
    assert EmbedConfig(batch_size=None).batch_size_for(enc) == 8
    assert isinstance(enc, Encoder)

"""EmbeddingSpec: one record of what a vector means, and the one compatibility rule."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from apexmusic.errors import ConfigError
from apexmusic.store import EmbeddingSpec, SpecMismatchError, check_compatible, weights_fingerprint


def _spec(**changes) -> EmbeddingSpec:
    base = EmbeddingSpec(
        encoder="mert-v1-95m", n_layers=13, dim=768, sample_rate=24000, weights="m-a-p/MERT-v1-95M"
    )
    return base.with_(**changes)


def test_round_trip_and_legacy_shapes():
    spec = _spec(fingerprint="sha256:ab", decoder="pyav", resampler="soxr-hq", precision="bf16")
    assert EmbeddingSpec.from_json(spec.to_json()) == spec
    legacy = {
        "name": "mert-v1-95m",
        "n_layers": 13,
        "dim": 768,
        "sample_rate": 24000,
        "compat": "reference",
        "hop_seconds": None,
        "weights": "m-a-p/MERT-v1-95M",
        "config_hash": "x",
    }
    old = EmbeddingSpec.from_dict(legacy)
    assert old.pad_last and old.pooling == "all_frames" and old.segment_weighting == "uniform"
    assert old.hop == 30.0


def test_same_weights_elsewhere_agree_and_different_weights_refuse():
    hub = _spec(fingerprint="sha256:aa")
    local = _spec(weights="/models/MERT-v1-95M", fingerprint="sha256:aa")
    assert check_compatible(hub, local) == []
    with pytest.raises(SpecMismatchError, match="different values"):
        check_compatible(hub, _spec(weights="/models/other", fingerprint="sha256:bb"))


def test_unknown_fingerprint_warns_never_refuses(caplog):
    with caplog.at_level(logging.WARNING):
        warnings = check_compatible(_spec(), _spec(weights="/models/MERT-v1-95M", fingerprint="sha256:aa"))
    assert len(warnings) == 1 and "cannot verify" in caplog.text


@pytest.mark.parametrize(
    "change",
    [
        {"dim": 1024},
        {"segment_seconds": 10.0},
        {"compat": "reference"},
        {"pooling": "all_frames"},
        {"encoder": "handcrafted"},
        {"hop_seconds": 15.0},
    ],
)
def test_structural_differences_are_errors(change):
    with pytest.raises(SpecMismatchError):
        check_compatible(_spec(), _spec(**change))


def test_numerical_differences_warn():
    assert len(check_compatible(_spec(precision="fp32"), _spec(precision="bf16"))) == 1


def test_store_key_is_stricter_than_compatibility():
    assert _spec(precision="fp32").store_key() != _spec(precision="bf16").store_key()
    assert _spec(hop_seconds=None).store_key() == _spec(hop_seconds=30.0).store_key()
    same = _spec(weights="/a", fingerprint="sha256:aa").store_key()
    assert same == _spec(weights="/b", fingerprint="sha256:aa").store_key()


def test_invalid_specs_are_config_errors():
    with pytest.raises(ConfigError):
        _spec(compat="bogus")
    with pytest.raises(ConfigError):
        EmbeddingSpec.from_dict({"encoder": "x", "dim": 3})


def test_fingerprint_is_content_not_format():
    g = torch.Generator().manual_seed(0)
    state = {"a.weight": torch.randn(4, 3, generator=g), "b": torch.arange(5)}
    as_numpy = {k: v.numpy().copy() for k, v in state.items()}
    assert weights_fingerprint(state) == weights_fingerprint(as_numpy)
    assert weights_fingerprint(state) == weights_fingerprint(reversed(list(state.items())))
    changed = dict(as_numpy, **{"a.weight": as_numpy["a.weight"] + np.float32(1e-6)})
    assert weights_fingerprint(changed) != weights_fingerprint(as_numpy)
    assert weights_fingerprint({"x": torch.ones(2, dtype=torch.bfloat16)}).startswith("sha256:")

"""MERT encoders: published-layout loading, strict keys, pooling, fidelity, reference compat.

Tiny random HubertConfigs keep these fast; the real-size architecture is only built once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from apexmusic import devices
from apexmusic.compat import REFERENCE_LAYERS, reference_conv_weights, reference_vector
from apexmusic.devices import resolve_precision
from apexmusic.encoders import load_encoder
from apexmusic.encoders.mert import (
    MERT_V1_95M,
    MERT_V1_330M,
    MertEncoder,
    build_model,
    load_folder,
    load_weights,
    plain_pooled,
)
from apexmusic.errors import ModelLoadError

SR = 24000
ROOT = Path(__file__).resolve().parents[1]


def tiny(base=MERT_V1_95M, layers: int = 2):
    return dataclasses.replace(
        base,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def noise(rows: int, samples: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((rows, samples)) * 0.2).astype(np.float32)


def write_published_folder(model, arch, folder: Path, fmt: str) -> None:
    """A folder as the published MERT checkpoints look: MERTModel config, old weight-norm names."""
    folder.mkdir(parents=True)
    config = {
        "architectures": ["MERTModel"],
        "auto_map": {"AutoConfig": "configuration_MERT.MERTConfig", "AutoModel": "modeling_MERT.MERTModel"},
        "model_type": "mert_model",
        "sample_rate": SR,
        "feature_extractor_cqt": False,
        "feature_extractor_cqt_bins": 336,
        "deepnorm": False,
        "attention_relax": -1.0,
        "mask_time_prob": 0.05,
        "layerdrop": 0.05,
        "transformers_version": "4.25.1",
        "hidden_size": arch.hidden_size,
        "num_hidden_layers": arch.num_hidden_layers,
        "num_attention_heads": arch.num_attention_heads,
        "intermediate_size": arch.intermediate_size,
        "conv_dim": list(arch.conv_dim),
        "conv_stride": list(arch.conv_stride),
        "conv_kernel": list(arch.conv_kernel),
        "conv_bias": arch.conv_bias,
        "feat_extract_norm": arch.feat_extract_norm,
        "do_stable_layer_norm": arch.do_stable_layer_norm,
        "num_conv_pos_embeddings": arch.num_conv_pos_embeddings,
        "num_conv_pos_embedding_groups": arch.num_conv_pos_embedding_groups,
        "feat_proj_layer_norm": True,
    }
    (folder / "config.json").write_text(json.dumps(config))
    state = {}
    for key, tensor in model.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        state[key] = tensor.clone().contiguous()
    state["masked_spec_embed"] = torch.rand(arch.hidden_size)  # MERT-only, dropped on load
    if fmt == "bin":
        torch.save(state, folder / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file(state, str(folder / "model.safetensors"))


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
@pytest.mark.parametrize("base", [MERT_V1_95M, MERT_V1_330M], ids=["95m", "330m"])
def test_published_layout_folder_round_trip(tmp_path, fmt, base):
    arch = tiny(base)
    source = build_model(arch, seed=3)
    folder = tmp_path / "ckpt"
    write_published_folder(source, arch, folder, fmt)
    if fmt == "bin":
        written = torch.load(folder / "pytorch_model.bin", weights_only=True)
    else:
        from safetensors.torch import load_file

        written = load_file(str(folder / "model.safetensors"))
    assert "encoder.pos_conv_embed.conv.weight_g" in written and "masked_spec_embed" in written

    loaded, loaded_arch = load_folder(folder, arch)
    assert set(loaded) == set(source.state_dict())
    for key, tensor in source.state_dict().items():
        torch.testing.assert_close(loaded[key], tensor, rtol=0, atol=0)

    audio = noise(2, SR)
    lengths = np.array([SR, SR // 2])
    expected = plain_pooled(source, torch.from_numpy(audio), torch.from_numpy(lengths))
    encoder = MertEncoder(loaded, loaded_arch, str(folder), device="cpu", precision="fp32")
    assert rel_diff(encoder.encode(audio, lengths), expected) <= 1e-5


def test_strict_key_check_reports_missing_and_unexpected(tmp_path):
    arch = tiny()
    model = build_model(arch)
    folder = tmp_path / "ckpt"
    write_published_folder(model, arch, folder, "safetensors")
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    del state["encoder.layers.0.attention.q_proj.weight"]
    state["encoder.layers.0.attention.rotary.weight"] = torch.zeros(3)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(
        ModelLoadError, match=r"1 missing \(encoder.layers.0.attention.q_proj.weight\).*1 unexpected"
    ):
        load_folder(folder, arch)


def test_wrong_size_checkpoint_names_the_right_encoder(tmp_path):
    arch = tiny()
    write_published_folder(build_model(arch), arch, tmp_path / "ckpt", "safetensors")
    with pytest.raises(ModelLoadError, match="use the matching encoder"):
        load_folder(tmp_path / "ckpt", MERT_V1_95M)


def test_bin_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "mert_model"}))
    torch.save({"x": Exploit()}, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="cannot read weights safely"):
        load_folder(folder, MERT_V1_95M)
    assert not marker.exists()


def test_unsupported_mert_options_are_refused(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "mert_model", "feature_extractor_cqt": True})
    )
    with pytest.raises(ModelLoadError, match="feature_extractor_cqt"):
        load_folder(folder, MERT_V1_95M)


def test_hub_id_offline_raises_clear_error(monkeypatch):
    import huggingface_hub

    calls = {}

    def offline(**kwargs):
        calls.update(kwargs)
        raise OSError("Cannot reach https://huggingface.co: no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelLoadError, match=r"m-a-p/MERT-v1-95M.*offline\?.*--weights") as error:
        load_encoder("mert-v1-95m", device="cpu")  # default weights = the hub id
    assert "\n" not in str(error.value) and "no network" not in str(error.value)  # detail: -v only
    assert calls["repo_id"] == "m-a-p/MERT-v1-95M"
    assert not any(p.endswith(".py") for p in calls["allow_patterns"]), "never download remote code"


def test_missing_path_is_a_load_error():
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_weights("./no/such/folder", MERT_V1_95M)


def test_random_weights_are_loud_and_labelled(caplog):
    with caplog.at_level(logging.WARNING, logger="apexmusic.encoders.mert_weights"):
        model, arch, weights_id = load_weights("random", tiny())
    assert weights_id == "random"
    assert any("RANDOM WEIGHTS" in r.message and r.levelno == logging.WARNING for r in caplog.records)
    encoder = MertEncoder(model, arch, weights_id, device="cpu", precision="fp32")
    assert encoder.describe()["weights"] == "random"


def test_no_trust_remote_code_anywhere():
    hits = subprocess.run(
        ["grep", "-rIl", "--include=*.py", "trust_remote_code", str(ROOT / "src"), str(ROOT / "benchmarks")],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert hits == []


def test_real_size_95m_architecture_and_registry():
    encoder = load_encoder("mert-v1-95m", weights="random", device="cpu", precision="fp32")
    assert (encoder.n_layers, encoder.dim, encoder.sample_rate) == (13, 768, SR)
    assert 94e6 < encoder.n_parameters < 96e6  # MERT-v1-95M
    assert encoder.model is None  # the fast path builds no HubertModel
    d = encoder.describe()
    assert d["architecture"]["feat_extract_norm"] == "group" and d["weights"] == "random"


@pytest.mark.parametrize("base", [MERT_V1_95M, MERT_V1_330M], ids=["95m", "330m"])
def test_fp32_fast_path_equals_plain_model(base):
    arch = tiny(base)
    model = build_model(arch, seed=1)
    audio = noise(5, 2 * SR)
    lengths = np.array([2 * SR, 2 * SR, 30001, 5000, 10])  # mixed buckets; 10 < one receptive field
    for i, n in enumerate(lengths):
        audio[i, n:] = 0
    encoder = MertEncoder(model, arch, "random", device="cpu", precision="fp32", batch_size=3)
    padded = np.pad(audio, ((0, 0), (0, 400)))
    expected = plain_pooled(model, torch.from_numpy(padded), torch.from_numpy(np.maximum(lengths, 400)))
    got = encoder.encode(audio, lengths)
    assert got.shape == (5, arch.num_hidden_layers + 1, arch.hidden_size)
    assert rel_diff(got, expected) <= 1e-5


def test_valid_frame_pooling_ignores_padding():
    arch = tiny()
    encoder = MertEncoder(build_model(arch, seed=2), arch, "random", device="cpu", precision="fp32")
    audio = noise(1, 2 * SR)
    valid = 33333
    zeros, loud = audio.copy(), audio.copy()
    zeros[:, valid:] = 0
    loud[:, valid:] = 5.0 * noise(1, 2 * SR - valid, seed=9)
    a = encoder.encode(zeros, np.array([valid]))
    b = encoder.encode(loud, np.array([valid]))
    np.testing.assert_array_equal(a, b)
    alone = encoder.encode(audio[:, :valid], np.array([valid]))
    assert rel_diff(a, alone) <= 1e-5
    # and the padding does change a plain, padding-included pooling
    assert rel_diff(encoder.encode(zeros, np.array([2 * SR])), a) > 1e-3


def _padded_batch() -> tuple[np.ndarray, np.ndarray]:
    audio = noise(3, 2 * SR)
    audio[2, SR:] = 0  # a zero-padded last segment
    return audio, np.array([2 * SR, 2 * SR, SR])


def test_reference_compat_fast_path_pools_the_padded_segment_like_hubert_model():
    """fp32 compat on the fast path, three segments per forward == plain HubertModel run on each
    whole padded segment (all frames pooled, the padding included)."""
    arch = tiny()
    model = build_model(arch, seed=4)
    audio, lengths = _padded_batch()
    encoder = MertEncoder(
        model, arch, "random", device="cpu", precision="fp32", compat="reference", batch_size=3
    )
    assert encoder.precision == "fp32" and encoder.describe()["compat"] == "reference"
    assert [len(rows) for rows in encoder._batches(np.full(3, 2 * SR))] == [3]
    expected = plain_pooled(model, torch.from_numpy(audio), torch.full((3,), 2 * SR))
    assert rel_diff(encoder.encode(audio, lengths), expected) <= 1e-5
    # valid-frame pooling of the same rows differs: compat really pools the padding
    valid_only = MertEncoder(model, arch, "random", device="cpu", precision="fp32")
    assert rel_diff(valid_only.encode(audio, lengths), expected) > 1e-3


def test_reference_compat_runs_at_bf16_close_to_fp32():
    arch = tiny()
    model = build_model(arch, seed=4)
    audio, lengths = _padded_batch()
    encoder = MertEncoder(model, arch, "random", device="cpu", precision="bf16", compat="reference")
    assert encoder.precision == "bf16"
    assert encoder.describe()["pooling"] == "all frames of the zero-padded segment"
    expected = plain_pooled(model, torch.from_numpy(audio), torch.full((3,), 2 * SR))
    got = encoder.encode(audio, lengths)
    assert cosine(got, expected).min() >= 0.999
    assert rel_diff(got, expected) > 0  # really computed in bf16


def test_auto_never_picks_int8_for_reference_compat(monkeypatch):
    monkeypatch.setattr(devices, "INT8_AUTO", True)
    monkeypatch.setattr(devices, "cpu_has_fast_int8", lambda: True)
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: True)
    arch = tiny()
    model = build_model(arch, seed=4)
    assert MertEncoder(model, arch, "random", device="cpu").precision == "int8"
    assert MertEncoder(model, arch, "random", device="cpu", compat="reference").precision == "bf16"
    asked = MertEncoder(model, arch, "random", device="cpu", precision="int8", compat="reference")
    assert asked.precision == "int8"  # an explicit choice is honoured


def test_store_level_reference_vector_equals_the_reference_loop():
    """reference_vector(mean over segments of padded per-layer means) == the published loop."""
    arch = tiny(layers=12)
    model = build_model(arch, seed=5)
    segment = SR  # 1 s segments keep it fast; the loop is the same at 30 s
    song = noise(1, int(2.4 * SR), seed=11)[0]
    n_segments = -(-song.size // segment)
    padded = np.zeros((n_segments, segment), np.float32)
    padded.reshape(-1)[: song.size] = song

    # the reference, literally
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(42)
        conv = torch.nn.Conv1d(4, 1, kernel_size=1)
    vectors = []
    with torch.no_grad():
        for row in padded:
            out = model(torch.from_numpy(row)[None], output_hidden_states=True)
            stacked = torch.stack(
                [out.hidden_states[i].mean(dim=1) for i in REFERENCE_LAYERS], dim=1
            )  # [1, 4, D]
            vectors.append(conv(stacked)[0, 0])
    expected = torch.stack(vectors).mean(0).numpy()

    encoder = MertEncoder(model, arch, "random", device="cpu", precision="fp32", compat="reference")
    per_segment = encoder.encode(padded, np.full(n_segments, segment))
    got = reference_vector(per_segment.mean(axis=0))
    assert rel_diff(got, expected) <= 1e-5
    weight, bias = reference_conv_weights()
    np.testing.assert_array_equal(weight, conv.weight.detach().reshape(-1).numpy())
    assert bias == pytest.approx(float(conv.bias.detach()))


def test_reference_conv_weights_leave_the_global_rng_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    reference_conv_weights()
    reference_vector(np.zeros((13, 4), np.float32))
    torch.testing.assert_close(torch.rand(3), expected)


def real_excerpts(files) -> tuple[np.ndarray, np.ndarray]:
    """The ninth 3 s piece (24-27 s, past the intros) of each song, the first row 20,000 samples
    shorter so that bucketing and masking are exercised."""
    from apexmusic.audio import SegmentConfig, iter_segments

    excerpts = []
    for path in files:
        stream = iter_segments(path, SR, SegmentConfig(segment_seconds=3.0))
        for _ in range(8):
            segment = next(stream)
        excerpts.append(segment.audio[: segment.valid])
    audio = np.stack(excerpts)
    lengths = np.array([audio.shape[1]] * len(excerpts))
    lengths[0] -= 20000
    return audio, lengths


def test_bf16_fast_path_matches_fp32_on_real_songs(real_audio_files):
    """Per-layer vectors within cosine 0.999 of the fp32 plain model on excerpts of the real songs."""
    audio, lengths = real_excerpts(real_audio_files)  # one shorter row: masking in bf16 too
    arch = tiny(layers=4)
    model = build_model(arch, seed=6)
    expected = plain_pooled(model, torch.from_numpy(audio), torch.from_numpy(lengths))
    got = MertEncoder(model, arch, "random", device="cpu", precision="bf16").encode(audio, lengths)
    assert cosine(got, expected).min() >= 0.999


def test_precision_auto_follows_the_hardware(monkeypatch):

    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp16", "cpu") == "fp16"


@pytest.mark.parametrize("base", [MERT_V1_95M, MERT_V1_330M], ids=["95m", "330m"])
def test_parameter_layout_is_hubert_models(base):
    """Our key/shape table (what loading checks against, no transformers) is HubertModel's own,
    at real size (built on the meta device: no memory, no init)."""
    from transformers import HubertModel

    from apexmusic.encoders.mert_weights import parameter_shapes

    with torch.device("meta"):
        model = HubertModel(base.hubert_config())
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert parameter_shapes(base) == expected


def test_loading_and_encoding_import_no_transformers(tmp_path):
    """The fast path builds from a published folder without transformers (start-up cost)."""
    arch = tiny()
    write_published_folder(build_model(arch, seed=3), arch, tmp_path / "ckpt", "safetensors")
    code = f"""
import dataclasses, sys
import numpy as np
from apexmusic.encoders.mert import MERT_V1_95M, MertEncoder, load_weights
arch = dataclasses.replace(MERT_V1_95M, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=32, conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
state, arch, weights_id = load_weights({str(tmp_path / "ckpt")!r}, arch)
encoder = MertEncoder(state, arch, weights_id, device="cpu", precision="bf16")
out = encoder.encode(np.zeros((1, 24000), np.float32), np.array([24000]))
assert out.shape == (1, 3, 16) and np.isfinite(out).all()
print(sorted(m for m in sys.modules if m.split(".")[0] == "transformers"))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_bad_shape_in_published_weights_is_a_load_error(tmp_path):
    arch = tiny()
    folder = tmp_path / "ckpt"
    write_published_folder(build_model(arch), arch, folder, "safetensors")
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    state["encoder.layers.1.feed_forward.output_dense.weight"] = torch.zeros(16, 31)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"1 shapes differ \(encoder.layers.1.feed_forward.output_dense"):
        load_folder(folder, arch)

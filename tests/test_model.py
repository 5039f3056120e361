"""The head: published layout and names, fused == per-head, save/load, MC dropout, mixing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from apexmusic.compat import reference_vector
from apexmusic.errors import ConfigError, ModelLoadError
from apexmusic.model import (
    ApexNet,
    FastDropout,
    FusedHead,
    HeadConfig,
    ReferenceHead,
    ScoringModel,
    build_net,
    fuse_state_dict,
    unfuse_state_dict,
)
from apexmusic.store import EmbeddingSpec
from apexmusic.tasks import ALL_TASKS, POPULARITY_TASKS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomise_bn(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("shared", [2, 3])
def test_published_layout_dims_and_names(shared):
    head = ReferenceHead(HeadConfig(shared=shared))
    state = head.state_dict()
    trunk = [768, 512, 256] if shared == 2 else [768, 512, 384, 256]
    for i in range(shared):
        assert state[f"shared.{i}.block.0.weight"].shape == (trunk[i + 1], trunk[i])
        assert state[f"shared.{i}.block.1.running_var"].shape == (trunk[i + 1],)
    for task in ALL_TASKS:
        assert state[f"branch_{task}.branch.0.block.0.weight"].shape == (128, 256)
        assert state[f"branch_{task}.branch.1.block.0.weight"].shape == (64, 128)
        assert state[f"branch_{task}.branch.2.weight"].shape == (1, 64)
    drops = [m.p for m in head.modules() if isinstance(m, nn.Dropout)]
    assert drops == [0.3] * shared + [0.1] * 14
    assert sum(isinstance(m, nn.GELU) for m in head.modules()) == shared + 14


def test_fused_head_computes_the_per_head_function():
    config = HeadConfig(shared=3)
    torch.manual_seed(5)
    reference = ReferenceHead(config)
    _randomise_bn(reference)
    fused = FusedHead(config)
    fused.load_published_state_dict(reference.state_dict())
    x = torch.randn(300, 768)
    reference.eval(), fused.eval()
    torch.testing.assert_close(fused(x), reference(x), rtol=1e-5, atol=1e-5)
    # Training mode (batch statistics), dropout off: same outputs, same gradients.
    for m in [*reference.modules(), *fused.modules()]:
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    reference.train(), fused.train()
    out_r, out_f = reference(x), fused(x)
    torch.testing.assert_close(out_f, out_r, rtol=1e-4, atol=1e-5)
    out_r.square().sum().backward()
    out_f.square().sum().backward()
    grads = unfuse_state_dict(
        {n: p.grad for n, p in fused.named_parameters()}
        | {k: v for k, v in fused.state_dict().items() if "running" in k or "num_batches" in k},
        config.tasks,
    )
    for name, p in reference.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-3, atol=1e-4)
    # Running statistics were updated identically.
    back = fused.published_state_dict()
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(back[key], value, rtol=1e-5, atol=1e-6)


def test_same_seed_gives_the_per_head_initialisation():
    config = HeadConfig()
    torch.manual_seed(42)
    reference = ReferenceHead(config)
    net = build_net(config, seed=42)
    exported = net.head.published_state_dict()
    assert exported.keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        assert torch.equal(exported[key], value), key
    assert fuse_state_dict(reference.state_dict(), config.tasks).keys() == net.head.state_dict().keys()


def test_fast_dropout_matches_dropout_statistics():
    torch.manual_seed(0)
    for p in (0.1, 0.3):
        drop = FastDropout(p)
        x = torch.ones(400, 1000)
        y = drop(x)
        kept = (y > 0).float().mean().item()
        assert abs(kept - (1 - p)) < 0.004
        assert abs(y.mean().item() - 1.0) < 0.006  # expectation preserved
        drop.eval()
        assert torch.equal(drop(x), x)


def _trained_like_model(mixing="learned", n_layers=3, dim=16, tasks=ALL_TASKS) -> ScoringModel:
    config = HeadConfig(tasks=tasks, n_layers=n_layers, dim=dim, mixing=mixing)
    net = build_net(config, seed=1)
    _randomise_bn(net, seed=2)
    with torch.no_grad():
        net.norm_mean.copy_(torch.randn(net.norm_mean.shape))
        net.norm_std.copy_(torch.rand(net.norm_std.shape) + 0.5)
        if mixing == "learned":
            net.mixer.logits.copy_(torch.tensor([0.5, -1.0, 2.0][:n_layers]))
    return ScoringModel(
        net=net,
        encoder_spec=EmbeddingSpec(encoder="sim", n_layers=n_layers, dim=dim, sample_rate=16000),
        training={"mode": "song"},
        card={"metrics": {"coherence": {"spearman": 0.5}}},
    )


@pytest.mark.parametrize("mixing", ["learned", "mean"])
def test_save_load_round_trip_gives_equal_predictions(tmp_path, mixing):
    model = _trained_like_model(mixing)
    layers = np.random.default_rng(0).standard_normal((50, 3, 16)).astype(np.float32)
    before = model.predict_layers(layers)
    model.save_pretrained(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["README.md", "config.json", "model.safetensors"]
    loaded = ScoringModel.from_pretrained(tmp_path / "m")
    after = loaded.predict_layers(layers)
    assert loaded.tasks == ALL_TASKS and loaded.model_id == model.model_id and loaded.model_id
    assert (
        loaded.encoder_spec == model.encoder_spec and loaded.card["metrics"]["coherence"]["spearman"] == 0.5
    )
    for task in ALL_TASKS:
        np.testing.assert_array_equal(after[task], before[task])
    np.testing.assert_allclose(loaded.layer_weights(), model.layer_weights())
    # Weights are stored under the published names.
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "m" / "model.safetensors")).keys()
    assert "branch_coherence.branch.2.weight" in keys and "shared.1.block.1.running_mean" in keys
    card = (tmp_path / "m" / "README.md").read_text()
    assert "Intended use" in card and "Limitations" in card and "coherence" in card


def test_predict_layers_ranges_batches_and_mc_dropout():
    model = _trained_like_model(tasks=POPULARITY_TASKS + ("clarity",))
    layers = np.random.default_rng(1).standard_normal((257, 3, 16)).astype(np.float32)
    state = {k: v.clone() for k, v in model.net.state_dict().items()}
    plain = model.predict_layers(layers)
    small_batches = model.predict_layers(layers, batch_size=10)
    with_mc = model.predict_layers(layers, mc_samples=8)
    for task in model.tasks:
        np.testing.assert_allclose(small_batches[task], plain[task], rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(with_mc[task], plain[task])
        assert with_mc[f"{task}_std"].shape == (257,) and (with_mc[f"{task}_std"] > 0).all()
    assert set(plain) == set(model.tasks)
    assert (plain["score_streams"] >= 0).all() and (plain["score_streams"] <= 100).all()
    assert (plain["clarity"] >= 1).all() and (plain["clarity"] <= 5).all()
    # MC sampling keeps BatchNorm in eval mode: no running statistic moved.
    for key, value in model.net.state_dict().items():
        assert torch.equal(value, state[key]), key
    repeat = model.predict_layers(layers, mc_samples=8)
    np.testing.assert_array_equal(repeat["clarity_std"], with_mc["clarity_std"])
    with pytest.raises(ConfigError):
        model.predict_layers(np.zeros((4, 2, 16), np.float32))


def test_reference_mixing_is_the_compat_vector():
    config = HeadConfig(n_layers=13, dim=8, mixing="reference", standardize=False)
    net = ApexNet(config).eval()
    layers = torch.randn(20, 13, 8)
    mixed = net.prepare(layers)
    np.testing.assert_allclose(mixed.numpy(), reference_vector(layers.numpy()), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError):
        HeadConfig(n_layers=4, mixing="reference")


def test_bad_model_directories_are_load_errors(tmp_path):
    with pytest.raises(ModelLoadError):
        ScoringModel.from_pretrained(tmp_path)
    model = _trained_like_model()
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError):
        ScoringModel.from_pretrained(tmp_path / "m")
    model.save_pretrained(tmp_path / "n")
    cfg = json.loads((tmp_path / "n" / "config.json").read_text())
    cfg["head"]["shared"] = 3
    (tmp_path / "n" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError):
        ScoringModel.from_pretrained(tmp_path / "n")

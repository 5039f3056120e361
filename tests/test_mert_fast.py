"""The fast MERT path's arithmetic: frame counts, receptive field, FLOP count, compile flag."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_mert import tiny

from apexmusic.encoders.mert import MERT_V1_95M, MERT_V1_330M, MertEncoder, build_model, plain_pooled
from apexmusic.encoders.mert_fast import (
    conv_frame_counts,
    hop_length,
    model_flops_per_second,
    receptive_field,
)

SR = 24000


def test_frame_counts_match_hubert_and_the_75_hz_rate():
    model = build_model(tiny())
    lengths = torch.tensor([400, 719, 720, 24000, 30 * SR])
    ours = conv_frame_counts(lengths, MERT_V1_95M.conv_kernel, MERT_V1_95M.conv_stride)[-1]
    torch.testing.assert_close(ours, model._get_feat_extract_output_lengths(lengths))
    assert receptive_field(MERT_V1_95M.conv_kernel, MERT_V1_95M.conv_stride) == 400
    assert hop_length(MERT_V1_95M.conv_stride) == 320  # 24000 / 320 = 75 frames per second
    assert ours.tolist() == [1, 1, 2, 74, 2249]


@pytest.mark.parametrize("base", [MERT_V1_95M, MERT_V1_330M], ids=["95m", "330m"])
def test_flop_count_matches_torch_flop_counter(base):
    """Our per-layer FLOP formula against torch's own counter on the plain model."""
    from torch.utils.flop_counter import FlopCounterMode

    arch = tiny(base, layers=3)
    model = build_model(arch)
    seconds = 2.0
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, int(seconds * SR)))
    counted = counter.get_total_flops()  # convolutions and linears; torch does not count CPU sdpa
    ours = model_flops_per_second(model.config, segment_seconds=seconds)
    assert (ours["total"] - ours["attention"]) * seconds == pytest.approx(counted, rel=0.01)

    # attention: the two batched matmuls sdpa performs, counted by torch on explicit tensors
    n = int(conv_frame_counts(int(seconds * SR), arch.conv_kernel, arch.conv_stride)[-1])
    heads, head_dim = arch.num_attention_heads, arch.hidden_size // arch.num_attention_heads
    q = torch.zeros(1, heads, n, head_dim)
    with FlopCounterMode(display=False) as attention:
        torch.matmul(torch.matmul(q, q.transpose(-1, -2)), q)
    assert ours["attention"] * seconds == pytest.approx(attention.get_total_flops() * arch.num_hidden_layers)


def test_real_size_95m_costs_about_24_to_28_gflop_per_audio_second():
    config = MERT_V1_95M.hubert_config()
    per = model_flops_per_second(config, segment_seconds=30.0)
    assert 24e9 < per["total"] < 28e9
    assert per["frontend"] == pytest.approx(7.4e9, rel=0.02)


@pytest.mark.slow  # torch.compile tracing (~23 s on 2 busy cores)
def test_compile_flag_routes_through_torch_compile():
    arch = tiny()
    model = build_model(arch, seed=8)
    audio = (np.random.default_rng(1).standard_normal((2, SR)) * 0.2).astype(np.float32)
    lengths = np.array([SR, SR // 2])
    encoder = MertEncoder(
        model, arch, "random", device="cpu", precision="fp32", compile=True, compile_backend="eager"
    )
    assert encoder._engine._transformer is not encoder._engine._transformer_eager
    expected = plain_pooled(model, torch.from_numpy(audio), torch.from_numpy(lengths))
    got = encoder.encode(audio, lengths)
    assert np.abs(got - expected).max() / np.abs(expected).max() <= 1e-5


def test_batches_bucket_by_length_and_respect_the_budget():
    arch = tiny()
    encoder = MertEncoder(
        build_model(arch), arch, "random", device="cpu", precision="fp32", batch_seconds=2.0
    )
    lengths = np.array([SR // 2, SR, SR // 2, SR, SR // 4])
    groups = encoder._batches(lengths)
    order = np.concatenate(groups)
    assert sorted(order.tolist()) == list(range(5))
    assert lengths[order].tolist() == sorted(lengths.tolist(), reverse=True)  # longest first
    for group in groups:
        assert len(group) * lengths[group].max() <= 2 * SR


def test_fused_dense_matches_linear_gelu():
    """The oneDNN fused linear(+GELU) used on CPU bf16 computes what F.linear + F.gelu do."""
    from apexmusic.encoders.mert_fast import _Dense

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 32, generator=generator) * 0.2
    bias = torch.randn(48, generator=generator)
    x = torch.randn(3, 7, 32, generator=generator)
    fused = _Dense(weight.bfloat16(), bias.bfloat16(), fuse=True)
    if not torch.backends.mkldnn.is_available():
        assert fused.packed is None
    for gelu in (False, True):
        expected = torch.nn.functional.linear(x, weight, bias)
        expected = torch.nn.functional.gelu(expected) if gelu else expected
        got = fused(x.bfloat16(), gelu=gelu).float()
        assert got.shape == expected.shape
        assert (got - expected).abs().max() <= 0.05 * expected.abs().max()

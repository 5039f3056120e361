"""int8 MERT on CPU: the quantisers, the int8 linear on both kernels, fidelity on real songs
(per-layer cosine and scores of a reference-format head), and where int8 may be chosen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_mert import cosine, real_excerpts, tiny
from torch._inductor.exc import InductorError

from apexmusic import devices
from apexmusic.compat import reference_vector
from apexmusic.devices import resolve_precision
from apexmusic.encoders import mert_fast, mert_int8
from apexmusic.encoders.mert import MertEncoder, build_model, plain_pooled
from apexmusic.encoders.mert_int8 import ACT_ZERO, Int8Dense, quantize_rows
from apexmusic.errors import ConfigError

SR = 24000


def test_quantize_rows_is_symmetric_per_row_and_within_half_a_step():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(6, 40, generator=generator)
    x[1] *= 100.0  # an outlier row gets its own scale
    x[2, 3] = 50.0  # an outlier value
    x[4] = 0.0  # an all-zero row
    xq, scale = quantize_rows(x)
    assert xq.dtype == torch.int8 and xq.abs().max() <= 127
    torch.testing.assert_close(scale[[0, 1, 2]], x[[0, 1, 2]].abs().amax(1) / 127)
    assert (xq.abs().amax(1)[[0, 1, 2, 3, 5]] == 127).all()
    error = (xq.float() * scale[:, None] - x).abs()
    assert (error <= scale[:, None] / 2 + 1e-6).all()
    assert (xq[4] == 0).all()
    assert scale[0] < scale[1] / 50  # per row, not per tensor


def test_unsigned_rows_are_the_signed_ones_shifted_to_the_zero_point():
    x = torch.randn(5, 33, generator=torch.Generator().manual_seed(2)).bfloat16()
    xq, scale = quantize_rows(x)
    xu, scale_u = quantize_rows(x, ACT_ZERO)
    assert xu.dtype == torch.uint8 and int(xu.min()) >= 1
    assert torch.equal(xu.to(torch.int16) - ACT_ZERO, xq.to(torch.int16)) and torch.equal(scale, scale_u)


VNNI_WITHOUT_AMX = """
import torch
from apexmusic.encoders.mert_int8 import Int8Dense, onednn_qlinear_available
assert onednn_qlinear_available()
dense = Int8Dense(torch.randn(64, 256), torch.randn(64))
out = dense(torch.randn(300, 256).bfloat16())
assert out.shape == (300, 64)
"""


@pytest.mark.skipif(
    not mert_int8.onednn_qlinear_available() or "avx512_vnni" not in Path("/proc/cpuinfo").read_text(),
    reason="needs oneDNN's quantized linear and a CPU with AVX-512 VNNI",
)
def test_int8_gemm_takes_a_vnni_kernel_where_there_is_no_amx():
    # oneDNN capped below AMX behaves as on a VNNI CPU without it (an AMD EPYC, a Cascade Lake):
    # signed int8 sources fell back there to the reference kernel, about 1,000x slower.
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "ONEDNN_VERBOSE": "1"}
    run = subprocess.run([sys.executable, "-c", VNNI_WITHOUT_AMX], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    matmuls = [line for line in run.stdout.splitlines() if ",exec,cpu,matmul," in line]
    assert matmuls and all("src:u8" in m for m in matmuls), matmuls
    assert not [m for m in matmuls if "ref" in m.split(",")[6]], matmuls
    assert all("amx" not in m for m in matmuls), matmuls  # the cap held: this is the no-AMX case


# eager, and the fused torch.compile path (slow: a process's first compile is ~10 s, cold cache)
@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.slow)])
@pytest.mark.parametrize("kernel", ["onednn", "int_mm"])
@pytest.mark.parametrize("rows", [5, 40])  # _int_mm needs > 16 rows: the short case is padded
def test_int8_dense_matches_float_linear(monkeypatch, kernel, rows, compile):
    if kernel == "int_mm":
        monkeypatch.setattr(mert_int8, "onednn_qlinear_available", lambda: False)
    elif not mert_int8.onednn_qlinear_available():
        pytest.skip("this torch build has no oneDNN quantized linear")
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(48, 64, generator=generator) * 0.1
    weight[7] *= 30.0  # a loud output channel: per-channel scales keep the others precise
    bias = torch.randn(48, generator=generator)
    x = torch.randn(2, rows, 64, generator=generator)
    dense = Int8Dense(weight, bias, out_dtype=torch.float32, compile=compile)
    assert dense.kernel == kernel
    for gelu in (False, True):
        expected = F.linear(x, weight, bias)
        expected = F.gelu(expected) if gelu else expected
        got = dense(x, gelu=gelu)
        assert got.shape == expected.shape and got.dtype == torch.float32
        quiet = [c for c in range(48) if c != 7]
        assert (got - expected)[..., quiet].abs().max() <= 0.02 * expected[..., quiet].abs().max()


def _failing_compile(fn, **kwargs):
    """A torch.compile whose compiled function fails the way inductor does without a compiler."""

    def run(*args, **kw):
        raise InductorError(RuntimeError("No working C++ compiler found"), None)

    return run


def test_compiled_falls_back_to_eager_when_compiling_fails(monkeypatch, caplog):
    monkeypatch.setattr(mert_int8.torch, "compile", _failing_compile)
    calls = []

    def double(x):
        calls.append(x)
        return 2 * x

    fn = mert_int8.compiled(double)
    assert fn(3) == 6 and fn(4) == 8
    assert calls == [3, 4]
    assert sum("int8 runs eagerly" in r.message for r in caplog.records) == 1  # logged once


def test_compiled_does_not_swallow_errors_of_the_code_itself(monkeypatch):
    def bad_input(fn, **kwargs):
        def run(*args, **kw):
            raise ValueError("frames must be positive")

        return run

    monkeypatch.setattr(mert_int8.torch, "compile", bad_input)
    fn = mert_int8.compiled(lambda x: x)
    for _ in range(2):  # raised every time: the compiled path is not given up for it
        with pytest.raises(ValueError, match="frames"):
            fn(1)


@pytest.mark.slow  # ~11 s with a cold inductor cache: compiles a tiny engine's layers
def test_int8_engine_same_numbers_compiled_and_eager(monkeypatch, caplog):
    """The compiled int8 layers (fused quantisation and epilogues) and the eager fallback agree;
    the compiled engine is what the real-song fidelity test below checks against fp32."""
    arch = tiny()
    model = build_model(arch, seed=3)
    audio = np.random.default_rng(0).standard_normal((2, SR)).astype(np.float32) * 0.2
    lengths = np.array([SR, SR // 2])
    compiled = MertEncoder(model, arch, "random", device="cpu", precision="int8").encode(audio, lengths)
    monkeypatch.setattr(mert_int8.torch, "compile", _failing_compile)
    monkeypatch.setattr(mert_int8, "_compiled_dense", mert_int8.compiled(Int8Dense.forward))
    eager = MertEncoder(model, arch, "random", device="cpu", precision="int8").encode(audio, lengths)
    # both compiled regions (the transformer layer, the int8 convs) fell back
    assert sum("int8 runs eagerly" in r.message for r in caplog.records) == 2
    assert cosine(compiled, eager).min() >= 0.9999
    np.testing.assert_allclose(compiled, eager, rtol=0, atol=0.02 * np.abs(eager).max())


def reference_format_head(dim: int, seed: int = 0) -> torch.nn.Module:
    """The published head's layout (trunk Linear-BatchNorm-GELU x2, one 3-block branch per task)
    with random weights and non-trivial BatchNorm statistics (running mean ~ N(0, 0.5), running
    variance ~ U(0.5, 2), random affine), as a trained reference checkpoint carries them."""
    generator = torch.Generator().manual_seed(seed)

    def block(n_in: int, n_out: int) -> list[torch.nn.Module]:
        linear = torch.nn.Linear(n_in, n_out)
        torch.nn.init.normal_(linear.weight, 0.0, n_in**-0.5, generator=generator)
        torch.nn.init.normal_(linear.bias, 0.0, 0.1, generator=generator)
        norm = torch.nn.BatchNorm1d(n_out)
        norm.running_mean.normal_(0.0, 0.5, generator=generator)
        norm.running_var.uniform_(0.5, 2.0, generator=generator)
        norm.weight.data.uniform_(0.5, 1.5, generator=generator)
        norm.bias.data.normal_(0.0, 0.1, generator=generator)
        return [linear, norm, torch.nn.GELU()]

    trunk = torch.nn.Sequential(*block(dim, 32), *block(32, 16))
    branches = torch.nn.ModuleList(
        torch.nn.Sequential(*block(16, 8), *block(8, 4), torch.nn.Linear(4, 1)) for _ in range(7)
    )
    return torch.nn.ModuleDict({"trunk": trunk, "branches": branches}).eval()


def head_scores(head: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
    """[songs, 7]: streams and likes on 0-100, the five aesthetics on 1-5."""
    with torch.no_grad():
        shared = head["trunk"](features)
        logits = torch.cat([branch(shared) for branch in head["branches"]], 1)
    return torch.cat([torch.sigmoid(logits[:, :2]) * 100, torch.sigmoid(logits[:, 2:]) * 4 + 1], 1)


@pytest.mark.slow  # ~6-18 s on 2 shared cores: a 12-layer model (the reference layers) in fp32 and int8
@pytest.mark.parametrize("amx", [True, False], ids=["amx-plan", "vnni-plan"])
def test_int8_fast_path_matches_fp32_on_real_songs(real_audio_files, amx, monkeypatch):
    """Per-layer cosine >= 0.999 to the fp32 plain model on excerpts of the seven real songs, and a
    reference-format head scores the int8 vectors within 0.25 (0-100) and 0.01 (1-5) points; for
    both plans (with AMX: ff1 and convs 1-3 in bf16; without: those in int8 too)."""
    monkeypatch.setattr(mert_fast, "cpu_has_amx", lambda: amx)
    audio, lengths = real_excerpts(real_audio_files)  # one shorter row: masking in int8 too
    arch = tiny(layers=12)  # the reference layers 2, 5, 8, 12 exist
    model = build_model(arch, seed=6)
    expected = plain_pooled(model, torch.from_numpy(audio), torch.from_numpy(lengths))
    encoder = MertEncoder(model, arch, "random", device="cpu", precision="int8")
    assert encoder.precision == "int8" and encoder.describe()["precision"] == "int8"
    got = encoder.encode(audio, lengths)
    assert cosine(got, expected).min() >= 0.999
    engine = encoder._engine
    int8_layers = [i for i, c in enumerate(engine._convs) if isinstance(c.dense, Int8Dense)]
    assert int8_layers == list(range(mert_fast.INT8_FIRST_CONV["amx" if amx else "vnni"], len(engine._convs)))
    assert isinstance(engine._layers[0]["ff1"], Int8Dense) is not amx

    fp32 = torch.from_numpy(np.stack([reference_vector(v) for v in expected]))
    int8 = torch.from_numpy(np.stack([reference_vector(v) for v in got]))
    head = reference_format_head(fp32.shape[1])
    reference_scores, int8_scores = head_scores(head, fp32), head_scores(head, int8)
    # off the sigmoid's flat tails, where any error would vanish
    assert ((reference_scores[:, :2] > 5) & (reference_scores[:, :2] < 95)).all()
    assert ((reference_scores[:, 2:] > 1.2) & (reference_scores[:, 2:] < 4.8)).all()
    difference = (int8_scores - reference_scores).abs()
    assert difference[:, :2].max() <= 0.25
    assert difference[:, 2:].max() <= 0.01


def test_amx_counts_only_where_onednn_may_use_it(monkeypatch):
    monkeypatch.setattr(devices, "_cpu_flags", lambda: "flags : avx512_vnni avx512_bf16 amx_bf16 amx_int8")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert devices.cpu_has_amx()
    for cap, allowed in (("ALL", True), ("AVX512_CORE_AMX", True), ("avx512_core_bf16", False)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert devices.cpu_has_amx() is allowed, cap
    monkeypatch.setattr(devices, "_cpu_flags", lambda: "flags : avx512_vnni avx512_bf16")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert not devices.cpu_has_amx()


def test_int8_is_cpu_only_and_opt_in(monkeypatch):
    with pytest.raises(ConfigError, match="int8"):
        resolve_precision("int8", "cpu")  # a caller without an int8 path (musicnn, the trainer)
    assert resolve_precision("int8", "cpu", int8=True) == "int8"
    with pytest.raises(ConfigError, match="CPU only"):
        resolve_precision("int8", "cuda", int8=True)
    monkeypatch.setattr(devices, "cpu_has_fast_int8", lambda: True)
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(devices, "INT8_AUTO", False)
    assert resolve_precision("auto", "cpu", int8=True) == "bf16"
    monkeypatch.setattr(devices, "INT8_AUTO", True)
    assert resolve_precision("auto", "cpu", int8=True) == "int8"
    assert resolve_precision("auto", "cpu") == "bf16"  # never for callers without int8
    monkeypatch.setattr(devices, "cpu_has_fast_int8", lambda: False)
    assert resolve_precision("auto", "cpu", int8=True) == "bf16"
    arch = tiny()
    with pytest.raises(ConfigError, match="int8"):
        MertEncoder(build_model(arch), arch, "random", device="cpu", precision="int8", fast=False)


def test_cli_and_embed_config_accept_int8():
    from apexmusic.cli import _build_parser
    from apexmusic.embed import EmbedConfig

    args = _build_parser().parse_args(["embed", "x.wav", "--out", "o", "--precision", "int8"])
    assert args.precision == "int8"
    EmbedConfig(encoder="mert-v1-95m", precision="int8").validate()
    # compat runs at the precision asked for; only `auto` keeps compat models off int8
    EmbedConfig(encoder="mert-v1-95m", precision="int8", compat="reference").validate()
    with pytest.raises(ConfigError):
        EmbedConfig(encoder="mert-v1-95m", precision="int9").validate()

"""bf16 and int8 GEMM rates on MERT-v1-95M's own shapes, interleaved, and what they allow.

Run (timing-sensitive, so under the shared lock):

    flock /tmp/apexmusic-bench.lock python benchmarks/mert_gemms.py [--rounds 5]

Every int8-able GEMM of one 30 s segment (convs 1-6 as window matmuls, the feature projection,
the transformer's QKV / out / ff1 / ff2) is timed in both precisions with the kernels the
engines use: bf16 as oneDNN's fused linear (bias, and GELU where the model has one, fused), int8
as oneDNN's quantized linear (int8 in, per-channel weight scale, bf16 out; quantisation of the
input excluded). The two precisions alternate shape by shape, round by round (A/B/A/B), and each
shape keeps its best time, so a burst of load on the shared machine hits both alike.

Printed: per shape, both rates; the peaks (best shape) and the MERT mix (all int8-able FLOPs of
a segment over the sum of their best times); the int8 / bf16 roofline ratio of the whole model
(``roofline``: int8-able FLOPs at the int8 rate, the rest, mostly attention, at the bf16 rate);
and, given a measured bf16 forward time, the bound on the int8 / bf16 forward ratio if every
int8-able GEMM ran at its measured int8 time and quantising cost nothing (``gemm_bound``).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

SEGMENT_S = 30.0


def mert_gemm_shapes(arch) -> list[tuple[str, int, int, int, bool, int]]:
    """``(name, rows, k, n, gelu, count)`` of the int8-able GEMMs of one 30 s segment."""
    from apexmusic.encoders.mert_fast import conv_frame_counts

    counts = conv_frame_counts(int(SEGMENT_S * 24000), arch.conv_kernel, arch.conv_stride)
    shapes = [
        (f"conv{i}", int(counts[i]), arch.conv_kernel[i] * arch.conv_dim[i - 1], arch.conv_dim[i], True, 1)
        for i in range(1, len(counts))
    ]
    m, d, ff, layers = int(counts[-1]), arch.hidden_size, arch.intermediate_size, arch.num_hidden_layers
    shapes.append(("projection", m, arch.conv_dim[-1], d, False, 1))
    shapes += [
        ("qkv", m, d, 3 * d, False, layers),
        ("out", m, d, d, False, layers),
        ("ff1", m, d, ff, True, layers),
        ("ff2", m, ff, d, False, layers),
    ]
    return shapes


def _best_interleaved(fns: dict[str, Callable[[], object]], rounds: int, reps: int = 2) -> dict[str, float]:
    """Best seconds per call of each function, the functions alternating within every round."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t) / reps)
    return best


def measure_gemms(arch, rounds: int = 5) -> list[dict]:
    """Per shape: best bf16 and int8 seconds per call, interleaved (see the module docstring)."""
    import torch

    from apexmusic.encoders.mert_fast import _Dense
    from apexmusic.encoders.mert_int8 import (
        ACT_ZERO,
        Int8Dense,
        int8_gemm,
        onednn_qlinear_available,
        quantize_rows,
    )

    generator = torch.Generator().manual_seed(0)
    out = []
    for name, m, k, n, gelu, count in mert_gemm_shapes(arch):
        weight = torch.randn(n, k, generator=generator) / k**0.5
        bias = torch.randn(n, generator=generator) * 0.1
        x = torch.randn(m, k, generator=generator).bfloat16()
        bf16 = _Dense(weight.bfloat16(), bias.bfloat16(), fuse=True)
        fns = {"bf16": lambda bf16=bf16, x=x, gelu=gelu: bf16(x, gelu=gelu)}
        if onednn_qlinear_available():
            int8 = Int8Dense(weight, bias)
            xq, _ = quantize_rows(x, ACT_ZERO)
            fns["int8"] = lambda int8=int8, xq=xq: int8_gemm(
                xq, int8.packed, int8.w_scale, int8.w_zero, torch.bfloat16
            )
        else:
            a8, b8 = (
                torch.randint(-127, 127, (m, k), dtype=torch.int8),
                torch.randint(-127, 127, (k, n), dtype=torch.int8),
            )
            fns["int8"] = lambda a8=a8, b8=b8: torch._int_mm(a8, b8)
        best = _best_interleaved(fns, rounds)
        out.append({"name": name, "m": m, "k": k, "n": n, "count": count, "ops": 2.0 * m * k * n, **best})
        del x, fns
    return out


def summarise(gemms: list[dict]) -> dict[str, float]:
    """Peaks (best shape), MERT-mix rates (G(FL)OP/s) and seconds per segment of the GEMMs."""
    total_ops = sum(g["ops"] * g["count"] for g in gemms)
    summary = {}
    for p in ("bf16", "int8"):
        summary[p] = max(g["ops"] / g[p] for g in gemms) / 1e9
        summary[f"{p}_segment_s"] = sum(g[p] * g["count"] for g in gemms)
        summary[f"{p}_mix"] = total_ops / summary[f"{p}_segment_s"] / 1e9
    return summary


def roofline_ratio(bf16_rate: float, int8_rate: float, flops: dict[str, float]) -> float:
    """int8 / bf16 roofline of the whole model: int8-able FLOPs at ``int8_rate``, the rest at bf16."""
    int8_time = flops["int8"] / int8_rate + flops["rest"] / bf16_rate
    return (flops["total"] / bf16_rate) / int8_time


def gemm_bound(bf16_forward_s: float, summary: dict[str, float]) -> float:
    """Largest int8 / bf16 forward speed ratio with free quantisation: the bf16 forward with its
    int8-able GEMM time replaced by the int8 GEMM time (both per 30 s segment)."""
    return bf16_forward_s / (bf16_forward_s - summary["bf16_segment_s"] + summary["int8_segment_s"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per shape (best kept)")
    parser.add_argument("--forward", type=float, help="measured bf16 forward seconds per 30 s segment")
    args = parser.parse_args()

    import torch
    from bench_embed import flop_split

    from apexmusic.encoders.mert import MERT_V1_95M

    load = os.getloadavg()[0]
    gemms = measure_gemms(MERT_V1_95M, args.rounds)
    summary = summarise(gemms)
    flops = flop_split(MERT_V1_95M)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average {load:.2f}")
    print("\n| GEMM | m x k x n | per segment | bf16 GFLOP/s | int8 GOP/s | int8 / bf16 |")
    print("|---|---|---:|---:|---:|---:|")
    for g in gemms:
        rates = {p: g["ops"] / g[p] / 1e9 for p in ("bf16", "int8")}
        print(
            f"| {g['name']} | {g['m']} x {g['k']} x {g['n']} | {g['count']} | {rates['bf16']:.0f} | "
            f"{rates['int8']:.0f} | {rates['int8'] / rates['bf16']:.2f} |"
        )
    for kind, (b, i) in {"peak (best shape)": ("bf16", "int8"), "MERT mix": ("bf16_mix", "int8_mix")}.items():
        print(
            f"\n{kind}: bf16 {summary[b]:.0f} GFLOP/s, int8 {summary[i]:.0f} GOP/s "
            f"({summary[i] / summary[b]:.2f}x); roofline int8 / bf16 = "
            f"{roofline_ratio(summary[b] * 1e9, summary[i] * 1e9, flops):.2f}x"
        )
    print(
        f"\nint8-able GEMMs per 30 s segment: bf16 {summary['bf16_segment_s'] * 1e3:.0f} ms, "
        f"int8 {summary['int8_segment_s'] * 1e3:.0f} ms"
    )
    if args.forward:
        print(f"bound on int8 / bf16 forward (free quantisation): {gemm_bound(args.forward, summary):.2f}x")
    print(f"load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()

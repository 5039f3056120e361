"""Device and numeric-precision choices, shared by the encoders, the trainer and the scorer.

``auto`` means: CUDA when torch sees one, else CPU; bf16 where the hardware runs it natively
(CUDA with bf16 support, CPUs with AVX512-BF16 or AMX), else fp32. Emulated bf16 on older CPUs
is slower than fp32, so it is never picked automatically there.

``int8`` (int8 GEMMs, see ``encoders/mert_int8.py``) exists only where a caller implements it
(``int8=True``: the MERT fast path on CPU); elsewhere asking for it is a ConfigError. ``auto``
picks it only where ``INT8_AUTO`` says so: the measured speed decides, not the instruction set
(docs/embedding-speed.md has the numbers behind the current choice).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from apexmusic.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")

# int8 is chosen by ``auto`` on CPUs with int8 dot-product instructions only when this is True.
# int8 MERT compiles its fused kernels once per process (~8 s), which would break the start-up
# of short jobs (a 1 s song in 10 s instead of 2 s); with AMX it runs level with bf16, without
# AMX 2.4x faster. So it stays opt-in: ``--precision int8`` for long jobs without AMX
# (docs/embedding-speed.md).
INT8_AUTO = False


@functools.cache
def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return ""


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matmul (AVX512-BF16 or AMX)."""
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", _cpu_flags()))


def cpu_has_fast_int8() -> bool:
    """True on CPUs with int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
    return bool(re.search(r"\b(avx512_vnni|avx_vnni|amx_int8)\b", _cpu_flags()))


def cpu_has_amx() -> bool:
    """True on CPUs with AMX-INT8 tiles that oneDNN may use: an ``ONEDNN_MAX_CPU_ISA`` below AMX
    (e.g. ``AVX512_CORE_BF16``) makes oneDNN run as on a CPU without them, and so does this."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return bool(re.search(r"\bamx_int8\b", _cpu_flags())) and (cap == "ALL" or "AMX" in cap)


def resolve_device(device: str) -> str:
    """``auto`` | ``cpu`` | ``cuda[:N]`` -> a concrete device string; ConfigError when unusable."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not (device == "cpu" or re.fullmatch(r"cuda(:\d+)?", device)):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asked for, but torch sees no CUDA device")
    return device


def resolve_precision(precision: str, device: str, int8: bool = False) -> str:
    """``auto`` -> the fastest precision the device runs natively (see the module docstring).

    ``int8``: the caller implements int8 (the MERT fast path); only on CPU.
    """
    import torch

    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    int8_here = int8 and device == "cpu"
    if precision == "int8" and not int8_here:
        raise ConfigError("precision int8 is implemented for the MERT encoders' fast path on CPU only")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if int8_here and INT8_AUTO and cpu_has_fast_int8():
        return "int8"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def torch_dtype(precision: str):
    """The torch dtype of a resolved floating-point precision name (not ``int8``)."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

"""Device and numeric-precision choices, shared by the encoders, the trainer and the scorer.

``auto`` means: CUDA when torch sees one, else CPU; bf16 where the hardware runs it natively
(CUDA with bf16 support, CPUs with AVX512-BF16 or AMX), else fp32. Emulated bf16 on older CPUs
is slower than fp32, so it is never picked automatically there.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from apexmusic.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matmul (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


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


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> the fastest precision the device runs natively (see the module docstring)."""
    import torch

    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def torch_dtype(precision: str):
    """The torch dtype of a resolved precision name."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

"""int8 linears for the CPU fast path: weights per output channel, activations per token.

``y = x @ W.T + b`` becomes

- ``W ~ s_w[n] * Wq[n, :]``: int8 per output channel, symmetric, computed once at load;
- ``x ~ s_x[m] * xq[m, :]``: int8 per token (row), symmetric, computed on every call from the
  row's absolute maximum (dynamic: nothing is calibrated, so nothing can go stale); handed to
  oneDNN as ``uint8`` at zero point 128 (see :data:`ACT_ZERO`);
- ``y[m, n] = s_x[m] * (s_w[n] * sum_k xq[m, k] Wq[n, k]) + b[n]``: the int32 GEMM and the
  per-channel scale run in oneDNN (``onednn.qlinear_pointwise``: VNNI / AMX-INT8 kernels, output
  in the compute dtype); the per-token scale, the bias and the GELU follow in float32.

oneDNN takes only one activation scale per GEMM, so the per-token scale cannot go into the
kernel, and neither can the bias or the GELU behind it. Run eagerly, quantising (row maximum,
scale, round, cast) and that epilogue are separate passes over the activation that cost several
times the int8 GEMM they serve. Under ``torch.compile`` (``compiled()``; inductor's C++
backend) they fuse with their neighbours: the quantisation into the layer norm or GELU that
produces the activation, the epilogue into the residual add that consumes it. The GEMM is
registered as an opaque op (``apexmusic::int8_gemm``) so that inductor leaves it to oneDNN.
Without a working compiler everything runs eagerly, slower but with the same numbers.

Where oneDNN's quantized linear is missing, ``torch._int_mm`` (int32 out) does the GEMM; rows
are padded to 17 and dimensions must be multiples of 8, the kernel's limits.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

QMAX = 127
# Activations reach oneDNN as uint8 with this zero point (int8 value + 128). Signed int8 sources
# run on AMX, but on CPUs with VNNI and no AMX oneDNN has no fast kernel for them and falls back
# to its reference one (``ref_int8``, ~1,000x slower); unsigned with a zero point takes the
# VNNI brgemm kernel there and the AMX one where AMX exists, with the same integer result.
ACT_ZERO = 128

logger = logging.getLogger(__name__)


@functools.cache
def onednn_qlinear_available() -> bool:
    """True when this torch build has oneDNN's quantized linear and it runs here."""
    try:
        weight = torch.ones(8, 8, dtype=torch.int8)
        packed = torch.ops.onednn.qlinear_prepack(weight, None)
        x = torch.full((2, 8), ACT_ZERO + 1, dtype=torch.uint8)  # the value 1 at zero point 128
        scale, zero = torch.ones(8), torch.zeros(8, dtype=torch.int64)
        out = torch.ops.onednn.qlinear_pointwise(
            x, 1.0, ACT_ZERO, packed, scale, zero, None, 1.0, 0, torch.float32, "none", [], ""
        )
        return bool(torch.equal(out, torch.full((2, 8), 8.0)))
    except (AttributeError, RuntimeError):
        return False


@torch.library.custom_op("apexmusic::int8_gemm", mutates_args=())
def int8_gemm(
    xu: torch.Tensor,
    packed: torch.Tensor,
    w_scale: torch.Tensor,
    w_zero: torch.Tensor,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """``s_w[n] * ((xu - 128) @ Wq.T)`` in ``out_dtype``: oneDNN's quantized linear on a
    prepacked weight, activations as ``uint8`` with zero point :data:`ACT_ZERO`."""
    return torch.ops.onednn.qlinear_pointwise(
        xu, 1.0, ACT_ZERO, packed, w_scale, w_zero, None, 1.0, 0, out_dtype, "none", [], ""
    )


@int8_gemm.register_fake
def _int8_gemm_shape(xu, packed, w_scale, w_zero, out_dtype):
    return xu.new_empty((xu.shape[0], w_scale.shape[0]), dtype=out_dtype)


def quantize_rows(x: torch.Tensor, zero: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric 8-bit per row of a 2-D tensor: ``(xq [m, k], scale float32 [m])``.

    ``xq = round(x / scale) + zero`` with ``scale = max|x_row| / 127``: ``int8`` for ``zero=0``,
    ``uint8`` for ``zero=ACT_ZERO`` (the same values shifted into 1..255). The maximum is exact
    in the input dtype; the division runs in float32 (type promotion, no float32 copy of ``x``).
    """
    scale = torch.linalg.vector_norm(x, float("inf"), dim=1).float().clamp_min(1e-12) / QMAX
    scaled = torch.mul(x, scale.reciprocal()[:, None]).round()  # float32, never in place on x
    if zero:
        return (scaled + zero).to(torch.uint8), scale
    return scaled.to(torch.int8), scale


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel (row) of ``[n, k]``: ``(wq int8, scale float32 [n])``."""
    return quantize_rows(weight.detach().float())


class Int8Dense:
    """``x @ weight.T + bias`` (optionally GELU) with int8 GEMMs; see the module docstring.

    With ``compile=True`` each call runs through one shared ``compiled()`` function (the
    quantisation and the epilogue fused around the GEMM); leave it off where the caller
    compiles a larger region that contains the call.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        out_dtype: torch.dtype = torch.bfloat16,
        compile: bool = False,
    ) -> None:
        wq, self.w_scale = quantize_weight(weight)
        self.out_features, self.in_features = wq.shape
        self.out_dtype = out_dtype
        self.bias = None if bias is None else bias.detach().float().contiguous()
        self.compile = compile
        if onednn_qlinear_available():
            self.kernel = "onednn"
            self.packed = torch.ops.onednn.qlinear_prepack(wq, None)
            self.w_zero = torch.zeros(self.out_features, dtype=torch.int64)
        else:
            if self.in_features % 8 or self.out_features % 8:
                raise ValueError("torch._int_mm needs both matrix dimensions to be multiples of 8")
            self.kernel = "int_mm"
            self.wq_t = wq.t()  # [k, n] as a column-major view of the row-major [n, k]

    def __call__(self, x: torch.Tensor, gelu: bool = False) -> torch.Tensor:
        if self.compile:
            return _compiled_dense(self, x, gelu)
        return self.forward(x, gelu)

    def forward(self, x: torch.Tensor, gelu: bool = False) -> torch.Tensor:
        """The eager computation (also what ``torch.compile`` traces)."""
        shape = x.shape
        onednn = self.kernel == "onednn"
        xq, x_scale = quantize_rows(x.reshape(-1, self.in_features), ACT_ZERO if onednn else 0)
        if onednn:
            y = int8_gemm(xq, self.packed, self.w_scale, self.w_zero, self.out_dtype)
            y = torch.mul(y, x_scale[:, None])  # float32
        else:
            y = self._int_mm(xq) * (x_scale[:, None] * self.w_scale)
        if self.bias is not None:
            y = y + self.bias
        y = F.gelu(y) if gelu else y
        return y.to(self.out_dtype).reshape(*shape[:-1], self.out_features)

    def _int_mm(self, xq: torch.Tensor) -> torch.Tensor:
        rows = xq.shape[0]
        if rows <= 16:  # the kernel needs more than 16 rows
            xq = F.pad(xq, (0, 0, 0, 17 - rows))
        return torch._int_mm(xq, self.wq_t)[:rows].float()


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` under ``torch.compile`` (inductor, dynamic shapes), compiled lazily on first call.

    Where compiling fails (no C++ compiler, an inductor error: a ``TorchDynamoException``) the
    failure is logged once and ``fn`` runs eagerly from then on: same numbers, only slower.
    """
    return _LazyCompiled(fn)


class _LazyCompiled:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self._compiled: Callable[..., Any] | None = torch.compile(fn, dynamic=True)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled is not None:
            try:
                return self._compiled(*args, **kwargs)
            except torch._dynamo.exc.TorchDynamoException as error:  # e.g. no working C++ compiler
                logger.warning("torch.compile failed (%s); int8 runs eagerly, slower", error)
                self._compiled = None
        return self.fn(*args, **kwargs)


_compiled_dense = compiled(Int8Dense.forward)

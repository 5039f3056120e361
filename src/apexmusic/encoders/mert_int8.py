"""int8 linears for the CPU fast path: weights per output channel, activations per token.

``y = x @ W.T + b`` becomes

- ``W ~ s_w[n] * Wq[n, :]``: int8 per output channel, symmetric, computed once at load;
- ``x ~ s_x[m] * xq[m, :]``: int8 per token (row), symmetric, computed on every call from the
  row's absolute maximum (dynamic: nothing is calibrated, so nothing can go stale);
- ``y[m, n] = s_x[m] * (s_w[n] * sum_k xq[m, k] Wq[n, k]) + b[n]``: the int32 GEMM and the
  per-channel scale run in oneDNN (``onednn.qlinear_pointwise``: VNNI / AMX-INT8 kernels, output
  in the compute dtype); the per-token scale and the bias follow in one ``addcmul``.

Where oneDNN's quantized linear is missing, ``torch._int_mm`` (int32 out) does the GEMM; rows
are padded to 17 and dimensions must be multiples of 8, the kernel's limits.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

QMAX = 127


@functools.cache
def onednn_qlinear_available() -> bool:
    """True when this torch build has oneDNN's quantized linear and it runs here."""
    try:
        weight = torch.ones(8, 8, dtype=torch.int8)
        packed = torch.ops.onednn.qlinear_prepack(weight, None)
        x = torch.ones(2, 8, dtype=torch.int8)
        scale, zero = torch.ones(8), torch.zeros(8, dtype=torch.int64)
        out = torch.ops.onednn.qlinear_pointwise(
            x, 1.0, 0, packed, scale, zero, None, 1.0, 0, torch.float32, "none", [], ""
        )
        return bool(torch.equal(out, torch.full((2, 8), 8.0)))
    except (AttributeError, RuntimeError):
        return False


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row of a 2-D tensor: ``(xq int8 [m, k], scale float32 [m])``.

    ``xq = round(x / scale)`` with ``scale = max|x_row| / 127``. The maximum is exact in the
    input dtype; the division runs in float32 (type promotion, no float32 copy of ``x``).
    """
    scale = torch.linalg.vector_norm(x, float("inf"), dim=1).float().clamp_min_(1e-12).div_(QMAX)
    scaled = torch.mul(x, scale.reciprocal()[:, None])  # float32 result, never in place on x
    return scaled.round_().to(torch.int8), scale


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel (row) of ``[n, k]``: ``(wq int8, scale float32 [n])``."""
    return quantize_rows(weight.detach().float())


class Int8Dense:
    """``x @ weight.T + bias`` (optionally GELU) with int8 GEMMs; see the module docstring."""

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype = torch.bfloat16
    ) -> None:
        wq, self.w_scale = quantize_weight(weight)
        self.out_features, self.in_features = wq.shape
        self.out_dtype = out_dtype
        self.bias = None if bias is None else bias.detach().to(out_dtype).contiguous()
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
        shape = x.shape
        xq, x_scale = quantize_rows(x.reshape(-1, self.in_features))
        if self.kernel == "onednn":
            y = torch.ops.onednn.qlinear_pointwise(
                xq,
                1.0,
                0,
                self.packed,
                self.w_scale,
                self.w_zero,
                None,
                1.0,
                0,
                self.out_dtype,
                "none",
                [],
                "",
            )
            y = (
                torch.addcmul(self.bias, y, x_scale[:, None].to(self.out_dtype))
                if self.bias is not None
                else y * x_scale[:, None].to(self.out_dtype)
            )
        else:
            y = self._int_mm(xq) * (x_scale[:, None] * self.w_scale)
            y = (y if self.bias is None else y + self.bias.float()).to(self.out_dtype)
        y = y.reshape(*shape[:-1], self.out_features)
        return F.gelu(y) if gelu else y

    def _int_mm(self, xq: torch.Tensor) -> torch.Tensor:
        rows = xq.shape[0]
        if rows <= 16:  # the kernel needs more than 16 rows
            xq = F.pad(xq, (0, 0, 0, 17 - rows))
        return torch._int_mm(xq, self.wq_t)[:rows].float()

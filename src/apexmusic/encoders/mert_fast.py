"""The fast MERT forward: the same HubertModel weights, computed as large channels-last matmuls.

What differs from ``HubertModel.forward`` (and why the outputs stay the same):

- **Feature extractor as matmuls.** Every conv layer is a strided window gather over a
  channels-last ``[batch, frames, channels]`` tensor followed by one matmul with the weight
  reshaped to ``[kernel * c_in, c_out]``. A window of ``kernel`` consecutive frames is
  ``kernel * c_in`` contiguous numbers, so the gather is an ``as_strided`` view (a copy only
  where windows overlap). No NCL<->NLC transposes between layers.
- **Group norm folded into the first matmul.** The 95M model normalises the first conv's
  output per channel over time. That conv is linear in the input, so its per-channel mean and
  variance follow exactly from the first two moments of the ``[frames, kernel]`` input patches
  (a 10 x 10 matrix, computed in float64 from the float32 audio). Scale and shift then fold into
  the conv weights: conv + group norm is one batched matmul, and the 147 MB activation of a
  30 s segment is never re-read for statistics.
- **Fused QKV and scaled-dot-product attention.** Query, key and value come from one
  ``[dim, 3 * dim]`` matmul, attention runs through ``F.scaled_dot_product_attention``.
- **No work on padding.** Callers pass each row's valid length; per-layer valid frame counts
  follow from the conv arithmetic. Padded frames are zeroed before the positional conv and
  masked out of attention and pooling, so a row's result equals running its valid samples
  alone through the plain model. Rows are bucketed by length and each bucket is trimmed to its
  longest row (rounded up to the conv hop), so a short last segment costs its own length.
- **Pooling on the fly.** Each hidden state is time-averaged (float32 accumulation) as soon as
  it exists; the 13 (25) full ``[frames, dim]`` states are never held at once.

The compute dtype is a choice (``float32`` is the exact mode, ``bfloat16`` the fast one). The
positional conv weight is materialised from its weight-norm parameters once, in float32.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from apexmusic.devices import cpu_has_amx


def conv_frame_counts(lengths: Any, kernels: Sequence[int], strides: Sequence[int]) -> list[Any]:
    """Valid frames after each conv layer for inputs of ``lengths`` samples (ints, arrays or tensors).

    A frame is valid when its whole receptive field lies in the valid samples:
    ``n_out = (n_in - kernel) // stride + 1`` per layer, as in HubertModel.
    """
    counts = []
    n = lengths
    for kernel, stride in zip(kernels, strides, strict=True):
        n = (n - kernel) // stride + 1
        counts.append(n)
    return counts


def receptive_field(kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Samples needed for one output frame (400 for MERT)."""
    field = 1
    for kernel, stride in zip(reversed(kernels), reversed(strides), strict=True):
        field = (field - 1) * stride + kernel
    return field


def hop_length(strides: Sequence[int]) -> int:
    """Samples between output frames (320 for MERT: 75 frames per second at 24 kHz)."""
    return math.prod(strides)


class _Dense:
    """``x @ weight.T + bias``, optionally followed by GELU.

    On CPU in bf16 this is one oneDNN call with a pre-packed weight and bias + GELU fused into
    the matmul (``torch.ops.mkldnn._linear_pointwise``, the kernel inductor's CPU backend
    emits); elsewhere, and whenever that op is missing, plain ``F.linear`` + ``F.gelu``.
    ``opaque=True`` routes the oneDNN call through a custom op that ``torch.compile`` leaves
    alone (inductor would otherwise re-lower it around a weight it cannot treat as constant).
    """

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, fuse: bool, opaque: bool = False
    ) -> None:
        self.weight, self.bias = weight, bias
        self.packed = None
        self.opaque = opaque
        if fuse and _fused_linear_works(weight.dtype):
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
            self.weight = None  # the packed copy is the only one needed
            if opaque:
                _register_opaque_linear()

    def __call__(self, x: torch.Tensor, gelu: bool = False) -> torch.Tensor:
        if self.packed is not None:
            if self.opaque:
                return torch.ops.apexmusic.fused_linear(x.contiguous(), self.packed, self.bias, gelu)
            return _fused_linear(x.contiguous(), self.packed, self.bias, gelu)
        y = F.linear(x, self.weight, self.bias)
        return F.gelu(y) if gelu else y


def _fused_linear(
    x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, gelu: bool
) -> torch.Tensor:
    attr, algorithm = ("gelu", "none") if gelu else ("none", "")
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, attr, [], algorithm)


@functools.cache
def _register_opaque_linear() -> None:
    """``apexmusic::fused_linear``: ``_fused_linear`` as an op ``torch.compile`` does not look into."""
    op = torch.library.custom_op("apexmusic::fused_linear", _fused_linear, mutates_args=())

    @op.register_fake
    def _shape(x, packed, bias, gelu):
        return x.new_empty((*x.shape[:-1], packed.shape[0]))


@functools.cache
def _fused_linear_works(dtype: torch.dtype) -> bool:
    """Whether oneDNN's fused linear runs here (probed once per process on a tiny weight)."""
    try:
        weight = torch.ones(8, 8, dtype=dtype)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        out = torch.ops.mkldnn._linear_pointwise(torch.ones(2, 8, dtype=dtype), packed, None, "none", [], "")
        return bool(torch.equal(out.float(), torch.full((2, 8), 8.0)))
    except (AttributeError, RuntimeError):
        return False


@dataclass
class _ConvLayer:
    kernel: int
    stride: int
    dense: _Dense  # weight [c_out, kernel * c_in], window-major (frame, then channel)
    layer_norm: tuple[torch.Tensor, torch.Tensor, float] | None  # "layer" feature extractors


@dataclass
class _GroupNorm:
    weight64: torch.Tensor  # first conv weight, float64 [c_out, kernel]
    bias64: torch.Tensor | None
    gamma64: torch.Tensor
    beta64: torch.Tensor
    eps: float


# Under int8 on CPUs with AMX, the conv layers before this one and every ff1 stay in the compute
# dtype. There bf16 GEMMs run at ~60 % of the int8 rate, and convs 1-3 (the longest GEMMs, 72k,
# 36k and 18k rows per 30 s, over overlapping windows: every frame quantised 1.5 times) and ff1
# (bias + GELU fused into oneDNN's bf16 GEMM, a 3072-wide output to quantise in int8) cost more
# in int8 than they save. Without AMX (VNNI int8 at 2-6x the bf16 rate) int8 pays for all of
# them: every conv from 1 and ff1 run int8. Conv 0 (one input channel, ten taps) never does.
# Measured on an AMX Xeon, with and without oneDNN capped below AMX: docs/embedding-speed.md.
INT8_FIRST_CONV = {"amx": 4, "vnni": 1}


class FastMert:
    """Pooled hidden states of a MERT model, computed fast from its weights.

    ``state`` holds the weights under transformers ``HubertModel`` names (as
    ``mert_weights.load_weights`` returns them, or ``HubertModel.state_dict()``); ``arch`` is the
    ``MertArch`` (or any object with the same fields, e.g. a HubertConfig). Weights are converted
    to ``dtype`` once (in float32 the given tensors are reused, read-only). With ``int8=True``
    the linears and conv layers from ``INT8_FIRST_CONV`` on (counting from 0; with AMX, ff1 too
    stays in ``dtype``) run as int8 GEMMs
    (``mert_int8``), each transformer layer, the projection and those convs under
    ``torch.compile`` where a compiler works (the quantisation and epilogues fuse only there);
    everything else in ``dtype``.
    """

    def __init__(
        self,
        state: Mapping[str, torch.Tensor],
        arch: Any,
        dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str = "cpu",
        compile: bool = False,
        compile_backend: str = "inductor",
        compile_mode: str | None = None,
        int8: bool = False,
    ) -> None:
        self.config = arch
        self.dtype = dtype
        self.device = torch.device(device)
        self.kernels = list(arch.conv_kernel)
        self.strides = list(arch.conv_stride)
        self.stable = bool(arch.do_stable_layer_norm)
        self.n_heads = int(arch.num_attention_heads)
        if arch.feat_extract_activation != "gelu" or arch.hidden_act != "gelu":
            raise ValueError("the fast MERT path implements the gelu activations MERT uses")
        if getattr(arch, "conv_pos_batch_norm", False):
            raise ValueError("the fast MERT path does not implement conv_pos_batch_norm")
        if int8 and self.device.type != "cpu":
            raise ValueError("int8 MERT runs on CPU only")
        self.int8 = int8
        self._amx = int8 and cpu_has_amx()
        self._compile = compile
        self._fuse = (
            self.device.type == "cpu" and dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
        )
        self._state = state
        with torch.no_grad():
            self._convs, self._group_norm = self._prepare_feature_extractor(arch)
            self._prepare_transformer(arch)
        del self._state
        self._transformer = self._transformer_eager
        if int8 and not compile:
            from apexmusic.encoders.mert_int8 import compiled

            # int8 pays only with its quantisation and epilogues fused: one compiled layer,
            # shared by all layers (their weights are arguments, not constants).
            self._layer = compiled(self._layer)
        if compile:
            self._transformer = torch.compile(
                self._transformer_eager, backend=compile_backend, mode=compile_mode, dynamic=True
            )

    # ------------------------------------------------------------------ preparation
    def _get(self, name: str) -> torch.Tensor | None:
        tensor = self._state.get(name)
        return None if tensor is None else tensor.detach()

    def _to(self, tensor: torch.Tensor | None, dtype: torch.dtype | None = None) -> torch.Tensor | None:
        if tensor is None:
            return None
        return tensor.detach().to(device=self.device, dtype=dtype or self.dtype).contiguous()

    def _norm(self, prefix: str, eps: float) -> tuple[torch.Tensor, torch.Tensor, float]:
        return (self._to(self._get(prefix + ".weight")), self._to(self._get(prefix + ".bias")), eps)

    def _dense(self, weight: torch.Tensor, bias: torch.Tensor | None, compile_call: bool = False) -> Any:
        if self.int8:
            from apexmusic.encoders.mert_int8 import Int8Dense

            return Int8Dense(weight, bias, out_dtype=self.dtype, compile=compile_call)
        return _Dense(self._to(weight), self._to(bias), self._fuse)

    def _dense_ff1(self, weight: torch.Tensor, bias: torch.Tensor) -> Any:
        """ff1 is int8 only without AMX (see ``INT8_FIRST_CONV``); in dtype, under int8 it goes
        through an op that the compiled layer around it leaves to oneDNN."""
        if self.int8 and not self._amx:
            return self._dense(weight, bias)
        return _Dense(self._to(weight), self._to(bias), self._fuse, opaque=self.int8)

    def _prepare_feature_extractor(self, arch: Any) -> tuple[list[_ConvLayer], _GroupNorm | None]:
        convs: list[_ConvLayer] = []
        group_norm = None
        for index in range(len(arch.conv_dim)):
            prefix = f"feature_extractor.conv_layers.{index}."
            conv_weight, conv_bias = self._get(prefix + "conv.weight"), self._get(prefix + "conv.bias")
            c_out, c_in, kernel = conv_weight.shape
            # [c_out, c_in, k] -> [c_out, k, c_in] -> [c_out, k * c_in]: matches the window layout.
            weight = conv_weight.permute(0, 2, 1).reshape(c_out, kernel * c_in)
            norm = None
            has_norm = self._get(prefix + "layer_norm.weight") is not None
            if has_norm and arch.feat_extract_norm == "layer":
                norm = self._norm(prefix + "layer_norm", 1e-5)  # nn.LayerNorm's default eps
            elif has_norm:
                if index != 0 or c_in != 1:
                    raise ValueError("group norm is only expected after the first conv layer")
                group_norm = _GroupNorm(
                    weight64=conv_weight.reshape(c_out, kernel).to(self.device, torch.float64),
                    bias64=None if conv_bias is None else conv_bias.to(self.device, torch.float64),
                    gamma64=self._get(prefix + "layer_norm.weight").to(self.device, torch.float64),
                    beta64=self._get(prefix + "layer_norm.bias").to(self.device, torch.float64),
                    eps=1e-5,  # nn.GroupNorm's default eps
                )
            dense = (
                self._dense(weight, conv_bias, compile_call=True)
                if index >= INT8_FIRST_CONV["amx" if self._amx else "vnni"]
                else _Dense(self._to(weight), self._to(conv_bias), self._fuse)
            )
            convs.append(
                _ConvLayer(
                    kernel=int(kernel), stride=int(arch.conv_stride[index]), dense=dense, layer_norm=norm
                )
            )
        return convs, group_norm

    def _prepare_transformer(self, arch: Any) -> None:
        eps = float(arch.layer_norm_eps)
        self._proj_norm = (
            self._norm("feature_projection.layer_norm", eps)
            if self._get("feature_projection.layer_norm.weight") is not None
            else None
        )
        self._proj = self._dense(
            self._get("feature_projection.projection.weight"),
            self._get("feature_projection.projection.bias"),
            compile_call=not self._compile,
        )
        pos = "encoder.pos_conv_embed.conv."
        # Materialise the weight-norm parametrisation (norm over all dims but the last) in float32.
        g = self._get(pos + "parametrizations.weight.original0").float()
        v = self._get(pos + "parametrizations.weight.original1").float()
        self._pos_kernel = int(arch.num_conv_pos_embeddings)
        self._pos_groups = int(arch.num_conv_pos_embedding_groups)
        weight = g * v / v.norm(dim=(0, 1), keepdim=True)
        self._pos_dtype = self.dtype if self._conv_dtype_agrees(weight) else torch.float32
        self._pos_weight = self._to(weight, self._pos_dtype)
        self._pos_bias = self._to(self._get(pos + "bias"), self._pos_dtype)
        self._enc_norm = self._norm("encoder.layer_norm", eps)

        self._layers = []
        for index in range(arch.num_hidden_layers):
            p = f"encoder.layers.{index}."
            a = p + "attention."
            qkv_w = torch.cat([self._get(f"{a}{n}_proj.weight") for n in "qkv"], 0)
            qkv_b = torch.cat([self._get(f"{a}{n}_proj.bias") for n in "qkv"], 0)
            ff = p + "feed_forward."
            self._layers.append(
                {
                    "qkv": self._dense(qkv_w, qkv_b),
                    "out": self._dense(self._get(a + "out_proj.weight"), self._get(a + "out_proj.bias")),
                    "ln1": self._norm(p + "layer_norm", eps),
                    "ff1": self._dense_ff1(
                        self._get(ff + "intermediate_dense.weight"), self._get(ff + "intermediate_dense.bias")
                    ),
                    "ff2": self._dense(
                        self._get(ff + "output_dense.weight"), self._get(ff + "output_dense.bias")
                    ),
                    "ln2": self._norm(p + "final_layer_norm", eps),
                }
            )

    def _conv_dtype_agrees(self, weight: torch.Tensor) -> bool:
        """Whether the grouped positional conv in ``dtype`` matches float32 on a probe input.

        Some oneDNN bf16 grouped-conv kernels return wrong numbers for narrow groups (seen on
        AMX CPUs with 8 channels per group; fine at MERT's 48); those shapes run in float32.
        """
        if self.dtype == torch.float32:
            return True
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(1, weight.shape[0], 16, generator=generator).to(self.device)
        w = weight.to(self.device)
        conv = functools.partial(F.conv1d, padding=self._pos_kernel // 2, groups=self._pos_groups)
        expected = conv(x, w)
        got = conv(x.to(self.dtype), w.to(self.dtype)).float()
        return bool((got - expected).abs().max() <= 0.05 * expected.abs().max())

    # ------------------------------------------------------------------ forward
    @torch.inference_mode()
    def pooled(
        self, audio: torch.Tensor, lengths: torch.Tensor, stages: dict[str, float] | None = None
    ) -> torch.Tensor:
        """Time-mean of every hidden state over each row's valid frames.

        Args:
            audio: float32 ``[batch, samples]`` on this engine's device, zero-padded rows.
            lengths: int64 ``[batch]`` valid samples per row (each >= the receptive field).
            stages: optional dict that receives seconds spent in ``frontend`` / ``transformer``
                (synchronises the device; for benchmarks).

        Returns:
            float32 ``[batch, n_hidden_layers + 1, hidden_size]``.
        """
        clock = _StageClock(stages, self.device)
        lengths = lengths.to(self.device)
        counts = conv_frame_counts(lengths, self.kernels, self.strides)
        features = self._feature_extractor(audio, lengths, counts)
        clock.lap("frontend")
        pooled = self._transformer(features, counts[-1])
        clock.lap("transformer")
        return pooled

    def _feature_extractor(
        self, audio: torch.Tensor, lengths: torch.Tensor, counts: list[torch.Tensor]
    ) -> torch.Tensor:
        first = self._convs[0]
        patches = audio.unfold(1, first.kernel, first.stride)  # [B, n0, k] view of the float32 audio
        if self._group_norm is not None:
            hidden = self._first_conv_group_norm(patches, counts[0])
        else:
            hidden = self._finish(first.dense(patches.to(self.dtype)), first)
        for layer in self._convs[1:]:
            n_out = (hidden.shape[1] - layer.kernel) // layer.stride + 1
            windows = hidden.as_strided(
                (hidden.shape[0], n_out, layer.kernel * hidden.shape[2]),
                (hidden.stride(0), layer.stride * hidden.shape[2], 1),
            )
            if layer.layer_norm is None:
                hidden = layer.dense(windows, gelu=True)
            else:
                hidden = self._finish(layer.dense(windows), layer)
        return hidden

    def _first_conv_group_norm(self, patches: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """First conv + per-channel group norm over valid frames + GELU, as one batched matmul.

        The statistics come exactly (float64) from the float32 input; scale and shift fold into
        the weights, the shift through a column of ones appended to the input patches.
        """
        gn = self._group_norm
        weights = []
        for row, n in enumerate(valid.tolist()):
            x = patches[row, :n].to(torch.float64)  # [n, k]
            m1 = x.mean(0)
            m2 = (x.T @ x) / n
            w = gn.weight64
            mean = w @ m1
            var = torch.einsum("ck,kl,cl->c", w, m2, w) - mean * mean
            if gn.bias64 is not None:
                mean = mean + gn.bias64
            scale = gn.gamma64 / torch.sqrt(var.clamp_min(0.0) + gn.eps)
            shift = gn.beta64 - mean * scale + (0.0 if gn.bias64 is None else gn.bias64 * scale)
            weights.append(torch.cat([w.T * scale, shift[None]], 0))  # [k + 1, c]
        batch, frames, kernel = patches.shape
        augmented = torch.ones(batch, frames, kernel + 1, dtype=self.dtype, device=patches.device)
        augmented[..., :kernel] = patches
        return F.gelu(torch.bmm(augmented, torch.stack(weights).to(self.dtype)))

    def _finish(self, hidden: torch.Tensor, layer: _ConvLayer) -> torch.Tensor:
        if layer.layer_norm is not None:
            weight, bias, eps = layer.layer_norm
            hidden = F.layer_norm(hidden, (hidden.shape[-1],), weight, bias, eps)
        return F.gelu(hidden)

    def _transformer_eager(self, features: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        batch, n, _ = features.shape
        frames = frames.clamp(max=n)
        full = bool((frames == n).all())
        mask = torch.arange(n, device=features.device)[None, :] < frames[:, None]  # [B, n]

        hidden = features
        if self._proj_norm is not None:
            w, b, eps = self._proj_norm
            hidden = F.layer_norm(hidden, (hidden.shape[-1],), w, b, eps)
        hidden = self._proj(hidden)
        if not full:
            hidden = hidden * mask[..., None].to(hidden.dtype)  # padded frames are zero for the pos conv
        hidden = hidden + self._positional(hidden)
        if not self.stable:
            hidden = F.layer_norm(hidden, (hidden.shape[-1],), *self._enc_norm[:2], self._enc_norm[2])
        attn_mask = None if full else mask[:, None, None, :]

        pooled = [_masked_mean(hidden, frames, full)]
        for index, params in enumerate(self._layers):
            hidden = self._layer(hidden, params, attn_mask)
            if self.stable and index == len(self._layers) - 1:
                # MERT's published (transformers 4.x) convention: the last state is layer-normed.
                hidden = F.layer_norm(hidden, (hidden.shape[-1],), *self._enc_norm[:2], self._enc_norm[2])
            pooled.append(_masked_mean(hidden, frames, full))
        return torch.stack(pooled, dim=1)

    def _positional(self, hidden: torch.Tensor) -> torch.Tensor:
        x = F.conv1d(
            hidden.transpose(1, 2).to(self._pos_dtype),
            self._pos_weight,
            self._pos_bias,
            padding=self._pos_kernel // 2,
            groups=self._pos_groups,
        )
        if self._pos_kernel % 2 == 0:
            x = x[:, :, :-1]
        return F.gelu(x).transpose(1, 2).to(self.dtype)

    def _layer(self, hidden: torch.Tensor, p: dict[str, Any], attn_mask: torch.Tensor | None) -> torch.Tensor:
        if self.stable:
            hidden = hidden + self._attention(_ln(hidden, p["ln1"]), p, attn_mask)
            return hidden + self._feed_forward(_ln(hidden, p["ln2"]), p)
        hidden = _ln(hidden + self._attention(hidden, p, attn_mask), p["ln1"])
        return _ln(hidden + self._feed_forward(hidden, p), p["ln2"])

    def _attention(
        self, hidden: torch.Tensor, p: dict[str, Any], attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        batch, n, dim = hidden.shape
        qkv = p["qkv"](hidden).view(batch, n, 3, self.n_heads, dim // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, n, head_dim]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return p["out"](out.transpose(1, 2).reshape(batch, n, dim))

    def _feed_forward(self, hidden: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        return p["ff2"](p["ff1"](hidden, gelu=True))


def _ln(hidden: torch.Tensor, params: tuple[torch.Tensor, torch.Tensor, float]) -> torch.Tensor:
    weight, bias, eps = params
    return F.layer_norm(hidden, (hidden.shape[-1],), weight, bias, eps)


def _masked_mean(hidden: torch.Tensor, frames: torch.Tensor, full: bool) -> torch.Tensor:
    """Mean over each row's first ``frames`` frames, accumulated in float32: ``[B, n, d]`` -> ``[B, d]``."""
    if full:
        return hidden.sum(1, dtype=torch.float32) / hidden.shape[1]
    return torch.stack([hidden[b, :n].sum(0, dtype=torch.float32) / n for b, n in enumerate(frames.tolist())])


class _StageClock:
    def __init__(self, stages: dict[str, float] | None, device: torch.device) -> None:
        import time

        self._time = time.perf_counter
        self.stages = stages
        self.device = device
        self.last = self._time()

    def lap(self, name: str) -> None:
        if self.stages is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = self._time()
        self.stages[name] = self.stages.get(name, 0.0) + now - self.last
        self.last = now


def model_flops_per_second(
    config: Any, segment_seconds: float = 30.0, sample_rate: int = 24000
) -> dict[str, float]:
    """Multiply-add FLOPs (2 per MAC) per second of audio, counted layer by layer.

    Attention scores grow with the segment length, so the count depends on ``segment_seconds``.
    """
    samples = int(round(segment_seconds * sample_rate))
    counts = conv_frame_counts(samples, config.conv_kernel, config.conv_stride)
    c_in = 1
    frontend = 0.0
    for n, kernel, c_out in zip(counts, config.conv_kernel, config.conv_dim, strict=True):
        frontend += 2.0 * n * kernel * c_in * c_out
        c_in = c_out
    n = counts[-1]
    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    projection = 2.0 * n * c_in * d
    positional = 2.0 * n * d * (d // config.num_conv_pos_embedding_groups) * config.num_conv_pos_embeddings
    dense = layers * 2.0 * n * (4 * d * d + 2 * d * ff)
    attention = layers * 2.0 * 2 * n * n * d
    per = {
        "frontend": frontend,
        "projection+positional": projection + positional,
        "transformer_dense": dense,
        "attention": attention,
    }
    per = {k: v / segment_seconds for k, v in per.items()}
    per["total"] = sum(per.values())
    return per


__all__ = [
    "FastMert",
    "conv_frame_counts",
    "hop_length",
    "model_flops_per_second",
    "receptive_field",
]

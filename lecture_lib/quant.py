"""Quantization, from number formats to int8/int4 weight-only layers and an int8 KV cache.

Inference is memory-bound: every decode step reads every weight (and the KV cache) once, so
fewer bytes per number means faster tokens. The lecture's pieces, in the order of notebook 6:

- **Formats.** ``format_table()`` reads bits, range, smallest normal and eps of fp32, bf16, fp16,
  fp8 (e4m3fn, e5m2, and e4m3fnuz, whose max of 240 is the lecture's figure; the H100/OCP e4m3fn
  goes to 448), int8 and int4 from ``torch.finfo``/``torch.iinfo``.
- **The mechanics.** ``quantize``/``dequantize`` with an explicit scale and zero point: the
  lecture's x = 5.2342, scale 0.1, zero point 4 gives q = 56 and x_hat = 5.2.
- **Schemes and granularity.** absmax (symmetric, zero point 0) and zero-point (asymmetric), with
  one scale per tensor, per output channel (row) or per group of ``group_size`` consecutive input
  weights; any width from 2 to 8 bits. Rounding to the nearest level errs by at most half a step:
  ``|w - w_hat| <= scale / 2`` for every element (``error_bound``).
- **Weight-only layers.** ``Int8Linear`` (per-output-channel scales) and ``Int4Linear`` (groups
  along the input dim, scales and zero points, two weights packed in a byte), swapped into a
  model by ``quantize_model_``; ``weight_bytes`` counts what is really stored.
- **KV cache.** ``Int8KVCache`` stores keys and values as int8 with one scale per (token, head).
- **Outliers.** ``outlier_channels``, ``int8_matmul`` and ``llm_int8_matmul``: why one large
  activation ruins absmax, and LLM.int8()'s fix (outlier columns kept in high precision).

Shapes use the lecture's letters where they apply: a weight is [out in] as in ``nn.Linear``.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F_
from torch import nn

from . import int8_gemv
from .config import ModelConfig
from .kv_cache import KVCache

# --------------------------------------------------------------------------------------------
# Number formats
# --------------------------------------------------------------------------------------------

_FORMATS = [
    # (name, dtype attribute on torch or None, note)
    ("fp32", "float32", "parameters and optimizer states in training"),
    ("bf16", "bfloat16", "default for inference: fp32's range, 8 bits of precision"),
    ("fp16", "float16", "more precision than bf16, far less range (max 65504)"),
    ("fp8 e4m3fn", "float8_e4m3fn", "H100/OCP fp8 for weights and activations: max 448"),
    ("fp8 e5m2", "float8_e5m2", "fp8 with more range, less precision (gradients)"),
    ("fp8 e4m3fnuz", "float8_e4m3fnuz",
     "AMD/Graphcore variant (exponent bias 8, no -0): max 240, the lecture's figure"),
    ("int8", "int8", "integers; a scale maps them to real values"),
    ("int4", None, "no torch dtype: [-8, 7] by definition, two packed in a byte"),
]


def format_table() -> list[dict]:
    """One row per format: bits, bytes, largest value, most negative value, smallest positive
    normal (for integers: the step, 1), smallest subnormal, eps (the gap from 1 to the next
    representable number: 2**-mantissa_bits), exponent and mantissa bits, and a note.

    Read from ``torch.finfo``/``torch.iinfo``; int4 has no torch dtype, so its row is by
    definition (4-bit two's complement). Formats this torch lacks are left out.
    """
    rows = []
    for name, attr, note in _FORMATS:
        if attr is None:  # int4
            rows.append(dict(format=name, dtype=None, bits=4, bytes=0.5, max=7, min=-8,
                             smallest_normal=1, smallest_subnormal=None, eps=None,
                             exponent_bits=None, mantissa_bits=None, note=note))
            continue
        dtype = getattr(torch, attr, None)
        if dtype is None:
            continue
        if dtype.is_floating_point:
            fi = torch.finfo(dtype)
            mantissa = round(-math.log2(fi.eps))
            rows.append(dict(
                format=name, dtype=str(dtype).replace("torch.", ""), bits=fi.bits,
                bytes=fi.bits / 8, max=fi.max, min=fi.min, smallest_normal=fi.smallest_normal,
                # The smallest subnormal is the smallest normal divided by 2**mantissa_bits.
                smallest_subnormal=fi.smallest_normal * fi.eps, eps=fi.eps,
                exponent_bits=fi.bits - 1 - mantissa, mantissa_bits=mantissa, note=note,
            ))
        else:
            ii = torch.iinfo(dtype)
            rows.append(dict(format=name, dtype=str(dtype).replace("torch.", ""), bits=ii.bits,
                             bytes=ii.bits / 8, max=ii.max, min=ii.min, smallest_normal=1,
                             smallest_subnormal=None, eps=None, exponent_bits=None,
                             mantissa_bits=None, note=note))
    return rows


def float8_values(dtype=torch.float8_e4m3fn) -> torch.Tensor:
    """Every finite value an 8-bit float format can hold, sorted (fp32): plot them to see the
    grid, dense near 0 and coarse near the max (all 256 bit patterns, NaN/inf dropped)."""
    if torch.finfo(dtype).bits != 8:
        raise ValueError(f"float8_values wants an 8-bit float dtype, got {dtype}.")
    vals = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(dtype).float()
    return vals[torch.isfinite(vals)].unique()  # unique() sorts and merges +0 and -0


def fake_quantize_float8(x: torch.Tensor, dtype=torch.float8_e4m3fn, scaled: bool = True):
    """x rounded through an fp8 format and back, in x's dtype.

    ``scaled=True`` first divides by one per-tensor scale (amax / format max) so the largest
    value lands on the format's max, as fp8 inference recipes do. ``scaled=False`` casts as is,
    after clamping to [-max, max] (saturation: e4m3fn has no inf, and what a bare cast does with
    too-large values differs between torch versions and devices); small values lose precision or
    flush to 0.
    """
    fmax = torch.finfo(dtype).max
    if not scaled:
        return x.float().clamp(-fmax, fmax).to(dtype).to(x.dtype)
    scale = x.detach().abs().amax().float().clamp(min=1e-12) / fmax
    return ((x.float() / scale).clamp(-fmax, fmax).to(dtype).float() * scale).to(x.dtype)


# --------------------------------------------------------------------------------------------
# The lecture's quantize / dequantize
# --------------------------------------------------------------------------------------------


def quantize(x, scale, zero_point=0, qmin: int = -128, qmax: int = 127) -> torch.Tensor:
    """q = clamp(round(x / scale) + zero_point, qmin, qmax), as an int32 tensor.

    The lecture's example: ``quantize(5.2342, 0.1, 4)`` -> 56 (52.342 rounds to 52, plus 4).
    ``torch.round`` rounds halves to even (2.5 -> 2), as the hardware does.
    """
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    q = torch.round(x / scale) + zero_point
    return q.clamp(qmin, qmax).to(torch.int32)


def dequantize(q, scale, zero_point=0) -> torch.Tensor:
    """x_hat = (q - zero_point) * scale. The lecture's example: (56 - 4) * 0.1 = 5.2."""
    q = torch.as_tensor(q)
    return (q - zero_point) * scale


# --------------------------------------------------------------------------------------------
# absmax and zero-point quantization at any granularity
# --------------------------------------------------------------------------------------------


def _check_bits(bits) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(
            f"bits must be an integer from 2 to 8, got {bits!r}: the codes are stored in one byte "
            f"(int8/uint8), and 1 bit leaves absmax a single level (0)."
        )


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _check_group(n: int, group_size, what: str = "the last (input) dim") -> None:
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}.")
    if n % group_size != 0:
        raise ValueError(
            f"group_size = {group_size} does not divide {what}, {n}: every group must be full. "
            f"Pick a divisor of {n}: {_divisors(n)}."
        )


def _reduce(w: torch.Tensor, axis, group_size, fn) -> torch.Tensor:
    """fn (amax/amin) over each block that shares one scale; the result broadcasts to w
    (per tensor: 0-dim; per axis: keepdim) or, for groups, has shape [..., in/group_size]."""
    if group_size is not None:
        if axis is not None:
            raise ValueError("Give axis (per channel) or group_size (per group), not both.")
        if w.dim() == 0:
            raise ValueError("Per-group quantization needs a tensor of at least one dim.")
        _check_group(w.shape[-1], group_size)
        return fn(w.reshape(*w.shape[:-1], w.shape[-1] // group_size, group_size), dim=-1)
    if axis is None:
        return fn(w)
    keep = {a % w.dim() for a in ((axis,) if isinstance(axis, int) else axis)}
    dims = [d for d in range(w.dim()) if d not in keep]
    return fn(w, dim=dims, keepdim=True) if dims else w.clone()


def _per_element(t: torch.Tensor, shape) -> torch.Tensor:
    """A scale or zero point from ``_reduce`` broadcast to the full shape (groups expanded)."""
    shape = torch.Size(shape)
    if t.dim() == len(shape) and t.dim() > 0 and t.shape[-1] not in (1, shape[-1]):
        t = t.repeat_interleave(shape[-1] // t.shape[-1], dim=-1)  # per group
    return t.expand(shape)


def quantize_absmax(w: torch.Tensor, bits: int = 8, *, axis=None, group_size: int | None = None,
                    scale_dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric (absmax) quantization: scale = max|w| / (2**(bits-1) - 1), q = round(w / scale).

    Granularity: per tensor (default); per channel with ``axis`` (the dim(s) that keep their own
    scale: ``axis=0`` gives one scale per output row of an [out in] weight); per group with
    ``group_size`` (groups of consecutive elements along the last, input, dim).
    Returns ``q`` (int8, w's shape, in [-(2**(bits-1)-1), 2**(bits-1)-1]: the code -2**(bits-1)
    is left unused so that the range is symmetric) and ``scale`` in ``scale_dtype`` (0-dim, keepdim
    per channel, or [..., in/group_size] per group). q is computed with the stored (rounded) scale,
    so ``dequantize_absmax`` is within scale/2 of w.
    """
    _check_bits(bits)
    qmax = 2 ** (bits - 1) - 1
    w32 = w.detach().float()
    amax = _reduce(w32.abs(), axis, group_size, torch.amax)
    scale = (amax.clamp(min=1e-12) / qmax).to(scale_dtype)  # an all-zero block keeps scale > 0
    q = torch.round(w32 / _per_element(scale.float(), w.shape)).clamp(-qmax, qmax)
    return q.to(torch.int8), scale


def dequantize_absmax(q: torch.Tensor, scale: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """w_hat = q * scale (scale per tensor, channel or group, as ``quantize_absmax`` returns it)."""
    return (q.float() * _per_element(scale.float(), q.shape)).to(dtype)


def quantize_zeropoint(w: torch.Tensor, bits: int = 8, *, axis=None, group_size: int | None = None,
                       scale_dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric (zero-point) quantization onto the unsigned codes [0, 2**bits - 1].

    scale = (hi - lo) / (2**bits - 1) and zero = round(-lo / scale), with lo = min(min w, 0) and
    hi = max(max w, 0): the range is widened to hold 0 (as PyTorch's MinMaxObserver does), so that
    0 is exact and the zero point is itself a code in [0, 2**bits - 1]. Then
    q = clamp(round(w / scale) + zero, 0, 2**bits - 1), the lecture's formula.
    All 2**bits levels cover [lo, hi]; absmax spends about half of them on [-max|w|, 0) when w is
    all positive. Granularity as in ``quantize_absmax``.
    Returns ``q`` (uint8), ``scale`` (``scale_dtype``) and ``zero`` (int32: ``q - zero`` then
    needs no care about unsigned wrap-around); every element is within scale/2 of w.
    """
    _check_bits(bits)
    qmax = 2**bits - 1
    w32 = w.detach().float()
    lo = _reduce(w32, axis, group_size, torch.amin).clamp(max=0)
    hi = _reduce(w32, axis, group_size, torch.amax).clamp(min=0)
    scale = ((hi - lo).clamp(min=1e-12) / qmax).to(scale_dtype)
    zero = torch.round(-lo / scale.float()).clamp(0, qmax)
    q = torch.round(w32 / _per_element(scale.float(), w.shape)) + _per_element(zero, w.shape)
    return q.clamp(0, qmax).to(torch.uint8), scale, zero.to(torch.int32)


def dequantize_zeropoint(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                         dtype=torch.float32) -> torch.Tensor:
    """w_hat = (q - zero) * scale."""
    zero = _per_element(zero.float(), q.shape)
    return ((q.float() - zero) * _per_element(scale.float(), q.shape)).to(dtype)


_SCHEMES = ("absmax", "zeropoint")
_GRANULARITIES = ("tensor", "channel", "group")


def _granularity_kwargs(granularity: str, group_size) -> dict:
    if granularity == "tensor":
        return {}
    if granularity == "channel":
        return {"axis": 0}
    if granularity == "group":
        return {"group_size": group_size}
    raise ValueError(f"granularity must be one of {_GRANULARITIES}, got {granularity!r}.")


def _quantize(w, bits, scheme, granularity, group_size):
    kw = _granularity_kwargs(granularity, group_size)
    if scheme == "absmax":
        return quantize_absmax(w, bits, **kw)
    if scheme == "zeropoint":
        return quantize_zeropoint(w, bits, **kw)
    raise ValueError(f"scheme must be one of {_SCHEMES}, got {scheme!r}.")


def fake_quantize(w: torch.Tensor, bits: int = 8, scheme: str = "absmax",
                  granularity: str = "channel", group_size: int = 128) -> torch.Tensor:
    """w quantized and dequantized again (same shape and dtype): what the model sees.

    scheme: "absmax" | "zeropoint"; granularity: "tensor" | "channel" (one scale per index of
    dim 0, the output rows of a weight) | "group" (``group_size`` consecutive elements of the
    last dim). This is also QAT's forward pass (fake quantization).
    """
    out = _quantize(w, bits, scheme, granularity, group_size)
    if scheme == "absmax":
        return dequantize_absmax(*out, dtype=w.dtype)
    return dequantize_zeropoint(*out, dtype=w.dtype)


def error_bound(w: torch.Tensor, bits: int = 8, scheme: str = "absmax",
                granularity: str = "channel", group_size: int = 128) -> torch.Tensor:
    """The largest round-trip error each element can have: scale / 2 (w's shape, fp32).

    Round to nearest puts every in-range value within half a step of a level, and both schemes
    choose the scale so that every value is in range (absmax: max|w| maps onto the top code;
    zero-point: the shifted grid still reaches within half a step of min and max).
    """
    scale = _quantize(w, bits, scheme, granularity, group_size)[1]
    return _per_element(scale.float(), w.shape) / 2


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """||approx - exact|| / ||exact|| (Frobenius norms, in fp32)."""
    exact = exact.detach().float()
    return ((approx.detach().float() - exact).norm() / exact.norm().clamp(min=1e-30)).item()


# --------------------------------------------------------------------------------------------
# Weight-only quantized linear layers
# --------------------------------------------------------------------------------------------


class Int8Linear(nn.Module):
    """A linear layer with int8 weights and one scale per output channel (row).

    ``forward`` is ``F.linear(x, weight.to(x.dtype)) * scales``: the per-row scale factors out of
    the dot product, so it is applied to the output. Eager, this reads int8, writes a full-
    precision copy and reads it again, slower than bf16; under ``torch.compile`` Inductor fuses
    the conversion into the matrix-vector product, and decode reads 1 byte per weight instead of 2.
    On a CUDA GPU with Triton, decode-sized inputs (at most ``int8_gemv.MAX_ROWS`` rows) go to a
    hand-written int8 matrix-vector kernel instead (``int8_gemv``), which reads the int8 weights
    much closer to the memory bandwidth than Inductor's. Set ``kernel = "torch"`` on a layer (or
    the class) to keep the portable form everywhere.
    """

    kernel = "auto"  # "auto": the Triton kernel where int8_gemv.use_kernel(x) allows; "torch"

    def __init__(self, in_features: int, out_features: int, bias: bool = False, *,
                 scale_dtype=torch.float32, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8,
                                                   device=device))
        self.register_buffer("scales", torch.ones(out_features, dtype=scale_dtype, device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=scale_dtype, device=device)
                             if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, scale_dtype=None) -> "Int8Linear":
        """Quantize an ``nn.Linear``; scales (and bias) keep its dtype unless told otherwise."""
        w = linear.weight
        scale_dtype = w.dtype if scale_dtype is None else scale_dtype
        mod = cls(linear.in_features, linear.out_features, linear.bias is not None,
                  scale_dtype=scale_dtype, device=w.device)
        q, scale = quantize_absmax(w, 8, axis=0, scale_dtype=scale_dtype)
        mod.weight.copy_(q)
        mod.scales.copy_(scale.reshape(-1))
        if linear.bias is not None:
            mod.bias.copy_(linear.bias.detach())
        return mod

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "auto" and int8_gemv.use_kernel(x):
            y = torch.ops.lecture_lib.int8_linear(x, self.weight, self.scales)
        else:
            y = F_.linear(x, self.weight.to(x.dtype)) * self.scales.to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def dequantized_weight(self, dtype=torch.float32) -> torch.Tensor:
        """The [out in] weight this layer multiplies by, in ``dtype``."""
        return (self.weight.float() * self.scales.float()[:, None]).to(dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, scales={self.scales.dtype}")


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Codes in [0, 15] ([..., n], n even) -> uint8 [..., n/2], two a byte: element 2j in the
    high nibble, 2j+1 in the low one (the order CUDA's ``_convert_weight_to_int4pack`` reads)."""
    if q.shape[-1] % 2:
        raise ValueError(f"pack_int4 needs an even last dim, got {q.shape[-1]}.")
    q = q.to(torch.uint8)
    return (q[..., 0::2] << 4) | q[..., 1::2]


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of ``pack_int4``: uint8 [..., n/2] -> uint8 codes [..., n]."""
    return torch.stack([packed >> 4, packed & 0xF], dim=-1).flatten(-2)


_TINYGEMM_GROUPS = (32, 64, 128, 256)


def tinygemm_unsupported_reason(in_features: int, out_features: int, group_size: int,
                                device) -> str | None:
    """Why the CUDA int4 kernel (``_weight_int4pack_mm``, "tinygemm") can't serve this layer,
    or None when it can: it needs an NVIDIA GPU of compute capability 8.0+ (Ampere or newer),
    group size 32/64/128/256, out_features % 8 == 0 and in_features % 32 == 0."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"the weights are on {device}, and the int4 kernel is CUDA-only"
    if torch.version.hip is not None:
        return "ROCm: the kernel's layout here is only set up for NVIDIA GPUs"
    if torch.cuda.get_device_capability(device) < (8, 0):
        return "the GPU's compute capability is below 8.0 (the kernel needs Ampere or newer)"
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm"):
        return "this torch has no aten._weight_int4pack_mm"
    if group_size not in _TINYGEMM_GROUPS:
        return f"group_size = {group_size} is not one of {_TINYGEMM_GROUPS}"
    if out_features % 8 or in_features % 32:
        return f"[{out_features} {in_features}] needs out % 8 == 0 and in % 32 == 0"
    return None


class Int4Linear(nn.Module):
    """A linear layer with 4-bit weights: zero-point quantization in groups of ``group_size``
    consecutive input weights, each group with its own scale and zero point.

    Storage (backend "torch", any device): ``weight`` uint8 [out in/2] (two codes a byte, see
    ``pack_int4``), ``scales`` [out in/group_size] in the model's dtype, ``zeros`` uint8 (codes in
    [0, 15]). 0.5 byte per weight plus (scale + zero) bytes per group. Its forward unpacks and
    dequantizes the whole weight in torch, then calls ``F.linear``: correct everywhere, and
    (eager) slower than the full-precision layer, since it writes and re-reads the dequantized
    weight.

    Backend "tinygemm" (``tinygemm_()``; CUDA, compute capability 8.0+): the weight is repacked
    into the tile layout of ``torch.ops.aten._weight_int4pack_mm`` (int32, still 0.5 byte per
    weight) with scales and zeros as one bf16 [in/group_size out 2] tensor; the kernel
    dequantizes inside the matrix product. Activations go through it in bf16. That layout is for
    CUDA only: don't move such a layer to another device.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, *,
                 group_size: int = 128, scale_dtype=torch.float32, device=None):
        super().__init__()
        _check_group(in_features, group_size, "in_features")
        if in_features % 2:
            raise ValueError(f"Int4Linear packs two weights a byte: in_features = {in_features} "
                             f"must be even.")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.backend = "torch"
        n_groups = in_features // group_size
        self.register_buffer("weight", torch.zeros(out_features, in_features // 2,
                                                   dtype=torch.uint8, device=device))
        self.register_buffer("scales", torch.ones(out_features, n_groups, dtype=scale_dtype,
                                                  device=device))
        self.register_buffer("zeros", torch.zeros(out_features, n_groups, dtype=torch.uint8,
                                                  device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=scale_dtype, device=device)
                             if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 128, scale_dtype=None) -> "Int4Linear":
        w = linear.weight
        scale_dtype = w.dtype if scale_dtype is None else scale_dtype
        mod = cls(linear.in_features, linear.out_features, linear.bias is not None,
                  group_size=group_size, scale_dtype=scale_dtype, device=w.device)
        q, scale, zero = quantize_zeropoint(w, 4, group_size=group_size, scale_dtype=scale_dtype)
        mod.weight.copy_(pack_int4(q))
        mod.scales.copy_(scale)
        mod.zeros.copy_(zero.to(torch.uint8))
        if linear.bias is not None:
            mod.bias.copy_(linear.bias.detach())
        return mod

    def _dequantize(self, dtype) -> torch.Tensor:
        q = unpack_int4(self.weight).to(dtype)  # out in
        q = q.view(self.out_features, -1, self.group_size)
        w = (q - self.zeros.to(dtype)[..., None]) * self.scales.to(dtype)[..., None]
        return w.view(self.out_features, self.in_features)

    def dequantized_weight(self, dtype=torch.float32) -> torch.Tensor:
        """The [out in] weight this layer multiplies by, in ``dtype``."""
        if self.backend == "tinygemm":  # read it back through the kernel: I @ W^T = W^T
            eye = torch.eye(self.in_features, device=self.weight.device, dtype=torch.bfloat16)
            return self._tinygemm_mm(eye).t().to(dtype)
        return self._dequantize(torch.float32).to(dtype)

    # -- the CUDA kernel path -------------------------------------------------------------------

    def tinygemm_(self) -> "Int4Linear":
        """Repack for ``aten._weight_int4pack_mm`` (in place; raises where it can't run).

        The kernel computes w_hat = (q - 8) * scale + zero_f from unsigned codes q in [0, 15]; ours
        is (q - zero) * scale, so zero_f = (8 - zero) * scale.
        """
        if self.backend == "tinygemm":
            return self
        reason = tinygemm_unsupported_reason(self.in_features, self.out_features,
                                             self.group_size, self.weight.device)
        if reason:
            raise ValueError(f"Int4Linear can't use the CUDA int4 kernel: {reason}. "
                             f"Keep backend='torch' (the portable path).")
        inner_k_tiles = next(t for t in (8, 4, 2) if self.in_features % (t * 16) == 0)
        packed = torch.ops.aten._convert_weight_to_int4pack(self.weight.contiguous(), inner_k_tiles)
        scale = self.scales.float()
        zero_f = (8 - self.zeros.float()) * scale
        scales_and_zeros = torch.stack([scale, zero_f], dim=-1)  # out groups 2
        scales_and_zeros = scales_and_zeros.transpose(0, 1).contiguous().to(torch.bfloat16)
        del self.weight, self.scales, self.zeros
        self.register_buffer("weight", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros)
        self.backend = "tinygemm"
        return self

    def _tinygemm_mm(self, x2d: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm(
            x2d.to(torch.bfloat16).contiguous(), self.weight, self.group_size, self.scales_and_zeros
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "tinygemm":
            y = self._tinygemm_mm(x.reshape(-1, self.in_features)).to(x.dtype)
            y = y.reshape(*x.shape[:-1], self.out_features)
        else:
            y = F_.linear(x, self._dequantize(x.dtype))
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, group_size={self.group_size}, "
                f"backend={self.backend}")


def _skipped(name: str, skip: Iterable[str]) -> bool:
    return any(name == s or name.split(".")[-1] == s for s in skip)


def quantize_model_(model: nn.Module, bits: int = 8, group_size: int = 128,
                    skip: Iterable[str] = ("lm_head",), backend: str = "auto") -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` in place by ``Int8Linear`` (bits=8) or
    ``Int4Linear`` (bits=4, groups of ``group_size`` along the input dim); returns the model.

    ``skip``: names of layers to leave alone, matched against the full name
    (``"layers.0.mlp.w_down"``) or its last part (``"lm_head"`` skips the output layer). The
    default keeps ``lm_head`` in full precision: its errors go straight into the logits, and it is
    a small share of a large model's weights (Llama 3 8B: 0.5B of 8B with its 128k vocabulary).
    Pass ``skip=()`` to quantize it too. A tied ``lm_head`` (sharing the embedding's tensor) that
    is quantized keeps the embedding in full precision, so the model grows.

    ``backend`` (int4 only): "torch" (portable dequantize-then-matmul), "tinygemm" (the CUDA
    kernel; an error where it can't run) or "auto" (tinygemm for bf16 weights on a CUDA GPU of
    compute capability 8.0+ where the layer's shape allows it, else torch).
    """
    if bits not in (4, 8):
        raise ValueError(f"quantize_model_ supports bits=8 (Int8Linear) or bits=4 (Int4Linear), "
                         f"got {bits!r}; use fake_quantize to simulate other widths.")
    if backend not in ("auto", "torch", "tinygemm"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'tinygemm', got {backend!r}.")
    skip = (skip,) if isinstance(skip, str) else tuple(skip)
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and not _skipped(name, skip)]
    if bits == 4:  # check every layer before changing any
        bad = [f"{name} (in = {m.in_features})" for name, m in targets
               if m.in_features % group_size or m.in_features % 2]
        if bad:
            g = math.gcd(*(m.in_features for _, m in targets))
            raise ValueError(
                f"group_size = {group_size} does not divide the input dim of {', '.join(bad)}. "
                f"Pick a group size that divides every input dim (their gcd is {g}: "
                f"{[d for d in _divisors(g) if d % 2 == 0 or d == 1]}), or skip those layers."
            )
    for name, lin in targets:
        if bits == 8:
            new = Int8Linear.from_linear(lin)
        else:
            new = Int4Linear.from_linear(lin, group_size)
            if backend != "torch":
                reason = tinygemm_unsupported_reason(lin.in_features, lin.out_features,
                                                     group_size, lin.weight.device)
                if backend == "tinygemm" and reason:
                    raise ValueError(f"{name} can't use the CUDA int4 kernel: {reason}.")
                if reason is None and (backend == "tinygemm" or lin.weight.dtype == torch.bfloat16):
                    new.tinygemm_()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


_QUANTIZED = (Int8Linear, Int4Linear)


def weight_bytes(model: nn.Module, linear_only: bool = False) -> int:
    """Bytes the model's weights occupy as stored: parameters plus persistent buffers (int8/int4
    codes, scales, zeros), each tensor counted once (a tied weight is one tensor). Non-persistent
    buffers (RoPE tables) and KV caches are not weights and are left out.

    ``linear_only``: count only the linear layers (``nn.Linear``, ``Int8Linear``, ``Int4Linear``),
    the part that quantization shrinks.
    """
    seen, total = set(), 0
    for m in model.modules():
        if linear_only and not isinstance(m, (nn.Linear, *_QUANTIZED)):
            continue
        tensors = list(m._parameters.values()) + [
            b for n, b in m._buffers.items() if n not in m._non_persistent_buffers_set]
        for t in tensors:
            if t is None or id(t) in seen:
                continue
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


# --------------------------------------------------------------------------------------------
# int8 KV cache
# --------------------------------------------------------------------------------------------


def _quantize_rows_int8(x: torch.Tensor, scale_dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """absmax int8 over the last dim: x [... H] -> q int8 [... H], scale [... 1] in scale_dtype."""
    x32 = x.detach().float()
    scale = (x32.abs().amax(-1, keepdim=True).clamp(min=1e-12) / 127).to(scale_dtype)
    q = torch.round(x32 / scale.float()).clamp(-127, 127).to(torch.int8)
    return q, scale


class Int8KVCache(KVCache):
    """A static KV cache that stores keys and values as int8, one absmax scale per (token, head).

    Same ``update`` contract as ``KVCache``: incoming k, v [B K T H] are quantized and written at
    ``pos`` (an int: plain path; a 1-D device tensor of positions: static path), and the keys and
    values to attend to come back dequantized in the incoming dtype. Memory: 1 byte per number
    plus one scale (in ``dtype``) per H numbers: about half a bf16 cache for H = 128.

    This reference dequantizes the whole prefix every step (it saves memory, not time); fast
    kernels read the int8 values and scales inside attention.
    """

    def __init__(self, cfg: ModelConfig, B: int, S_max: int | None = None, *, device=None,
                 dtype=None):
        super().__init__(cfg, B, S_max, device=device, dtype=torch.int8)  # k, v: int8 L B K S H
        self.dtype = torch.get_default_dtype() if dtype is None else dtype
        shape = (cfg.L, B, cfg.K, self.S_max, 1)  # L B K S 1
        self.register_buffer("k_scale", torch.zeros(shape, device=device, dtype=self.dtype),
                             persistent=False)
        self.register_buffer("v_scale", torch.zeros(shape, device=device, dtype=self.dtype),
                             persistent=False)

    @classmethod
    def for_model(cls, model: nn.Module, B: int, S_max: int | None = None) -> "Int8KVCache":
        """A cache on the model's device, with scales (and outputs) in its dtype. Read from the
        embedding, which quantize_model_ never touches."""
        w = model.tok_emb.weight
        return cls(model.cfg, B, S_max, device=w.device, dtype=w.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes allocated: int8 keys and values plus their scales."""
        return sum(t.numel() * t.element_size() for t in (self.k, self.v, self.k_scale, self.v_scale))

    def update(self, layer: int, pos, k: torch.Tensor, v: torch.Tensor):
        qk, sk = _quantize_rows_int8(k, self.dtype)
        qv, sv = _quantize_rows_int8(v, self.dtype)
        if isinstance(pos, int):
            T = k.shape[2]
            self.check_fits(pos + T)
            end = pos + T
            self.k[layer, :, :, pos:end] = qk
            self.v[layer, :, :, pos:end] = qv
            self.k_scale[layer, :, :, pos:end] = sk
            self.v_scale[layer, :, :, pos:end] = sv
            k_all, v_all = self.k[layer, :, :, :end], self.v[layer, :, :, :end]
            ks, vs = self.k_scale[layer, :, :, :end], self.v_scale[layer, :, :, :end]
        else:
            for buf, new in ((self.k, qk), (self.v, qv), (self.k_scale, sk), (self.v_scale, sv)):
                buf[layer].index_copy_(2, pos, new)
            k_all, v_all, ks, vs = self.k[layer], self.v[layer], self.k_scale[layer], self.v_scale[layer]
        return k_all.to(k.dtype) * ks.to(k.dtype), v_all.to(v.dtype) * vs.to(v.dtype)


# --------------------------------------------------------------------------------------------
# Outliers (LLM.int8() motivation)
# --------------------------------------------------------------------------------------------


def outlier_channels(x: torch.Tensor, threshold: float = 6.0) -> torch.Tensor:
    """Indices of the feature dims (last dim) where some |x| exceeds ``threshold`` (LLM.int8()
    uses 6.0 on hidden states). In large models a handful of such dims carry huge values in
    almost every token; with absmax they set the scale and crush every other value to few levels."""
    return (x.detach().abs() > threshold).reshape(-1, x.shape[-1]).any(0).nonzero().flatten()


def int8_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [... in] @ w[out in]^T with both quantized to int8 by absmax, "vector-wise" (one scale per
    row of x, i.e. per token, and one per output row of w), as LLM.int8() does without outliers.

    The integer products are accumulated in fp32 here (exact while in * 127**2 < 2**24, i.e. in up
    to 1040; a negligible rounding beyond) so it runs on every device; hardware accumulates int32.
    """
    qx, sx = quantize_absmax(x, 8, axis=tuple(range(x.dim() - 1)))  # a scale per token
    qw, sw = quantize_absmax(w, 8, axis=0)  # a scale per output row: [out 1]
    acc = F_.linear(qx.float(), qw.float())
    return (acc * sx * sw.reshape(-1)).to(x.dtype)


def llm_int8_matmul(x: torch.Tensor, w: torch.Tensor, threshold: float = 6.0) -> torch.Tensor:
    """LLM.int8()'s mixed decomposition: the input dims of x holding an outlier (|x| > threshold)
    are multiplied in x's precision, the rest with ``int8_matmul``, and the two are added."""
    cols = outlier_channels(x, threshold)
    keep = torch.ones(x.shape[-1], dtype=torch.bool, device=x.device)
    keep[cols] = False
    y = int8_matmul(x[..., keep], w[:, keep])
    if cols.numel():
        y = y + F_.linear(x[..., cols], w[:, cols].to(x.dtype))
    return y


__all__ = [
    "format_table", "float8_values", "fake_quantize_float8",
    "quantize", "dequantize",
    "quantize_absmax", "dequantize_absmax", "quantize_zeropoint", "dequantize_zeropoint",
    "fake_quantize", "error_bound", "relative_error",
    "Int8Linear", "Int4Linear", "pack_int4", "unpack_int4", "tinygemm_unsupported_reason",
    "quantize_model_", "weight_bytes", "Int8KVCache",
    "outlier_channels", "int8_matmul", "llm_int8_matmul",
]

"""Weight-only quantized linear layers, and swapping them into a model.

Inference is memory-bound: every decode step reads every weight once, so fewer bytes per weight
means faster tokens, as long as the kernel reads the small codes and dequantizes in registers.

- ``Int8Linear``: int8 codes, one absmax scale per output channel (row). On a CUDA GPU with
  Triton, decode-sized inputs go to the hand-written kernel of ``int8_gemv``.
- ``Int4Linear``: 4-bit zero-point codes in groups along the input dim (two codes a byte), with
  the CUDA "tinygemm" kernel where it can run.
- ``quantize_model_`` (int8, or int4 with one group size), ``quantize_int4_`` (int4 with a group
  size that fits each layer, or one group per row): both swap layers with ``replace_linears_``.
- ``use_cpu_kernels_``: PyTorch's packed int8/int4 CPU kernels for a quantized model on a CPU.
- ``weight_bytes``: what the weights really occupy as stored.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
import torch.nn.functional as F_
from torch import nn

from . import int8_gemv
from .schemes import _check_group, _divisors, quantize_absmax, quantize_zeropoint



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

    On a CPU, ``kernel = "cpu"`` (set by ``use_cpu_kernels_``) calls PyTorch's packed int8
    kernel ``aten._weight_int8pack_mm``, which reads the int8 weights directly. It is fast only
    with bf16 activations, so the input is rounded to bf16 and the output comes back in bf16
    precision (about 3 significant digits): an approximation beyond the weights' own, which is
    why it is a choice and not the default.
    """

    kernel = "auto"  # "auto": the Triton kernel where int8_gemv.use_kernel(x) allows; "torch"; "cpu"

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
        elif self.kernel == "cpu":
            x2d = x.reshape(-1, self.in_features).to(torch.bfloat16)
            y = torch.ops.aten._weight_int8pack_mm(x2d, self.weight, self.scales.to(torch.bfloat16))
            y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
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


def cpu_int4_unsupported_reason(group_size: int, device) -> str | None:
    """Why PyTorch's CPU int4 kernel can't serve a layer, or None when it can."""
    if torch.device(device).type != "cpu":
        return f"the weights are on {device}, and this kernel is for the CPU"
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        return "this torch has no aten._weight_int4pack_mm_for_cpu (it arrived in 2.5)"
    if group_size not in _TINYGEMM_GROUPS:
        return f"group_size = {group_size} is not one of {_TINYGEMM_GROUPS}"
    return None


def use_cpu_kernels_(model: nn.Module) -> dict[str, int]:
    """Switch every quantized layer of a model on the CPU to PyTorch's packed CPU kernels
    (Int8Linear: ``kernel = "cpu"``; Int4Linear: ``cpu_int4_()``), which read the small codes
    directly instead of writing a dequantized copy: faster decode, bf16 activations. Returns
    how many layers of each kind were switched; layers the int4 kernel can't take stay portable."""
    switched = {"int8": 0, "int4": 0}
    for m in model.modules():
        if isinstance(m, Int8Linear) and m.weight.device.type == "cpu" and hasattr(torch.ops.aten, "_weight_int8pack_mm"):
            m.kernel = "cpu"
            switched["int8"] += 1
        elif isinstance(m, Int4Linear) and cpu_int4_unsupported_reason(m.group_size, m.weight.device) is None:
            m.cpu_int4_()
            switched["int4"] += 1
    return switched


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
        if self.backend in ("tinygemm", "cpu"):  # read it back through the kernel: I @ W^T = W^T
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

    def cpu_int4_(self) -> "Int4Linear":
        """Repack for PyTorch's CPU int4 kernel ``aten._weight_int4pack_mm_for_cpu`` (in place):
        the same convention as tinygemm (w = (q - 8) * scale + zero_f), codes in the CPU layout,
        activations in bf16. Group sizes 32, 64, 128 or 256 only."""
        if self.backend == "cpu":
            return self
        reason = cpu_int4_unsupported_reason(self.group_size, self.weight.device)
        if reason:
            raise ValueError(f"Int4Linear can't use the CPU int4 kernel: {reason}. Keep backend='torch'.")
        q = unpack_int4(self.weight).to(torch.int32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), 1)
        scale = self.scales.float()
        zero_f = (8 - self.zeros.float()) * scale
        scales_and_zeros = torch.stack([scale, zero_f], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
        del self.weight, self.scales, self.zeros
        self.register_buffer("weight", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros)
        self.backend = "cpu"
        return self

    def _tinygemm_mm(self, x2d: torch.Tensor) -> torch.Tensor:
        if self.backend == "cpu":
            return torch.ops.aten._weight_int4pack_mm_for_cpu(
                x2d.to(torch.bfloat16).contiguous(), self.weight, self.group_size, self.scales_and_zeros)
        return torch.ops.aten._weight_int4pack_mm(
            x2d.to(torch.bfloat16).contiguous(), self.weight, self.group_size, self.scales_and_zeros
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend in ("tinygemm", "cpu"):
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


def linear_layers(model: nn.Module, skip: Iterable[str] = ()) -> list[tuple[str, nn.Linear]]:
    """(name, layer) of every plain ``nn.Linear`` in ``model`` except those named in ``skip``
    (matched against the full name, ``"layers.0.mlp.w_down"``, or its last part, ``"lm_head"``)."""
    skip = (skip,) if isinstance(skip, str) else tuple(skip)
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and not _skipped(name, skip)]


def replace_linears_(model: nn.Module, make: Callable[[str, nn.Linear], nn.Module],
                     skip: Iterable[str] = ()) -> list[str]:
    """Replace, in place, every ``nn.Linear`` of ``model`` (but ``skip``) by ``make(name, layer)``;
    returns the names replaced. The one layer-swapping loop that every quantizer here uses."""
    targets = linear_layers(model, skip)
    for name, lin in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, make(name, lin))
    return [name for name, _ in targets]


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
    if bits == 8:
        replace_linears_(model, lambda name, lin: Int8Linear.from_linear(lin), skip)
        return model
    targets = linear_layers(model, skip)
    bad = [f"{name} (in = {m.in_features})" for name, m in targets  # check every layer before changing any
           if m.in_features % group_size or m.in_features % 2]
    if bad:
        g = math.gcd(*(m.in_features for _, m in targets))
        named = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more layers" if len(bad) > 3 else "")
        raise ValueError(
            f"group_size = {group_size} does not divide the input dim of {named}. "
            f"Pick a group size that divides every input dim (their gcd is {g}: "
            f"{[d for d in _divisors(g) if d % 2 == 0 or d == 1]}), or skip those layers."
        )

    def make(name, lin):
        new = Int4Linear.from_linear(lin, group_size)
        if backend != "torch":
            reason = tinygemm_unsupported_reason(lin.in_features, lin.out_features, group_size,
                                                 lin.weight.device)
            if backend == "tinygemm" and reason:
                raise ValueError(f"{name} can't use the CUDA int4 kernel: {reason}.")
            if reason is None and (backend == "tinygemm" or lin.weight.dtype == torch.bfloat16):
                new.tinygemm_()
        return new

    replace_linears_(model, make, skip)
    return model


def group_size_for(in_features: int, max_group: int) -> int:
    """The largest divisor of ``in_features`` that is at most ``max_group``: groups must tile a row
    exactly. 64 for an input dim of 128; 43 for 344 = 8 · 43, which 64, 32 and 16 do not divide."""
    if max_group < 1:
        raise ValueError(f"max_group must be a positive integer, got {max_group}.")
    return max(d for d in range(1, min(in_features, max_group) + 1) if in_features % d == 0)


def quantize_int4_(model: nn.Module, max_group: int | None = None,
                   skip: Iterable[str] = ("lm_head",)) -> dict[str, int]:
    """Replace every ``nn.Linear`` (but ``skip``) by an ``Int4Linear`` (zero-point, portable torch
    path) in place; returns {layer name: group size used}.

    ``max_group=None``: one group per output row (the whole input row): one scale and zero point per
    output channel, the coarsest int4 there is. ``max_group=g``: groups of g consecutive input
    weights, or, where g does not divide a layer's input dim, of the largest divisor below g
    (``group_size_for``). ``quantize_model_(model, bits=4, group_size=g)`` needs one g that
    divides every input dim, which a model with D = 128 and F = 344 only allows up to g = 8.
    """
    used = {}

    def make(name, lin):
        used[name] = lin.in_features if max_group is None else group_size_for(lin.in_features, max_group)
        return Int4Linear.from_linear(lin, group_size=used[name])

    replace_linears_(model, make, skip)
    return used


def quantize_int4_per_channel_(model: nn.Module, skip: Iterable[str] = ("lm_head",)) -> nn.Module:
    """``quantize_int4_(model, None, skip)``: one scale and zero point per output row; returns the model."""
    quantize_int4_(model, None, skip)
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


"""Number formats: bits, range, precision of fp32, bf16, fp16, fp8 (e4m3fn, e5m2, e4m3fnuz), int8
and int4, read from ``torch.finfo``/``torch.iinfo``, and fp8 rounding.

The lecture's fp8 figure of 240 is the maximum of e4m3fnuz (AMD/Graphcore: exponent bias 8, no
-0); the H100/OCP format e4m3fn goes to 448, which is what ``format_table`` shows for it.
"""
from __future__ import annotations

import math

import torch

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


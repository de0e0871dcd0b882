"""Quantization schemes: the lecture's quantize/dequantize, absmax (symmetric) and zero-point
(asymmetric), at any granularity (per tensor, per output channel, per group of input weights)
and any width from 2 to 8 bits.

The lecture's example: x = 5.2342, scale 0.1, zero point 4 gives q = 56 and x_hat = 5.2.
Rounding to the nearest level errs by at most half a step: ``|w - w_hat| <= scale / 2`` for
every element (``error_bound``). Shapes: a weight is [out in], as in ``nn.Linear``.
"""
from __future__ import annotations

import torch



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



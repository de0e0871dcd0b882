"""Named weight-only variants of a model, as notebook 06 compares them: one place that says what
"int8 per channel" or "int4 groups of 64" means.

    VARIANTS = ["unquantized", "int8 per channel", "int4 per channel", "int4 groups of 64", ...]
    m = quantized_copy(model, "int4 groups of 64")     # a deep copy; the model is left alone
    quantize_variant_(model, "int8 per channel")       # in place

- "int8 per channel": ``Int8Linear``, one absmax scale per output row (``quantize_model_(bits=8)``).
- "int4 per channel": ``Int4Linear`` with one group per row (``quantize_int4_(max_group=None)``):
  no int4 kernel takes such groups, so it runs the portable dequantize-then-matmul form.
- "int4 groups of g": ``Int4Linear`` with groups of g (``quantize_model_(bits=4, backend="auto")``:
  the CUDA int4 kernel for a bf16 model on an Ampere+ GPU, the portable form elsewhere).
The output layer (``lm_head``) stays in full precision in every variant.
"""
from __future__ import annotations

import copy

from torch import nn

from .linear import Int4Linear, Int8Linear, quantize_int4_, quantize_model_

VARIANTS = ["unquantized", "int8 per channel", "int4 per channel", "int4 groups of 64", "int4 groups of 32"]


def quantize_variant_(model: nn.Module, variant: str) -> nn.Module:
    """Quantize ``model`` in place as ``variant`` names it (see the module docstring); returns it."""
    if variant == "unquantized":
        return model
    if variant == "int8 per channel":
        return quantize_model_(model, bits=8)
    if variant == "int4 per channel":
        quantize_int4_(model, max_group=None)  # one group = the whole input row
        return model
    if variant.startswith("int4 groups of "):
        return quantize_model_(model, bits=4, group_size=int(variant.split()[-1]), backend="auto")
    raise ValueError(f"Unknown variant {variant!r}: one of {VARIANTS} or 'int4 groups of <g>'.")


def quantized_copy(model: nn.Module, variant: str) -> nn.Module:
    """A deep copy of ``model`` quantized as ``variant``."""
    return quantize_variant_(copy.deepcopy(model), variant)


def layer_kinds(model: nn.Module) -> str:
    """Which quantized layer kinds (and kernels) a model runs, e.g. "Int8Linear, Int4Linear[tinygemm]";
    "nn.Linear" when none. ``Int8Linear`` on a GPU picks its Triton kernel per call (decode-sized
    inputs), so it shows without a tag unless a kernel was forced."""
    kinds = set()
    for m in model.modules():
        if isinstance(m, Int8Linear):
            kinds.add("Int8Linear" + ("" if m.kernel == "auto" else f"[{m.kernel}]"))
        elif isinstance(m, Int4Linear):
            kinds.add(f"Int4Linear[{m.backend}]")
    return ", ".join(sorted(kinds)) or "nn.Linear"

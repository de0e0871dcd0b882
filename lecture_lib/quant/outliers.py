"""Outliers and why they hurt (LLM.int8()'s motivation): which feature dims hold large
activations, an int8 x int8 matmul with vector-wise absmax scales, LLM.int8()'s mixed
decomposition, and a hook that captures the inputs a model's layers actually receive.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F_

from .schemes import quantize_absmax



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


@torch.no_grad()
def capture_inputs(model: nn.Module, tokens: torch.Tensor, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Run ``model(tokens)`` once and return, for each module name, the input it received,
    flattened to [tokens features] (fp32, on the CPU).

    Forward hooks are removed afterwards, even when the forward pass fails. Modules that share
    one input (``wq``, ``wk``, ``wv`` all read the attention norm's output) give equal tensors.
    """
    names = list(names)
    seen: dict[str, torch.Tensor] = {}
    handles = []

    def hook(name):
        def fn(_module, args):
            seen[name] = args[0].detach().reshape(-1, args[0].shape[-1]).float().cpu()
        return fn

    try:
        for name in names:
            handles.append(model.get_submodule(name).register_forward_pre_hook(hook(name)))
        was_training, model.training = model.training, False
        model(tokens)
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in seen]
    if missing:
        raise RuntimeError(f"These modules were never called in the forward pass: {missing}.")
    return seen

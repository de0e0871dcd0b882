"""``GroupedDecodeKVCache``: the plain KV cache, attending a decode step through
``gqa.grouped_decode_attention`` so that each KV head is read once for its G query heads on every
attention backend (notebook 05's measured sweep, ``measure.gqa_sweep.decode_sweep_graphed``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F_

from ..gqa import grouped_decode_attention
from ..model import attention_mask
from .plain import KVCache


class GroupedDecodeKVCache(KVCache):
    """The plain ``KVCache`` that attends itself (``cache_protocol``: ``attends = True``): a decode
    step (one new token, an int position) goes through ``grouped_decode_attention``, so each KV
    head is read once whatever the attention backend; a prefill (T > 1) attends causally as the
    model's own attention does. Positions must be ints (the plain path); the logits equal those
    with a plain ``KVCache`` (tests/test_gqa.py). Used by ``measure.gqa_sweep.decode_sweep_graphed``."""

    attends = True

    def attend(self, layer: int, pos, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if not isinstance(pos, int):
            raise ValueError("GroupedDecodeKVCache takes int positions only (the plain path), "
                             f"got {type(pos).__name__}.")
        k_all, v_all = self.update(layer, pos, k, v)  # the filled prefix, positions 0 .. pos+T-1
        T = q.shape[2]
        if T == 1:
            return grouped_decode_attention(q, k_all, v_all)
        mask = attention_mask(torch.arange(pos, pos + T, device=q.device), self, T, pos)
        return F_.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask,
                                               is_causal=mask is None, enable_gqa=q.shape[1] != k.shape[1])

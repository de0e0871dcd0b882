"""Grouped-query attention helpers for notebook 05: converting between K and N KV heads, and a
measured sweep of the cached decode step against K.

- ``expand_kv_heads``: a GQA model as the MHA model it equals (each KV head's projection copied
  to its G query heads): GQA is MHA with the K/V heads of a group tied together.
- ``pool_kv_heads``: the GQA paper's conversion the other way (arXiv 2305.13245, §2.1): an MHA
  checkpoint becomes a K-head one by mean-pooling the K/V projections of each group. Without the
  paper's short "uptraining" the pooled model is worse; it is a starting point, not a free lunch.

- ``grouped_decode_attention``: a decode step's attention that reads each KV head once for its G
  query heads on every attention backend (the query heads of a group become G query rows of
  their KV head), so that a measured step reads the bytes the formula counts. The cache that
  uses it is ``lecture_lib.cache.grouped.GroupedDecodeKVCache`` (caches sit above the core).

The measured sweep of the decode step against K is ``lecture_lib.measure.gqa_sweep``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F_

from .model import Transformer


# ---------------------------------------------------------------------------------------------
# Changing the number of KV heads of a model's weights


def _kv_projections(model: Transformer):
    for block in model.layers:
        attn = block.attn
        if attn.wqkv is not None:
            raise ValueError("The model's Q/K/V projections are fused (fuse_qkv): convert before fusing.")
        yield attn


@torch.no_grad()
def expand_kv_heads(model: Transformer) -> Transformer:
    """The MHA model (K = N) that computes exactly what ``model`` (K KV heads) computes.

    Query head n reads KV head n // G, so repeating each KV head's rows of wk and wv G times
    (``repeat_interleave`` on the head axis) gives N KV heads with the same keys and values.
    The KV cache of the result is G times larger: same function, G times the memory.
    """
    cfg = model.cfg
    mha = Transformer(cfg.replace(K=cfg.N)).to(next(model.parameters()).device, next(model.parameters()).dtype)
    state = {}
    for name, w in model.state_dict().items():
        if name.endswith(("attn.wk.weight", "attn.wv.weight")):
            w = w.view(cfg.K, cfg.H, cfg.D).repeat_interleave(cfg.G, dim=0).reshape(cfg.N * cfg.H, cfg.D)
        state[name] = w
    mha.load_state_dict(state)
    return mha.eval()


@torch.no_grad()
def pool_kv_heads(model: Transformer, K: int) -> Transformer:
    """A K-KV-head model from an MHA (or finer GQA) ``model`` by mean-pooling each group's K/V
    projections: the GQA paper's checkpoint conversion (before uptraining).

    ``model.cfg.K`` must be a multiple of ``K``. Query, output and MLP weights are copied as is.
    """
    cfg = model.cfg
    if K < 1 or cfg.K % K != 0:
        raise ValueError(f"Can pool {cfg.K} KV heads into K groups only if K divides {cfg.K}, got K={K}.")
    per_group = cfg.K // K
    param = next(model.parameters())
    pooled = Transformer(cfg.replace(K=K)).to(param.device, param.dtype)
    state = {}
    for name, w in model.state_dict().items():
        if name.endswith(("attn.wk.weight", "attn.wv.weight")):
            w = w.view(K, per_group, cfg.H, cfg.D).mean(dim=1).reshape(K * cfg.H, cfg.D)
        state[name] = w
    pooled.load_state_dict(state)
    return pooled.eval()


# ---------------------------------------------------------------------------------------------
# Decode attention that reads each KV head once, on every attention backend


def grouped_decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention of one new token per sequence, q [B N 1 H], to keys/values k, v [B K S H] (all S
    positions visible), with the G = N/K query heads of a group read as G query *rows* of their
    KV head: q -> [B K G H], an ordinary K-head attention with G queries, -> [B N 1 H].

    The result is GQA attention exactly (query head n = k·G + g reads KV head k = n // G). Why
    reshape: ``scaled_dot_product_attention(enable_gqa=True)`` reads each KV head in place only on
    backends that support GQA (FlashAttention on Ampere+ GPUs); elsewhere (a T4, or any call with
    a mask) it falls back to the math backend, which first copies every KV head G times. With the
    reshape every backend reads each KV head once for its G query heads (the trick
    FlashAttention-2 itself applies to decode), so the bytes read per step are the GQA cache.
    """
    B, N, T, H = q.shape
    K = k.shape[1]
    if T != 1:
        raise ValueError(f"grouped_decode_attention is for one new token per sequence (T = 1), got T = {T}.")
    if N % K:
        raise ValueError(f"N = {N} query heads must be a multiple of K = {K} KV heads.")
    y = F_.scaled_dot_product_attention(q.reshape(B, K, N // K, H), k, v)  # [B K G H]
    return y.reshape(B, N, 1, H)

"""Grouped-query attention helpers for notebook 05: converting between K and N KV heads, and a
measured sweep of the cached decode step against K.

- ``expand_kv_heads``: a GQA model as the MHA model it equals (each KV head's projection copied
  to its G query heads): GQA is MHA with the K/V heads of a group tied together.
- ``pool_kv_heads``: the GQA paper's conversion the other way (arXiv 2305.13245, §2.1): an MHA
  checkpoint becomes a K-head one by mean-pooling the K/V projections of each group. Without the
  paper's short "uptraining" the pooled model is worse; it is a starting point, not a free lunch.

The measured sweep of the decode step against K is ``lecture_lib.measure.gqa_sweep``.
"""
from __future__ import annotations

import torch

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

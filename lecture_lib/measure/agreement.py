"""Do two exact decode paths pick the same greedy tokens? (notebook 07)

The ladder's exact rungs (cached, static, compiled) compute the same function in a different
order of additions (fused Q/K/V and gate/up matrices, a masked fixed-length cache, other kernels).
In fp32 the rounding differences are far below the gap between the best two logits, so the greedy
tokens are identical. In bf16 (8 bits of mantissa) they are about 2^-8 of a logit's size, and
where two logits are that close (a *near-tie*, common in a random-weight model whose logits are
nearly flat) the argmax can flip; from that token on the two sequences go separate ways, so "the
sequences are identical" is the wrong check in bf16.

``teacher_forced_agreement`` compares the paths position by position instead: the static path is
fed the reference path's own tokens (teacher forcing), so one flip does not derail the rest, and
the share of positions where its argmax matches is an agreement rate; at each mismatch it records
how close the tie was.
"""
from __future__ import annotations

import copy

import torch


def first_divergence(a: torch.Tensor, b: torch.Tensor) -> int | None:
    """The first position where token sequences ``a`` and ``b`` ([B, T] or [T]) differ in any row,
    or None if they are identical over their common length."""
    a, b = a.reshape(-1, a.shape[-1]).cpu(), b.reshape(-1, b.shape[-1]).cpu()
    n = min(a.shape[-1], b.shape[-1])
    diff = (a[:, :n] != b[:, :n]).any(dim=0).nonzero()
    return int(diff[0]) if len(diff) else None


@torch.no_grad()
def teacher_forced_agreement(model, prompt: torch.Tensor, ref_tokens: torch.Tensor, fuse: bool = True) -> dict:
    """Feed ``prompt`` and then the reference's tokens ``ref_tokens`` ([B, n]: e.g. ``generate_cached``'s
    greedy tokens) through the static path (a copy of ``model``, Q/K/V and gate/up fused as the fast
    rungs fuse them, a ``StaticKVCache`` of fixed length, one token a step), and compare its greedy pick
    at every position with the reference's next token.

    Returns ``rate`` (share of the B·n positions that agree), ``n`` (positions), ``mismatches``: a
    list of (position, gap) where ``gap`` is how far the reference token's logit is below the static
    path's best one, in units of the standard deviation of that position's logits (a near-tie: small)."""
    from ..cache.static import StaticKVCache
    from ..decode.fast import fuse_projections_

    m = copy.deepcopy(model).eval()
    if fuse:
        fuse_projections_(m)
    device = m.norm.weight.device
    prompt, ref = prompt.to(device), ref_tokens.to(device)
    B, T0 = prompt.shape
    n = ref.shape[1]
    cache = StaticKVCache.for_model(m, B, T0 + n)
    ctx = _decode_context(device)
    logits = m(prompt, cache, 0)[:, -1].float()  # predicts ref[:, 0]
    agree, mismatches = 0, []
    with ctx:
        for i in range(n):
            pick = logits.argmax(-1)
            hit = pick == ref[:, i]
            agree += int(hit.sum())
            for b in (~hit).nonzero().flatten().tolist():
                gap = (logits[b, pick[b]] - logits[b, ref[b, i]]) / logits[b].std()
                mismatches.append((i, float(gap)))
            if i + 1 < n:
                pos = torch.tensor([T0 + i], device=device)
                logits = m(ref[:, i:i + 1], cache, pos)[:, -1].float()
    del m
    return {"rate": agree / (B * n), "n": B * n, "mismatches": mismatches}


def _decode_context(device):
    """The SDPA backend the fast path decodes with on CUDA (math: see FastGenerator)."""
    import contextlib

    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel(SDPBackend.MATH)

"""PagedAttention: every query token attends to its own sequence's keys, read from the block pool.

One function, two implementations with the same contract::

    paged_attention(q, k_pool, v_pool, tables, lengths, scale) -> out

    q        [T N H]       the step's query tokens, packed (prefill chunks and decodes alike)
    k_pool   [P K bs H]    one layer's pool: P blocks of bs slots, K KV heads
    v_pool   [P K bs H]
    tables   [T W]         for each query token, its sequence's block table (padded; the padding
                           is never read, it lies past ``lengths``)
    lengths  [T]           keys each token sees: its position + 1 (itself included, so its own key
                           must already be in the pool)
    out      [T N H]

Treating every query token as its own row makes a ragged batch trivial: a prompt chunk of 300
tokens is 300 rows with lengths start+1 .. start+300 (causal by construction), a decode is one row.

- ``paged_attention_reference``: plain PyTorch (gather each row's blocks, mask, softmax). Runs
  everywhere; memory O(T·W·bs), so it is for tests and small CPU batches.
- ``paged_attention_triton``: a Triton kernel that reads the blocks in place (no gathered copy),
  one program per (token, KV head), an online softmax over tiles of ``BLOCK_S`` slots that may
  span several blocks, and the G query heads of a KV head sharing each key tile (GQA: K and V
  are read once for G heads). Decode is memory-bound, so what matters is that each key and value
  byte is read once; the G x BLOCK_S score tile is padded to 16 rows for ``tl.dot``.
"""
from __future__ import annotations

import math

import torch
from einops import rearrange

try:  # Triton ships with CUDA builds of PyTorch; CPU builds have none (the reference runs there)
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None


def check_shapes(q, k_pool, v_pool, tables, lengths) -> None:
    T, N, H = q.shape
    P, K, bs, H2 = k_pool.shape
    if H2 != H or v_pool.shape != k_pool.shape:
        raise ValueError(f"paged_attention: q {tuple(q.shape)} and pools {tuple(k_pool.shape)}, "
                         f"{tuple(v_pool.shape)} disagree on the head dim or with each other.")
    if N % K:
        raise ValueError(f"paged_attention: {N} query heads are not a multiple of {K} KV heads.")
    if tables.dim() != 2 or tables.shape[0] != T or lengths.shape != (T,):
        raise ValueError(f"paged_attention: tables {tuple(tables.shape)} and lengths {tuple(lengths.shape)} "
                         f"must be [T W] and [T] with T = {T} query tokens.")


def paged_attention_reference(q, k_pool, v_pool, tables, lengths, scale: float | None = None):
    """The definition, in PyTorch: gather, mask past ``lengths``, softmax, weighted sum."""
    check_shapes(q, k_pool, v_pool, tables, lengths)
    T, N, H = q.shape
    K = k_pool.shape[1]
    scale = 1 / math.sqrt(H) if scale is None else scale
    k = rearrange(k_pool[tables], "T W K s H -> T K (W s) H")  # slot index = position
    v = rearrange(v_pool[tables], "T W K s H -> T K (W s) H")
    qg = rearrange(q, "T (K G) H -> T K G H", K=K)
    acc = torch.promote_types(q.dtype, torch.float32)  # bf16 in, float32 softmax; float64 stays
    scores = torch.einsum("tkgh,tksh->tkgs", qg.to(acc), k.to(acc)) * scale
    visible = torch.arange(k.shape[2], device=q.device) < lengths[:, None]  # [T S]
    scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
    out = torch.einsum("tkgs,tksh->tkgh", torch.softmax(scores, dim=-1), v.to(acc))
    return rearrange(out, "T K G H -> T (K G) H").to(q.dtype)


if triton is not None:
    @triton.jit
    def _paged_attention_kernel(Q, Kp, Vp, Tables, Lengths, Out, scale,
                                stride_qt, stride_qn, stride_tt, stride_ot, stride_on,
                                K: tl.constexpr, G: tl.constexpr, H: tl.constexpr, BS: tl.constexpr,
                                G_PAD: tl.constexpr, BLOCK_S: tl.constexpr, PRECISION: tl.constexpr):
        t = tl.program_id(0)   # query token
        kh = tl.program_id(1)  # KV head; its G query heads are kh*G .. kh*G+G-1
        length = tl.load(Lengths + t)
        g = tl.arange(0, G_PAD)
        h = tl.arange(0, H)
        heads = kh * G + g
        q = tl.load(Q + t * stride_qt + heads[:, None] * stride_qn + h[None, :], mask=(g < G)[:, None], other=0.0)
        m = tl.full([G_PAD], float("-inf"), tl.float32)  # running max, normaliser, weighted sum
        l = tl.zeros([G_PAD], tl.float32)
        acc = tl.zeros([G_PAD, H], tl.float32)
        for start in range(0, length, BLOCK_S):
            s = start + tl.arange(0, BLOCK_S)  # positions = slots of this tile
            valid = s < length
            block = tl.load(Tables + t * stride_tt + s // BS, mask=valid, other=0).to(tl.int64)
            offset = ((block * K + kh) * BS + s % BS)[:, None] * H + h[None, :]
            k = tl.load(Kp + offset, mask=valid[:, None], other=0.0)
            scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # [G_PAD BLOCK_S], fp32
            scores = tl.where(valid[None, :], scores, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, 1))
            p = tl.exp(scores - m_new[:, None])
            alpha = tl.exp(m - m_new)
            l = l * alpha + tl.sum(p, 1)
            v = tl.load(Vp + offset, mask=valid[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            m = m_new
        out = acc / l[:, None]
        tl.store(Out + t * stride_ot + heads[:, None] * stride_on + h[None, :], out.to(Out.dtype.element_ty),
                 mask=(g < G)[:, None])


def paged_attention_triton(q, k_pool, v_pool, tables, lengths, scale: float | None = None, block_s: int = 64,
                           num_warps: int = 4):
    """The same result as the reference, reading the pool in place (GPU, or TRITON_INTERPRET=1)."""
    if triton is None:
        raise RuntimeError("paged_attention_triton needs Triton (it ships with CUDA builds of PyTorch). "
                           "Use paged_attention_reference on this machine.")
    check_shapes(q, k_pool, v_pool, tables, lengths)
    T, N, H = q.shape
    K, bs = k_pool.shape[1], k_pool.shape[2]
    if H & (H - 1) or H < 16:
        raise ValueError(f"The Triton kernel needs a power-of-two head dim >= 16, got {H}; use the reference.")
    q, tables, lengths = q.contiguous(), tables.contiguous(), lengths.contiguous()
    out = torch.empty_like(q)
    G = N // K
    _paged_attention_kernel[(T, K)](
        q, k_pool, v_pool, tables, lengths, out, 1 / math.sqrt(H) if scale is None else scale,
        q.stride(0), q.stride(1), tables.stride(0), out.stride(0), out.stride(1),
        K=K, G=G, H=H, BS=bs, G_PAD=max(16, triton.next_power_of_2(G)), BLOCK_S=block_s,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32", num_warps=num_warps)  # float32 stays float32
    return out


def paged_attention(q, k_pool, v_pool, tables, lengths, scale: float | None = None):
    """The Triton kernel on a CUDA device, the PyTorch reference elsewhere."""
    if q.is_cuda and triton is not None:
        return paged_attention_triton(q, k_pool, v_pool, tables, lengths, scale)
    return paged_attention_reference(q, k_pool, v_pool, tables, lengths, scale)

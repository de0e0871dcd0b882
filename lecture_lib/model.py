"""A from-scratch Llama-style decoder: RMSNorm, RoPE, SwiGLU, and attention with N query heads
and K KV heads (MHA when K = N, GQA when 1 < K < N, MQA when K = 1: one code path).

Shapes use the lecture's letters: x is [B T D], queries [B N T H], keys/values [B K S H].
The weights and the RoPE convention (rotate-half) match Hugging Face's ``LlamaForCausalLM``, so a
checkpoint of that family loads without permuting anything (see ``lecture_lib.hf``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F_
from einops import rearrange
from torch import nn

from .config import ModelConfig
from .kv_cache import KVCache


class RMSNorm(nn.Module):
    def __init__(self, D: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(D))

    def forward(self, x):
        # Normalise in fp32: the mean of squares of bf16 activations loses too much precision.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_tables(S_max: int, H: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, [S_max H], for rotary position embeddings in the rotate-half layout."""
    inv_freq = 1.0 / theta ** (torch.arange(0, H, 2, dtype=torch.float32) / H)
    angles = torch.outer(torch.arange(S_max, dtype=torch.float32), inv_freq)  # S H/2
    angles = torch.cat([angles, angles], dim=-1)  # S H
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate each (i, i + H/2) pair of x ([B n T H]) by its position's angle (cos/sin: [T H])."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.wq = nn.Linear(cfg.D, cfg.N * cfg.H, bias=False)
        self.wk = nn.Linear(cfg.D, cfg.K * cfg.H, bias=False)
        self.wv = nn.Linear(cfg.D, cfg.K * cfg.H, bias=False)
        self.wo = nn.Linear(cfg.N * cfg.H, cfg.D, bias=False)
        self.wqkv: nn.Linear | None = None  # set by fuse_qkv()

    @torch.no_grad()
    def fuse_qkv(self) -> None:
        """Replace wq, wk, wv by one ``wqkv`` Linear with their weights stacked: in decode each is a
        matrix-vector product, and one bigger GEMV launches one kernel instead of three and reads
        the same bytes. Same function (up to float rounding); used by ``lecture_lib.fast``.
        Fuse before quantizing: the three must still be plain ``nn.Linear``."""
        if self.wqkv is not None:
            return
        if not all(type(m) is nn.Linear for m in (self.wq, self.wk, self.wv)):
            raise TypeError("fuse_qkv needs wq, wk, wv to be plain nn.Linear: fuse before quantizing.")
        w = torch.cat([self.wq.weight, self.wk.weight, self.wv.weight])  # (N+2K)H x D
        self.wqkv = nn.Linear(w.shape[1], w.shape[0], bias=False, device="meta")  # no init: replaced
        self.wqkv.weight = nn.Parameter(w)
        del self.wq, self.wk, self.wv  # keep one copy of the weights, not two

    def forward(self, x, cos, sin, mask, cache: KVCache | None, layer: int, pos):
        if self.wqkv is not None:
            q, k, v = self.wqkv(x).split([self.cfg.N * self.cfg.H, self.cfg.K * self.cfg.H,
                                          self.cfg.K * self.cfg.H], dim=-1)
        else:
            q, k, v = self.wq(x), self.wk(x), self.wv(x)
        q = rearrange(q, "B T (N H) -> B N T H", H=self.cfg.H)
        k = rearrange(k, "B T (K H) -> B K T H", H=self.cfg.H)
        v = rearrange(v, "B T (K H) -> B K T H", H=self.cfg.H)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, pos, k, v)  # now [B K S H], S = positions so far
        # enable_gqa: query head n reads KV head n // G, without copying K and V G times.
        y = F_.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and q.shape[2] > 1,
            enable_gqa=self.cfg.G > 1,
        )
        return self.wo(rearrange(y, "B N T H -> B T (N H)"))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w_gate = nn.Linear(cfg.D, cfg.F, bias=False)
        self.w_up = nn.Linear(cfg.D, cfg.F, bias=False)
        self.w_down = nn.Linear(cfg.F, cfg.D, bias=False)
        self.w_gate_up: nn.Linear | None = None  # set by fuse_gate_up()

    @torch.no_grad()
    def fuse_gate_up(self) -> None:
        """Replace w_gate and w_up by one ``w_gate_up`` Linear with their weights stacked ([2F D]):
        both read the same input, so in decode one GEMV (one kernel) does the work of two. Same
        function up to float rounding; used by ``lecture_lib.fast``. Fuse before quantizing."""
        if self.w_gate_up is not None:
            return
        if not all(type(m) is nn.Linear for m in (self.w_gate, self.w_up)):
            raise TypeError("fuse_gate_up needs w_gate, w_up to be plain nn.Linear: fuse before quantizing.")
        w = torch.cat([self.w_gate.weight, self.w_up.weight])  # 2F x D
        self.w_gate_up = nn.Linear(w.shape[1], w.shape[0], bias=False, device="meta")
        self.w_gate_up.weight = nn.Parameter(w)
        del self.w_gate, self.w_up

    def forward(self, x):
        if self.w_gate_up is not None:
            gate, up = self.w_gate_up(x).chunk(2, dim=-1)
            return self.w_down(F_.silu(gate) * up)
        return self.w_down(F_.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.D, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.D, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x, cos, sin, mask, cache, layer, pos):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache, layer, pos)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.V, cfg.D)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.L))
        self.norm = RMSNorm(cfg.D, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.D, cfg.V, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        cos, sin = rope_tables(cfg.S_max, cfg.H, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None, pos=0) -> torch.Tensor:
        """Logits [B T V] for tokens [B T] that sit at positions pos, pos+1, ..., pos+T-1.

        Without a cache the tokens attend causally to each other only (pos must be 0).
        With a cache, ``pos`` is an int (keys so far are read from the cache's filled prefix) or a
        1-D tensor of T positions on the device (static shapes for CUDA graphs: the whole cache is
        read and positions past ``pos`` are masked).
        """
        B, T = tokens.shape
        static = isinstance(pos, torch.Tensor)
        if cache is None and (static or pos != 0):
            raise ValueError("Without a KV cache the model sees the whole sequence: use pos=0.")
        if not static:
            if pos + T > self.cfg.S_max:
                raise ValueError(
                    f"Positions up to {pos + T} exceed the model's S_max = {self.cfg.S_max} (its RoPE "
                    f"table). Shorten the input, or build the model with cfg.replace(S_max={pos + T})."
                )
            positions = torch.arange(pos, pos + T, device=tokens.device)
        else:
            positions = pos
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]  # T H
        mask = None  # None: plain causal attention (or none at all for a single new token)
        if static:
            mask = torch.arange(cache.S_max, device=tokens.device) <= positions[:, None]  # T S
        elif cache is not None and T > 1 and pos > 0:
            mask = torch.arange(pos + T, device=tokens.device) <= positions[:, None]  # T S
        x = self.tok_emb(tokens)
        for i, block in enumerate(self.layers):
            x = block(x, cos, sin, mask, cache, i, pos)
        return self.lm_head(self.norm(x))

    def new_cache(self, B: int, S_max: int | None = None) -> KVCache:
        """A KV cache on this model's device and dtype."""
        w = self.tok_emb.weight  # not lm_head: a quantized head stores int8
        return KVCache(self.cfg, B, S_max, device=w.device, dtype=w.dtype)

    def num_params(self, include_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())  # a tied weight is counted once
        return n if include_embedding else n - self.tok_emb.weight.numel()

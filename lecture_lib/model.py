"""A from-scratch Llama-style decoder: RMSNorm, RoPE, SwiGLU, and attention with N query heads
and K KV heads (MHA when K = N, GQA when 1 < K < N, MQA when K = 1: one code path).

Shapes use the lecture's letters: x is [B T D], queries [B N T H], keys/values [B K S H].
The weights and the RoPE convention (rotate-half) match Hugging Face's ``LlamaForCausalLM``, so a
checkpoint of that family loads without permuting anything (see ``lecture_lib.hf``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F_
from einops import rearrange
from torch import nn

from .cache_protocol import KVCacheProtocol
from .config import ModelConfig


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


def rope_inv_freq(H: int, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """The H/2 rotation frequencies of RoPE, [H/2] float32, computed in the same float32 steps as
    Hugging Face so that a loaded checkpoint gives the same angles to the last bit.

    - plain RoPE: pair i turns at theta^(-2i/H) radians per position.
    - "linear" (position interpolation): every frequency divided by ``factor``, which stretches
      the trained context ``factor`` times.
    - "llama3" (Llama 3.1/3.2): only the slow frequencies, whose wavelength exceeds
      original_max_position_embeddings / low_freq_factor, are divided by ``factor``; the fast
      ones (wavelength under original / high_freq_factor) are kept, since they encode local
      order that the model learned well; in between, a linear blend of the two.
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, H, 2, dtype=torch.int64).float() / H)
    if scaling is None:
        return inv_freq
    kind, factor = scaling["rope_type"], scaling["factor"]
    if kind == "linear":
        return inv_freq / factor
    if kind == "llama3":
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_context = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
        smooth = (old_context / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_context / high) * ~(wavelen > old_context / low)
        return torch.where(medium, smoothed, scaled)
    raise ValueError(f"RoPE scaling {kind!r} is not implemented (see config.check_rope_scaling).")


def rope_tables(S_max: int, H: int, theta: float, scaling: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, [S_max H], for rotary position embeddings in the rotate-half layout."""
    inv_freq = rope_inv_freq(H, theta, scaling)
    angles = torch.outer(torch.arange(S_max, dtype=torch.float32), inv_freq)  # S H/2
    angles = torch.cat([angles, angles], dim=-1)  # S H
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate each (i, i + H/2) pair of x ([B n T H]) by its position's angle (cos/sin: [T H], or
    [B 1 T H] when every sequence has its own positions)."""
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

    def forward(self, x, cos, sin, mask, cache: KVCacheProtocol | None, layer: int, pos):
        if self.wqkv is not None:
            q, k, v = self.wqkv(x).split([self.cfg.N * self.cfg.H, self.cfg.K * self.cfg.H,
                                          self.cfg.K * self.cfg.H], dim=-1)
        else:
            q, k, v = self.wq(x), self.wk(x), self.wv(x)
        q = rearrange(q, "B T (N H) -> B N T H", H=self.cfg.H)
        k = rearrange(k, "B T (K H) -> B K T H", H=self.cfg.H)
        v = rearrange(v, "B T (K H) -> B K T H", H=self.cfg.H)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if getattr(cache, "attends", False):  # a cache that reads its keys in place attends itself
            return self.wo(rearrange(cache.attend(layer, pos, q, k, v), "B N T H -> B T (N H)"))
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
        cos, sin = rope_tables(cfg.S_max, cfg.H, cfg.rope_theta, cfg.rope_scaling)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)

    @classmethod
    def from_state_dict(cls, cfg: ModelConfig, state: dict[str, torch.Tensor], dtype: torch.dtype | None = None,
                        device=None) -> "Transformer":
        """A model holding exactly these weights (our names; the tied head's key included), built
        without random initialisation: on the meta device, then the tensors assigned. Initialising
        a 135M-parameter model at random takes longer on a CPU than loading it."""
        with torch.device("meta"):
            model = cls(cfg)
        dtype = dtype or state["tok_emb.weight"].dtype
        state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
        if cfg.tie_embeddings:  # assigning replaced the shared Parameter by two: share it again
            model.lm_head.weight = model.tok_emb.weight
        cos, sin = rope_tables(cfg.S_max, cfg.H, cfg.rope_theta, cfg.rope_scaling)
        model.register_buffer("rope_cos", cos.to(device=device, dtype=dtype), persistent=False)
        model.register_buffer("rope_sin", sin.to(device=device, dtype=dtype), persistent=False)
        return model.eval()

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, tokens: torch.Tensor, cache: KVCacheProtocol | None = None, pos=0,
                logits_at: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B T V] for tokens [B T] (or [B T' V] at the T' token indices ``logits_at``: a
        serving engine that packs many prompts into one row needs only each prompt's last logits,
        and the LM head over every token would be the biggest matrix of the step). ``pos`` says
        where the tokens sit:

        - an int p (the simple case): every sequence's tokens are at p, p+1, ..., p+T-1. Without
          a cache the tokens attend causally to each other only, so p must be 0; with a cache the
          keys so far are read from the cache's filled prefix.
        - a 1-D tensor [T] on the device: the same positions for every sequence, for a compiled
          step whose shapes never change (needs a cache: the whole cache is read, positions past
          ``pos`` are masked).
        - a 2-D tensor [B T]: each sequence its own positions (a ragged batch: prompts of
          different lengths, sequences at different points of their generation); -1 marks a
          padding token, whose logits are meaningless and whose keys are never stored. Without a
          cache the tokens of a row attend to the row's earlier positions; with one, a token at
          position p attends to cache slots 0..p of its own sequence.

        The attention mask comes from the positions alone: key position s is visible to a query at
        position p when s <= p (``cache_protocol`` puts position s in slot s).
        """
        check_tokens(tokens, self.cfg.V)
        B, T = tokens.shape
        if isinstance(pos, torch.Tensor):
            positions = pos
            if positions.dim() == 1 and cache is None:
                raise ValueError("1-D tensor positions are for the static path and need a KV cache; "
                                 "without one use pos=0, or a [B T] tensor of per-sequence positions.")
            if positions.dim() == 2 and tuple(positions.shape) != (B, T):
                raise ValueError(f"Per-sequence positions must be [B T] = {(B, T)} like the tokens, "
                                 f"got {tuple(positions.shape)}.")
            if positions.dim() not in (1, 2):
                raise ValueError(f"pos must be an int, a [T] or a [B T] tensor, got shape {tuple(positions.shape)}.")
        else:
            if cache is None and pos != 0:
                raise ValueError("Without a KV cache the model sees the whole sequence: use pos=0 "
                                 "(or a [B T] tensor of positions).")
            if pos + T > self.cfg.S_max:
                raise ValueError(
                    f"Positions up to {pos + T} exceed the model's S_max = {self.cfg.S_max} (its RoPE "
                    f"table). Shorten the input, or build the model with cfg.replace(S_max={pos + T})."
                )
            positions = torch.arange(pos, pos + T, device=tokens.device)
        rope_at = positions.clamp(min=0)  # padding (-1) gets some rotation; its output is ignored
        cos, sin = self.rope_cos[rope_at], self.rope_sin[rope_at]  # [T H], or [B T H]
        if positions.dim() == 2:
            cos, sin = cos[:, None], sin[:, None]  # B 1 T H: broadcast over heads
        mask = None if getattr(cache, "attends", False) else attention_mask(positions, cache, T, pos)
        x = self.tok_emb(tokens)
        for i, block in enumerate(self.layers):
            x = block(x, cos, sin, mask, cache, i, pos)
        if logits_at is not None:
            x = x[:, logits_at]
        return self.lm_head(self.norm(x))

    def num_params(self, include_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())  # a tied weight is counted once
        return n if include_embedding else n - self.tok_emb.weight.numel()


def check_tokens(tokens: torch.Tensor, V: int) -> None:
    """Token ids must be a non-empty [B T] integer tensor with ids in [0, V). The range is checked
    only for tensors on the CPU, where it costs no device sync (the generate functions check their
    prompts on every device); inside a compiled graph nothing is checked."""
    if not isinstance(tokens, torch.Tensor) or tokens.dtype.is_floating_point or tokens.dtype == torch.bool \
            or tokens.is_complex():
        kind = tokens.dtype if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise TypeError(f"Token ids must be an integer tensor (torch.long), got {kind}. Tokenize the text "
                        f"first, or convert with .long() if these are ids stored as floats.")
    if tokens.dim() != 2:
        raise ValueError(f"Token ids must be a [B T] tensor, got shape {tuple(tokens.shape)}; "
                         "for one sequence use tokens[None].")
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise ValueError(f"Empty input: tokens have shape {tuple(tokens.shape)}. A prompt needs at least "
                         "one token (start with a BOS token if there is no text).")
    if tokens.device.type == "cpu" and not torch.compiler.is_compiling():
        lo, hi = tokens.min().item(), tokens.max().item()
        if lo < 0 or hi >= V:
            raise ValueError(f"Token ids must lie in [0, V) = [0, {V}), got ids from {lo} to {hi}. "
                             "Use the model's own tokenizer, or a config whose V covers these ids.")


def attention_mask(positions: torch.Tensor, cache, T: int, pos) -> torch.Tensor | None:
    """Which keys each query may attend to, from positions alone (None: plain causal attention).

    positions [T] (shared) -> mask [T S]; positions [B T] -> mask [B 1 T S] (broadcast over
    heads). With a cache the keys are its slots (slot s = position s); without one they are the
    tokens themselves. Padding queries (-1) see slot 0 or themselves only, so their softmax never
    divides by zero (their outputs are ignored anyway)."""
    if isinstance(pos, int):  # the simple case: causal over what the cache holds, or no mask at all
        if cache is not None and T > 1 and pos > 0:
            return torch.arange(pos + T, device=positions.device) <= positions[:, None]  # T S
        return None
    if cache is not None:
        slots = torch.arange(cache.S_max, device=positions.device)
        if positions.dim() == 1:
            return slots <= positions[:, None]  # T S
        return (slots <= positions.clamp(min=0)[:, :, None])[:, None]  # B 1 T S
    q, k = positions[:, :, None], positions[:, None, :]  # no cache: keys are the row's own tokens
    visible = (k <= q) & (k >= 0)
    return (visible | torch.eye(T, dtype=torch.bool, device=positions.device))[:, None]  # B 1 T T

"""A preallocated (static) KV cache.

For every sequence (B), layer (L), KV head (K) and position (S) it stores an H-dim key and an
H-dim value: ``2 * B * L * K * S_max * H`` numbers, allocated once at the largest length so that
decoding never reallocates. The lecture's formula for its size is ``analysis.kv_cache_bytes``;
``KVCache.nbytes`` is what was actually allocated, so the two can be compared.
"""
from __future__ import annotations

import torch

from .config import ModelConfig


class KVCache(torch.nn.Module):
    def __init__(self, cfg: ModelConfig, B: int, S_max: int | None = None, *, device=None, dtype=None):
        super().__init__()
        S_max = cfg.S_max if S_max is None else S_max
        check_rope_fits(cfg, S_max)
        self.B, self.S_max = B, S_max
        shape = (cfg.L, B, cfg.K, S_max, cfg.H)  # L B K S H
        # Buffers (not parameters) so that model.to(...) and torch.compile treat them as state.
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    @property
    def nbytes(self) -> int:
        """Bytes actually allocated for keys and values."""
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()

    def check_fits(self, length: int, what: str = "prompt plus new tokens") -> None:
        if length > self.S_max:
            raise ValueError(
                f"The {what} need {length} positions but the KV cache holds S_max = {self.S_max}. "
                f"Shorten the prompt or max_new_tokens, or allocate a longer cache "
                f"(KVCache(cfg, B, S_max={length}) with cfg.S_max >= {length})."
            )

    def update(self, layer: int, pos, k: torch.Tensor, v: torch.Tensor):
        """Write k, v ([B K T H]) at positions ``pos`` and return the keys/values to attend to.

        ``pos`` is an int (plain path: write at pos..pos+T, return the filled prefix only) or a
        1-D device tensor of positions (static path: write in place and return the whole cache,
        so that every step has the same shapes; the caller masks the unused tail).
        """
        return write_kv(self.k[layer], self.v[layer], pos, k, v, self.check_fits)


def check_rope_fits(cfg: ModelConfig, S_max: int) -> None:
    """A cache cannot be longer than the model's RoPE table: positions past it have no rotation."""
    if S_max > cfg.S_max:
        raise ValueError(
            f"A KV cache of {S_max} positions is longer than the model's RoPE table "
            f"(S_max = {cfg.S_max}); build the model with cfg.replace(S_max={S_max})."
        )


def write_kv(k_buf: torch.Tensor, v_buf: torch.Tensor, pos, k: torch.Tensor, v: torch.Tensor, check_fits):
    """One layer's cache write, shared by ``KVCache`` and ``fast.StaticKVCache``: k, v [B K T H]
    into k_buf, v_buf [B K S_max H] (views or whole tensors, written in place) at ``pos``, as
    ``KVCache.update`` describes."""
    if isinstance(pos, int):
        T = k.shape[2]
        check_fits(pos + T)
        k_buf[:, :, pos : pos + T] = k
        v_buf[:, :, pos : pos + T] = v
        return k_buf[:, :, : pos + T], v_buf[:, :, : pos + T]
    k_buf.index_copy_(2, pos, k)
    v_buf.index_copy_(2, pos, v)
    return k_buf, v_buf

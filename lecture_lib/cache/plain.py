"""The plain KV cache: one preallocated [L B K S H] tensor each for keys and values.

For every sequence (B), layer (L), KV head (K) and position (S) it stores an H-dim key and an
H-dim value: ``2 * B * L * K * S_max * H`` numbers, allocated once at the largest length so that
decoding never reallocates. The lecture's formula for its size is ``analysis.kv_cache_bytes``;
``KVCache.nbytes`` is what was actually allocated, so the two can be compared.
"""
from __future__ import annotations

import torch

from ..cache_protocol import check_length, check_new_keys, check_rope_fits
from ..config import ModelConfig


class KVCache(torch.nn.Module):
    """Implements ``cache_protocol.KVCacheProtocol``."""

    def __init__(self, cfg: ModelConfig, B: int, S_max: int | None = None, *, device=None, dtype=None):
        super().__init__()
        S_max = cfg.S_max if S_max is None else S_max
        check_rope_fits(cfg, S_max)
        self.cfg, self.B, self.S_max = cfg, B, S_max
        shape = (cfg.L, B, cfg.K, S_max, cfg.H)  # L B K S H
        # Buffers (not parameters) so that model.to(...) and torch.compile treat them as state.
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    @classmethod
    def for_model(cls, model, B: int, S_max: int | None = None) -> "KVCache":
        """A cache on the model's device, in its dtype (read from the embedding, which quantization
        never touches)."""
        w = model.tok_emb.weight
        return cls(model.cfg, B, S_max, device=w.device, dtype=w.dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.k.dtype

    @property
    def nbytes(self) -> int:
        """Bytes actually allocated for keys and values."""
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()

    def check_fits(self, length: int, what: str = "prompt plus new tokens") -> None:
        check_length(self.S_max, length, what,
                     "Shorten the prompt or max_new_tokens, or allocate a longer cache "
                     f"(KVCache(cfg, B, S_max={length}) with cfg.S_max >= {length}).")

    def check_input(self, k: torch.Tensor) -> None:
        check_new_keys(self, k, self.cfg.K, self.cfg.H)

    def update(self, layer: int, pos, k: torch.Tensor, v: torch.Tensor):
        """Write k, v ([B K T H]) at ``pos`` and return the keys/values to attend to (see
        ``cache_protocol``: an int returns the filled prefix, a tensor the whole buffer)."""
        if layer == 0:
            self.check_input(k)
        return write_kv(self.k[layer], self.v[layer], pos, k, v, self.check_fits)


def write_(buf: torch.Tensor, pos, new: torch.Tensor, check_fits) -> torch.Tensor:
    """Write ``new`` [B K T ...] into ``buf`` [B K S_max ...] (in place) at ``pos`` and return the
    slots the new tokens attend to, as ``cache_protocol`` describes: an int p writes positions
    p .. p+T-1 and returns the filled prefix; a 1-D tensor [T] writes those positions in every
    sequence; a 2-D tensor [B T] writes each sequence at its own positions, skipping -1 (padding).
    Tensor positions return the whole buffer and are not range-checked (that would need a host
    sync): the callers check lengths before they start."""
    if isinstance(pos, int):
        T = new.shape[2]
        check_fits(pos + T)
        buf[:, :, pos : pos + T] = new
        return buf[:, :, : pos + T]
    if pos.dim() == 1:  # one set of positions for the whole batch: the compiled decode step
        buf.index_copy_(2, pos, new)
        return buf
    b, t = (pos >= 0).nonzero(as_tuple=True)  # a ragged batch: padding is written nowhere
    buf[b, :, pos[b, t]] = new[b, :, t]
    return buf


def write_kv(k_buf: torch.Tensor, v_buf: torch.Tensor, pos, k: torch.Tensor, v: torch.Tensor, check_fits):
    """One layer's keys and values written with ``write_``; shared by every cache that stores
    plain tensors (views of one [L B K S H] buffer, or one buffer per layer)."""
    return write_(k_buf, pos, k, check_fits), write_(v_buf, pos, v, check_fits)

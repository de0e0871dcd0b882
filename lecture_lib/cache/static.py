"""The static KV cache of the fast decode path: one [B K S_max H] buffer per layer, at fixed
addresses, so that a CUDA graph writes the new token's keys and values in place."""
from __future__ import annotations

import torch

from ..cache_protocol import check_length, check_new_keys, check_rope_fits
from ..config import ModelConfig
from .plain import write_kv


class StaticKVCache:
    """Keys and values at fixed shapes: one [B K S_max H] buffer per layer.

    Implements ``cache_protocol.KVCacheProtocol`` like ``KVCache``, but with per-layer buffers
    rather than one [L B K S H] tensor: under ``torch.compile``, Inductor writes a new token's K/V
    in place only when the written tensor is a whole graph input; an in-place write into a slice
    of a bigger buffer is compiled as copy-the-layer, update, copy-back, which reads and writes
    the whole cache every step. (This is also how Hugging Face's ``StaticCache`` is laid out.)
    """

    def __init__(self, cfg: ModelConfig, B: int, S_max: int, *, device=None, dtype=None):
        check_rope_fits(cfg, S_max)
        self.cfg, self.B, self.S_max = cfg, B, S_max
        shape = (B, cfg.K, S_max, cfg.H)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.L)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.L)]
        for t in self.k + self.v:
            # Tell the compiler these live at a fixed address (like weights): CUDA graphs then read
            # and write them in place instead of copying them in as fresh inputs every replay.
            torch._dynamo.mark_static_address(t)

    @classmethod
    def for_model(cls, model, B: int, S_max: int | None = None) -> "StaticKVCache":
        """A cache on the model's device, in its dtype (the norms keep it when layers are quantized)."""
        w = model.norm.weight
        return cls(model.cfg, B, S_max or model.cfg.S_max, device=w.device, dtype=w.dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.k[0].dtype

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def check_fits(self, length: int, what: str = "prompt plus new tokens") -> None:
        check_length(self.S_max, length, what, f"Build the FastGenerator (or StaticKVCache) with S_max >= {length}.")

    def check_input(self, k: torch.Tensor) -> None:
        check_new_keys(self, k, self.cfg.K, self.cfg.H)

    def update(self, layer: int, pos, k: torch.Tensor, v: torch.Tensor):
        """Write k, v ([B K T H]) at ``pos`` (see ``cache_protocol``)."""
        if layer == 0:
            self.check_input(k)
        return write_kv(self.k[layer], self.v[layer], pos, k, v, self.check_fits)

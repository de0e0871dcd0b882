"""An int8 KV cache: keys and values stored as int8 with one absmax scale per (token, head)."""
from __future__ import annotations

import torch

from ..config import ModelConfig
from ..quant.schemes import quantize_absmax
from .plain import KVCache, write_


class Int8KVCache(KVCache):
    """A KV cache that stores keys and values as int8, one absmax scale per (token, head).

    Implements ``cache_protocol.KVCacheProtocol``: incoming k, v [B K T H] are quantized (absmax
    over each H-vector, ``quant.schemes.quantize_absmax``) and written at ``pos``, and the keys and
    values to attend to come back dequantized in ``dtype``. Memory: 1 byte per number plus one
    scale (in ``dtype``) per H numbers: about half a bf16 cache for H = 128.

    This reference dequantizes the whole prefix every step (it saves memory, not time); fast
    kernels read the int8 values and scales inside attention.
    """

    def __init__(self, cfg: ModelConfig, B: int, S_max: int | None = None, *, device=None,
                 dtype=None):
        super().__init__(cfg, B, S_max, device=device, dtype=torch.int8)  # k, v: int8 L B K S H
        self._dtype = torch.get_default_dtype() if dtype is None else dtype
        shape = (cfg.L, B, cfg.K, self.S_max, 1)  # L B K S 1
        self.register_buffer("k_scale", torch.zeros(shape, device=device, dtype=self._dtype),
                             persistent=False)
        self.register_buffer("v_scale", torch.zeros(shape, device=device, dtype=self._dtype),
                             persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype keys and values come back in (the storage is int8)."""
        return self._dtype

    @property
    def nbytes(self) -> int:
        """Bytes allocated: int8 keys and values plus their scales."""
        return sum(t.numel() * t.element_size() for t in (self.k, self.v, self.k_scale, self.v_scale))

    def update(self, layer: int, pos, k: torch.Tensor, v: torch.Tensor):
        if layer == 0:
            self.check_input(k)
        out = []
        for codes, scales, new in ((self.k, self.k_scale, k), (self.v, self.v_scale, v)):
            q, scale = quantize_absmax(new, 8, axis=(0, 1, 2), scale_dtype=self._dtype)  # a scale per H-vector
            q_all = write_(codes[layer], pos, q, self.check_fits)
            s_all = write_(scales[layer], pos, scale, self.check_fits)
            out.append(q_all.to(new.dtype) * s_all.to(new.dtype))
        return tuple(out)

"""A paged KV cache: one pool of blocks for every sequence, read through block tables.

Implements ``cache_protocol`` for ragged batches ([B T] positions): the engine ``bind``s the
step's block tables, ``update`` writes each new token's key and value into slot
(table[b][p // block_size], p % block_size) and returns, per sequence, its blocks gathered in
order, [B K S H] with S = (most blocks of any sequence) x block_size, so that slot s still
holds position s and the model's position-based mask does the rest. This is the readable
reference of PagedAttention: it copies the blocks out before attending (a fast kernel reads
them in place).
"""
from __future__ import annotations

import torch
from einops import rearrange

from ..config import ModelConfig


class PagedKVCache:
    def __init__(self, cfg: ModelConfig, num_blocks: int, block_size: int, *, device=None, dtype=None):
        self.cfg, self.block_size, self.num_blocks = cfg, block_size, num_blocks
        shape = (cfg.L, num_blocks, cfg.K, block_size, cfg.H)  # L blocks K slots H
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.tables: torch.Tensor | None = None
        self.B, self.S_max = 0, 0

    @classmethod
    def for_model(cls, model, num_blocks: int, block_size: int) -> "PagedKVCache":
        w = model.norm.weight
        return cls(model.cfg, num_blocks, block_size, device=w.device, dtype=w.dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.k.dtype

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    def bind(self, block_tables: list[list[int]]) -> None:
        """This step's sequences, in batch order (a table may be padded: padding is never read
        unmasked, since it sits past the sequence's positions)."""
        width = max(len(t) for t in block_tables)
        self.tables = torch.tensor([t + [0] * (width - len(t)) for t in block_tables], device=self.k.device)
        self.B, self.S_max = len(block_tables), width * self.block_size

    def copy_block(self, src: int, dst: int) -> None:
        """Copy-on-write: duplicate a shared block before a sequence writes into it."""
        self.k[:, dst] = self.k[:, src]
        self.v[:, dst] = self.v[:, src]

    def check_fits(self, length: int, what: str = "positions") -> None:
        if length > self.S_max:
            raise ValueError(f"{what}: {length} positions but the bound block tables hold {self.S_max}.")

    def check_input(self, k: torch.Tensor) -> None:
        if k.shape[0] != self.B or k.shape[1] != self.cfg.K or k.shape[3] != self.cfg.H or k.dtype != self.dtype:
            raise ValueError(f"keys {tuple(k.shape)} {k.dtype} do not fit this step's paged cache "
                             f"(B={self.B}, K={self.cfg.K}, H={self.cfg.H}, {self.dtype}).")

    def update(self, layer: int, pos, k: torch.Tensor, v: torch.Tensor):
        if not isinstance(pos, torch.Tensor) or pos.dim() != 2:
            raise ValueError("The paged cache serves ragged batches: pass [B T] positions.")
        b, t = (pos >= 0).nonzero(as_tuple=True)  # padding (-1) is written nowhere
        p = pos[b, t]
        block, slot = self.tables[b, p // self.block_size], p % self.block_size
        self.k[layer][block, :, slot] = k[b, :, t]  # [n K H]
        self.v[layer][block, :, slot] = v[b, :, t]
        gather = "B n K s H -> B K (n s) H"  # each sequence's blocks in table order: slot = position
        return rearrange(self.k[layer][self.tables], gather), rearrange(self.v[layer][self.tables], gather)

"""A paged KV cache: one pool of blocks for every sequence, read through block tables.

Implements ``cache_protocol`` for ragged batches ([B T] positions): the engine ``bind``s the
step's block tables, ``update`` writes each new token's key and value into slot
(table[b][p // block_size], p % block_size) and returns, per sequence, its blocks gathered in
order, [B K S H] with S = (most blocks of any sequence) x block_size, so that slot s still
holds position s and the model's position-based mask does the rest. This is the readable
reference of PagedAttention: it copies the blocks out before attending (a fast kernel reads
them in place).

The packed mode (``bind_packed``) is the fast path: the step's tokens are one row [1 T] (no
padding), each token carries its own sequence's block table, and the cache ``attends`` itself
(``cache_protocol``): it writes the new keys and values into their slots and runs
``paged_attention`` (a Triton kernel on a GPU) over the pool in place. The pool holds one block
more than the block manager hands out, the *null block*, where the padding rows of a
fixed-size CUDA-graph step write their throw-away keys.
"""
from __future__ import annotations

import weakref

import torch
from einops import rearrange

from ..config import ModelConfig
from .paged_attention import paged_attention


_CACHES: "weakref.WeakValueDictionary[int, PagedKVCache]" = weakref.WeakValueDictionary()


@torch.library.custom_op("lecture_lib::paged_write_attend", mutates_args=())
def _paged_write_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tables: torch.Tensor,
                        pos: torch.Tensor, cache_id: int, layer: int) -> torch.Tensor:
    """The cache's write-then-attend as one opaque operator, so that ``torch.compile`` fuses
    everything around it and leaves the pool alone: the compiled graph sees an int, not the
    pool (as vLLM does), so it neither copies nor guards on a many-gigabyte tensor."""
    return _CACHES[cache_id].write_attend(layer, q, k, v, tables, pos)


@_paged_write_attend.register_fake
def _(q, k, v, tables, pos, cache_id, layer):
    return torch.empty_like(q)


class PagedKVCache:
    def __init__(self, cfg: ModelConfig, num_blocks: int, block_size: int, *, device=None, dtype=None):
        self.cfg, self.block_size, self.num_blocks = cfg, block_size, num_blocks
        shape = (cfg.L, num_blocks + 1, cfg.K, block_size, cfg.H)  # L blocks K slots H; +1: the null block
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.null_block = num_blocks
        self.tables: torch.Tensor | None = None
        self.B, self.S_max = 0, 0
        self.attends = False  # True once bound packed: the model then calls attend()
        _CACHES[id(self)] = self  # for the operator, which is handed id(self)

    @classmethod
    def for_model(cls, model, num_blocks: int, block_size: int) -> "PagedKVCache":
        w = model.norm.weight
        return cls(model.cfg, num_blocks, block_size, device=w.device, dtype=w.dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.k.dtype

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2  # the null block included

    def bind(self, block_tables: list[list[int]]) -> None:
        """This step's sequences, in batch order (a table may be padded: padding is never read
        unmasked, since it sits past the sequence's positions)."""
        width = max(len(t) for t in block_tables)
        self.tables = torch.tensor([t + [0] * (width - len(t)) for t in block_tables], device=self.k.device)
        self.B, self.S_max = len(block_tables), width * self.block_size
        self.attends = False

    def bind_packed(self, token_tables: torch.Tensor) -> None:
        """The packed path: one row of T tokens (any mix of prompt chunks and decodes), and for
        each token its sequence's block table, [T W] on the device. Positions come with the
        forward pass as a [1 T] tensor, as always."""
        self.tables, self.attends = token_tables, True
        self.B, self.S_max = 1, token_tables.shape[1] * self.block_size

    def attend(self, layer: int, pos: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Store the new keys and values, then attend to each token's own sequence in place.
        q [1 N T H], k and v [1 K T H], pos [1 T] -> [1 N T H]."""
        y = _paged_write_attend(rearrange(q, "1 N T H -> T N H"), rearrange(k, "1 K T H -> T K H").contiguous(),
                                rearrange(v, "1 K T H -> T K H").contiguous(), self.tables, pos[0], id(self), layer)
        return rearrange(y, "T N H -> 1 N T H")

    def write_attend(self, layer: int, q, k, v, tables, pos):
        """q [T N H], k and v [T K H], tables [T W], pos [T]: each token's key and value go to
        slot (its table[pos // block_size], pos % block_size); then every token attends to its
        sequence's positions 0..pos."""
        block = tables.gather(1, (pos // self.block_size)[:, None])[:, 0]
        slot = pos % self.block_size
        self.k[layer][block, :, slot] = k
        self.v[layer][block, :, slot] = v
        return paged_attention(q, self.k[layer], self.v[layer], tables, pos + 1)

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

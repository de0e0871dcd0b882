"""The KV-cache protocol: what the model asks of a cache, written down once.

The model (``lecture_lib.model``) knows nothing of how keys and values are stored; it calls
``cache.update`` once per layer per forward pass and attends to what comes back. Every cache in
``lecture_lib.cache`` (plain, static, int8; a paged one later) implements this contract, and
``tests/test_cache_protocol.py`` runs the same contract tests over each of them.

Shapes use the lecture's letters: B sequences, K KV heads, T new tokens, S positions, H head dim.

The contract
------------
``update(layer, pos, k, v) -> (k_all, v_all)``
    ``k``, ``v``: [B K T H], the new tokens' keys and values (after RoPE) in the model's dtype.
    The cache stores them and returns the keys and values the new tokens attend to,
    [B K S H] in the dtype of ``k``. ``pos`` says where the new tokens sit:

    * an ``int`` p: every sequence's tokens are at positions p .. p+T-1 (the plain path). The
      return value is the filled prefix, S = p + T: positions 0 .. p+T-1 and nothing else.
    * a 1-D device tensor [T]: the same positions for every sequence, given on the device so
      that a compiled step never changes shape (the static path). The return value is the whole
      buffer, S = ``S_max``; slots past the current positions hold stale values that the model
      masks out.
    * a 2-D device tensor [B T]: each sequence its own positions (a ragged batch). A position
      of -1 marks a padding token: nothing is written for it. The return value is the whole
      buffer, S = ``S_max``; slot s of sequence b holds position s.

    In every case slot s holds position s: the model derives the attention mask from the
    positions alone (key slot s is visible to a query at position p when s <= p).

A cache that attends itself (optional)
    A cache whose ``attends`` attribute is true (the serving engine's packed paged cache) is
    handed the queries too: the model calls ``attend(layer, pos, q, k, v) -> y`` with q
    [B N T H] and k, v [B K T H] after RoPE, and uses y [B N T H] in place of ``update``
    followed by its own attention (and builds no mask). That is how a kernel reads keys where
    they are stored instead of receiving a gathered copy.

Who owns positions
    The caller. A cache never counts tokens: the generate functions (``lecture_lib.decode``)
    know where each sequence is and pass it in ``pos``. That is what lets one cache serve a
    batch whose sequences are at different positions, and lets speculative decoding roll back
    by simply writing the next tokens at earlier positions.

``B``, ``S_max``
    The batch the cache holds and the number of positions per sequence.
``dtype``
    The dtype of the keys and values it returns (the model's compute dtype).
``nbytes``
    Bytes actually allocated (keys, values and any scales), to compare with the formula
    ``analysis.kv_cache_bytes``.
``check_fits(length, what=...)``
    Raise a ``ValueError`` naming the problem and the fix if ``length`` positions do not fit.
``check_input(k)``
    Raise a ``ValueError`` if new keys of this shape and dtype cannot go into this cache (another
    batch size, another number of heads or head dim, another dtype).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .config import ModelConfig


@runtime_checkable
class KVCacheProtocol(Protocol):
    """The interface every KV cache implements (see the module docstring for the contract)."""

    B: int
    S_max: int

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def nbytes(self) -> int: ...

    def check_fits(self, length: int, what: str = "prompt plus new tokens") -> None: ...

    def check_input(self, k: torch.Tensor) -> None: ...

    def update(self, layer: int, pos, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def check_rope_fits(cfg: ModelConfig, S_max: int) -> None:
    """A cache cannot be longer than the model's RoPE table: positions past it have no rotation."""
    if S_max > cfg.S_max:
        raise ValueError(
            f"A KV cache of {S_max} positions is longer than the model's RoPE table "
            f"(S_max = {cfg.S_max}); build the model with cfg.replace(S_max={S_max})."
        )


def check_length(S_max: int, length: int, what: str, fix: str) -> None:
    """The one 'does it fit' check every cache's ``check_fits`` calls."""
    if length > S_max:
        raise ValueError(f"The {what} need {length} positions but the KV cache holds S_max = {S_max}. {fix}")


def check_new_keys(cache, k: torch.Tensor, K: int, H: int) -> None:
    """The one input check every cache's ``check_input`` calls: k is [B K T H] in the cache's dtype."""
    if k.dim() != 4 or k.shape[0] != cache.B or k.shape[1] != K or k.shape[3] != H:
        raise ValueError(
            f"This KV cache holds B = {cache.B} sequences of K = {K} heads of dim H = {H}, but the new "
            f"keys are {tuple(k.shape)} ([B K T H]). Build the cache for this batch "
            f"(e.g. KVCache.for_model(model, B={k.shape[0]}, S_max=...)).")
    if k.dtype != cache.dtype:
        raise ValueError(
            f"This KV cache stores {cache.dtype} but the model computes in {k.dtype}. Build the cache "
            f"after casting the model (KVCache.for_model(model, ...) reads the model's dtype).")

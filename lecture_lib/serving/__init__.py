"""Serving many requests at once: the pieces of a small engine (continuous batching, a paged KV
cache, prefix caching). Built up in slices; what exists so far:

- ``block_manager``: the pool of fixed-size KV blocks, per-sequence block tables, reference
  counts, prefix caching by chained hashes of full blocks (with least-recently-freed eviction)
  and copy-on-write for sequences that fork.
- ``paged_cache``: ``PagedKVCache``, the cache protocol on that pool (the readable reference of
  PagedAttention: gather a sequence's blocks, then attend).
- ``engine``: ``Engine``, iteration-level scheduling (prefill and decode in one step, FCFS,
  preemption by recompute) over the paged cache; ``generate`` for offline batches.

What does not live here: the model and its caches for one batch (``lecture_lib.model``,
``lecture_lib.cache``), and single-request decoding (``lecture_lib.decode``).
"""
from .block_manager import BlockManager, NoFreeBlocks, Sequence
from .engine import Engine, Request
from .paged_cache import PagedKVCache

__all__ = ["BlockManager", "NoFreeBlocks", "Sequence", "Engine", "Request", "PagedKVCache"]

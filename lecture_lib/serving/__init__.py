"""Serving many requests at once: a small engine (continuous batching, a paged KV cache, prefix
caching), and a simulator of it.

- ``block_manager``: the pool of fixed-size KV blocks, per-sequence block tables, reference
  counts, prefix caching by chained hashes of full blocks (with least-recently-freed eviction)
  and copy-on-write for sequences that fork.
- ``paged_cache``: ``PagedKVCache``, the cache protocol on that pool: the readable reference
  (gather a sequence's blocks, then attend) and the packed mode that attends in place.
- ``paged_attention``: PagedAttention for packed tokens, in PyTorch and as a Triton kernel.
- ``runner``: ``ModelRunner``, one forward pass per step (padded or packed; on a GPU a CUDA
  graph for every step: decode steps by batch size, mixed steps by token count).
- ``engine``: ``Engine``, iteration-level scheduling (prefill and decode in one step, chunked
  prefill, FCFS, preemption by recompute; or static batching) and the step-by-step interface.
- ``llm``: ``LLM`` and ``SamplingParams``, the offline API.
- ``simulator``: ``SimulatedEngine``, the same scheduler on a virtual clock with a roofline
  cost per step; ``summarize`` for throughput, TTFT and TPOT.
- ``bench``: the engine against sequential decoding (CPU) and the offline GPU benchmark.
- ``server``: the OpenAI-compatible HTTP server (``python -m lecture_lib.serve``); ``loadgen``:
  the load generator with vLLM's metric definitions (``python -m lecture_lib.loadgen``). Both
  need FastAPI/uvicorn/httpx and are imported on demand, not by this package.

What does not live here: the model and its caches for one batch (``lecture_lib.model``,
``lecture_lib.cache``), and single-request decoding (``lecture_lib.decode``).
"""
from .block_manager import BlockManager, NoFreeBlocks, Sequence
from .engine import Engine, Request
from .llm import LLM, Completion, SamplingParams
from .paged_cache import PagedKVCache
from .simulator import SimulatedEngine, StepCost, summarize

__all__ = ["BlockManager", "NoFreeBlocks", "Sequence", "Engine", "Request", "LLM", "Completion", "SamplingParams",
           "PagedKVCache", "SimulatedEngine", "StepCost", "summarize"]

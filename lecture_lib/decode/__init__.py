"""Decoding: turning a model and a prompt into new tokens.

- ``sampling``: the one sampler (greedy, temperature, top-k; no host sync), and its input checks.
- ``result``: ``Generation``, what every generate function returns (tokens, times, finish reasons).
- ``stopping``: EOS and per-sequence token limits.
- ``plain``: naive (no cache) and KV-cached decoding, the readable reference (``generate_naive``,
  ``generate_cached``, ``generate``).
- ``fast``: ``FastGenerator``, a static cache and a compiled step with CUDA graphs (the roofline path).
- ``speculative``: speculative sampling (a draft proposes k tokens, the target verifies them in
  one forward; exact), with model, layer-skip and n-gram drafts: the readable batch-1 version.

What does not live here: the caches (``lecture_lib.cache``), timing and benchmarks
(``lecture_lib.measure``), and scheduling many requests (a serving engine, ``lecture_lib.serving``).
"""
from .fast import FastGenerator, fuse_projections_
from .plain import generate, generate_cached, generate_naive
from .result import Generation
from .sampling import sample
from .speculative import NGramDraft, ModelDraft, layer_skip_draft, speculative_generate

__all__ = ["FastGenerator", "fuse_projections_", "generate", "generate_cached", "generate_naive",
           "Generation", "sample", "speculative_generate", "ModelDraft", "NGramDraft", "layer_skip_draft"]

"""Measuring: honest timing, the device's ceilings, the roofline, the decode benchmark, and what
quantization does to a model's quality.

- ``timing``: synchronize, warm up, repeat, median and spread; CUDA events; peak memory; CUDA
  graphs (``capture_cuda_graph``, ``graph_seconds``).
- ``oom``: out-of-memory in a sweep, recorded rather than raised.
- ``ceilings``: measured copy bandwidth and matmul FLOP/s.
- ``roofline``: matmul, MLP and attention sweeps against their intensity, the fitted ridge
  (``python -m lecture_lib.measure.roofline``).
- ``references``: the reference measurements shipped in ``data/reference``.
- ``bench``: the decode benchmark, naive to int8 (``python -m lecture_lib.bench``).
- ``gqa_sweep``: the decode step against the number of KV heads.
- ``gemv_bench``: the int8 GEMV kernel against cuBLAS and Inductor (``python -m lecture_lib.measure.gemv_bench``).
- ``quality``: perplexity and KL of a (quantized) model, through a KV cache or not.

What does not live here: anything a model needs to run (a measurement only watches).
Everything here may import the rest of the library; nothing else in the library imports from
here (``lecture_lib.bench`` is only the benchmark's short command name). A serving
engine (continuous batching, a paged cache) will be ``lecture_lib.serving``, beside this package:
it builds on ``cache`` and ``decode``, and ``measure`` benchmarks it.
"""

"""Several devices for one model: tensor-parallel decode.

- ``tp``: ``shard_(model)`` keeps this rank's slice of every layer (Megatron-LM: Q/K/V and
  gate/up column-parallel, the output and down projections row-parallel with an all-reduce
  after each; KV heads split, so each rank's KV cache holds K/W heads); ``init()`` joins the
  process group ``torchrun`` set up (NCCL on GPUs, gloo on CPUs).
- ``cost``: the arithmetic: bytes per chip, all-reduce bytes (the ring's and kipply's count),
  the decode step and speed-up against W, the ceiling.
- ``run``: ``spawn`` (W CPU processes over gloo on 127.0.0.1, for tests and the notebook's
  functional demo), ``decode_on_ranks`` (their worker), and the GPU benchmark under torchrun.

What does not live here: the model itself (``model``, unchanged: sharding only slices its
weights and hooks two of its projections), the decoders (``decode``: ``FastGenerator`` runs a
sharded model as it is) and pipeline or expert parallelism (not built).
"""
from . import cost
from .tp import AllReduce, check_divisible, init, shard_

__all__ = ["AllReduce", "check_divisible", "cost", "init", "shard_"]

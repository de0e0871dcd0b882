"""Several devices for one model: tensor-parallel decode (``tp``), its arithmetic (``cost``) and
the launchers (``run``: CPU processes over gloo for tests and demos, ``torchrun`` on GPUs)."""
from . import cost
from .tp import AllReduce, check_divisible, init, shard_

__all__ = ["AllReduce", "check_divisible", "cost", "init", "shard_"]

"""Count the PyTorch operators a call dispatches (notebook 04: what a decode step costs besides
its FLOPs).

In eager PyTorch every operator costs host time (Python, dispatch), and on a GPU every operator
that computes launches at least one kernel, microseconds each whatever its size. A step whose
kernels are small is therefore priced by how many operators it runs. ``count_ops`` counts them
with a ``TorchDispatchMode``, on any device; view operators (reshape, slice, ...) are counted
too but launch no kernel, so ``kernel_ops`` leaves them out.
"""
from __future__ import annotations

from collections import Counter

from torch.utils._python_dispatch import TorchDispatchMode

# Operators that only make a view (or read a scalar's metadata): no kernel, only host time.
VIEW_OPS = frozenset({
    "aten.view", "aten._unsafe_view", "aten.reshape", "aten.permute", "aten.transpose", "aten.t",
    "aten.slice", "aten.select", "aten.expand", "aten.unsqueeze", "aten.squeeze", "aten.split",
    "aten.split_with_sizes", "aten.chunk", "aten.unbind", "aten.alias", "aten.as_strided",
    "aten.detach", "aten.narrow", "aten.unflatten", "aten.flatten",
})


class _Counter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn, *args, **kwargs) -> Counter:
    """Run ``fn(*args, **kwargs)`` once and return how many times each aten operator was
    dispatched, e.g. ``Counter({"aten.linear": 29, "aten.mul": 38, ...})``."""
    counter = _Counter()
    with counter:
        fn(*args, **kwargs)
    return counter.ops


def kernel_ops(ops: Counter) -> int:
    """The operators of ``count_ops`` that compute (not views): on a GPU, kernel launches (at
    least one each)."""
    return sum(n for name, n in ops.items() if name not in VIEW_OPS)

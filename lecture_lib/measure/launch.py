"""What kernel-launch overhead does to a measurement (notebook 07).

Timed eagerly on a GPU, a call's time is its kernels' time *plus* the host's time to launch them
(Python, the dispatcher, the driver): ``time_fn`` stamps a CUDA event, then the host launches the
kernel while the GPU waits. A CUDA graph replays recorded kernels with one launch, so the same
call timed as a graph replay (``timing.graph_seconds``) is the kernels alone. The difference is the
launch overhead, and it shrinks a short kernel's *apparent* bandwidth: bytes / (kernel + launch).

- ``eager_and_graph_seconds``: one call timed both ways (graph: CUDA only).
- ``step_seconds``: one KV-cached decode step of a model both ways (no compile needed).
- ``eager_ops_per_step``: the operators one eager decode step runs (each launches a kernel).
"""
from __future__ import annotations

import torch

from .opcount import count_ops, kernel_ops
from .timing import decode_step_seconds, graph_seconds, time_fn


def eager_and_graph_seconds(fn, *args, repeats: int = 50, calls: int = 10,
                            stat: str = "median") -> tuple[float, float | None]:
    """(eager, graph) seconds of ``fn(*args)``: the eager call (``time_fn``: includes the launch;
    ``stat`` "median", or "min" on a shared machine, where other work only ever adds time), and on
    a CUDA device the same call as a CUDA-graph replay (``graph_seconds``, ``calls`` calls a graph:
    no launch overhead); graph is None elsewhere."""
    if stat not in ("median", "min"):
        raise ValueError(f"stat must be 'median' or 'min', got {stat!r}.")
    device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
    with torch.inference_mode():
        eager = getattr(time_fn(fn, *args, warmup=3, repeats=repeats, device=device), stat)
        graph = graph_seconds(fn, *args, calls=calls, repeats=repeats) if device.type == "cuda" else None
    return eager, graph


def step_seconds(model, B: int = 1, S: int = 64, repeats: int = 20) -> tuple[float, float | None]:
    """(eager, graph) seconds of one decode step (B sequences, S tokens in a static cache): eager,
    then as a CUDA-graph replay (``timing.decode_step_seconds``; CUDA only, else None). Neither
    compiles: the graph replays the eager step's own kernels, so their difference is launch
    overhead, and what compiling adds beyond that is kernel fusion."""
    from ..cache.static import StaticKVCache

    device = model.norm.weight.device
    cache = StaticKVCache.for_model(model, B, S + 1)
    x = torch.zeros(B, 1, dtype=torch.long, device=device)
    pos = torch.arange(S, S + 1, device=device)
    with torch.inference_mode():
        eager = time_fn(lambda t: model(t, cache, pos), x, warmup=2, repeats=repeats, device=device).median
    graph = decode_step_seconds(model, B, S, repeats=repeats) if device.type == "cuda" else None
    return eager, graph


def eager_ops_per_step(cfg, device=None, dtype=None) -> int:
    """Operators (views excluded: no kernel) in one KV-cached eager decode step and its greedy pick,
    for a model shaped like ``cfg``. Counted on a narrow copy (D, F, V small; the same L, N, K, H):
    the count depends on the layers and the code path, not on the widths."""
    from ..cache import KVCache
    from ..model import Transformer

    narrow = cfg.replace(D=64, F=64, V=256, S_max=64)
    m = Transformer(narrow).to(device or "cpu", dtype or torch.float32).eval()
    cache = KVCache.for_model(m, 1, 32)
    x = torch.zeros(1, 16, dtype=torch.long, device=device or "cpu")
    with torch.inference_mode():
        m(x, cache, 0)
        ops = count_ops(lambda: m(x[:, :1], cache, 16)[:, -1].argmax(-1).tolist())
    return kernel_ops(ops)

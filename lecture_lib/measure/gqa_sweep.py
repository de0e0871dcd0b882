"""A measured sweep of the KV-cached decode step against the number of KV heads K (notebook 05):
step time, the KV cache's bytes and (on CUDA) the peak memory, out-of-memory caught per point.

- ``decode_sweep``: eager steps with the plain cache (on a GPU, launch-bound: the kernel-launch
  floor hides the bytes).
- ``decode_sweep_graphed``: the same step as a CUDA-graph replay on a GPU (eager elsewhere), with
  ``cache.grouped.GroupedDecodeKVCache`` so that every attention backend reads each KV head once; on a GPU
  also the eager time of the same step, for the contrast.
- ``sweep_batch``: the largest batch (at most ``max_B``) whose caches for every K fit in a share
  of the device's free memory, so that the sweep fits a 16 GB T4 as well as an H200.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import analysis
from ..cache.plain import KVCache
from ..config import ModelConfig
from ..model import Transformer
from .oom import free_memory, is_oom
from .timing import Timing, capture_cuda_graph, peak_memory, time_fn


@dataclass
class SweepPoint:
    """One K of ``decode_sweep``. ``timing`` is None when the point ran out of memory."""

    K: int
    B: int
    S: int  # positions the decode step attends to (the cached context plus the new token)
    kv_cache_bytes: int  # what the KV cache allocated (KVCache.nbytes)
    weight_bytes: int  # the model's parameters as stored on the device
    bytes_per_step: float  # analysis.decode_bytes_per_step: weights + the KV cache read once
    timing: Timing | None = None
    peak_bytes: int | None = None  # CUDA: max_memory_allocated during build + one step, over the start
    oom: bool = False
    error: str = ""
    eager_timing: Timing | None = None  # decode_sweep_graphed on CUDA: the same step, eager

    @property
    def step_time(self) -> float:
        """Median seconds of one decode step (nan if out of memory)."""
        return self.timing.median if self.timing is not None else float("nan")


def decode_sweep(cfg: ModelConfig, Ks, B: int, S: int, device, dtype=torch.float32,
                 warmup: int = 2, repeats: int = 3, rounds: int = 3, progress=None) -> list[SweepPoint]:
    """Time one KV-cached decode step of ``Transformer(cfg.replace(K=K))`` for each K in ``Ks``.

    Each model gets a cache of B sequences whose first S - 1 positions count as filled (their
    contents do not change the time), and one new token per sequence at position S - 1 attends
    to all S positions: the step reads every weight once and the whole KV cache once. Weights are
    random: speed does not depend on what they say.

    All models are built first (one CUDA peak-memory reading each, taken over what was allocated
    before it), then timed round-robin, ``rounds`` times ``repeats`` steps each, so a slow spell
    of a shared machine hits every K alike; the Timing holds all of a K's steps. A K that runs out
    of memory is recorded as ``oom=True`` (and freed) and the sweep goes on.
    ``progress``: optional callable wrapping an iterable (e.g. ``tqdm``).
    """
    device = torch.device(device)
    wrap = progress or (lambda it, **kw: it)
    points, live = [], []
    for K in Ks:
        c = cfg.replace(K=K, S_max=max(cfg.S_max, S))
        kv_formula = analysis.kv_cache_bytes(c, B, S, bytes_per_value=torch.finfo(dtype).bits // 8)
        point = SweepPoint(K=K, B=B, S=S, kv_cache_bytes=int(kv_formula), weight_bytes=0,
                           bytes_per_step=float("nan"))
        points.append(point)
        model = cache = None
        try:
            with peak_memory(device) as mem:
                model = Transformer(c).to(device, dtype).eval()
                cache = KVCache.for_model(model, B, S)
                token = torch.randint(0, c.V, (B, 1), device=device)
                with torch.inference_mode():
                    model(token, cache, S - 1)
            point.kv_cache_bytes = cache.nbytes
            point.weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
            bpv = cache.k.element_size()
            point.bytes_per_step = analysis.decode_bytes_per_step(c, B, S, weight_bytes=bpv, kv_bytes=bpv)
            if mem.extra_bytes is not None:
                point.peak_bytes = mem.extra_bytes
            live.append((point, model, cache, token))
        except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
            if not is_oom(err):
                raise
            point.oom, point.error = True, str(err).splitlines()[0]
            del model, cache
            free_memory(device)

    def step(model, cache, token):
        with torch.inference_mode():
            model(token, cache, S - 1)

    times = {id(p): [] for p, *_ in live}
    for p, model, cache, token in live:
        try:
            time_fn(step, model, cache, token, warmup=warmup, repeats=1, device=device)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as err:  # activations on top of the cache
            if not is_oom(err):
                raise
            p.oom, p.error = True, str(err).splitlines()[0]
    live = [x for x in live if not x[0].oom]
    free_memory(device)
    for _ in wrap(range(rounds), desc="decode steps vs K"):
        for p, model, cache, token in live:
            t = time_fn(step, model, cache, token, warmup=0, repeats=repeats, device=device)
            times[id(p)] += t.times
    for p, *_ in live:
        p.timing = Timing(times[id(p)], method="cuda events" if device.type == "cuda" else "perf_counter")
    del live
    free_memory(device)
    return points


def sweep_batch(cfg: ModelConfig, Ks, S: int, device, dtype=torch.bfloat16, share: float = 0.5,
                max_B: int = 32) -> tuple[int, str]:
    """(B, why): the largest batch, at most ``max_B``, for which the models and KV caches of every
    K in ``Ks`` (all built at once by the sweeps) fit in ``share`` of the device's free memory
    (``torch.cuda.mem_get_info`` on CUDA). Elsewhere ``max_B``. 0 when not even B = 1 fits."""
    device = torch.device(device)
    if device.type != "cuda":
        return max_B, f"{device.type}: B = {max_B} as given (no free-memory reading)"
    free = torch.cuda.mem_get_info(device)[0]
    nbytes = torch.finfo(dtype).bits // 8
    weights = sum(analysis.num_params(cfg.replace(K=K)) * nbytes for K in Ks)
    per_sequence = sum(analysis.kv_cache_bytes(cfg.replace(K=K), 1, S, bytes_per_value=nbytes) for K in Ks)
    B = min(int(max(0, share * free - weights) // per_sequence), max_B)
    why = (f"{free / 1e9:.1f} GB free; {share:.0%} of it holds the {len(Ks)} models ({weights / 1e9:.2f} GB) "
           f"and their caches, {per_sequence / 1e9:.3f} GB per sequence of {S} tokens -> B = {B}"
           + (f" (capped at {max_B})" if B == max_B else ""))
    return B, why


def decode_sweep_graphed(cfg: ModelConfig, Ks, B: int, S: int, device, dtype=torch.float32,
                         repeats: int = 10, rounds: int = 3, calls: int = 10, eager: bool = True,
                         progress=None) -> list[SweepPoint]:
    """Time one KV-cached decode step of ``Transformer(cfg.replace(K=K))`` for each K in ``Ks``
    as ``decode_sweep`` does (B sequences, S positions attended, random weights, round-robin
    rounds, out of memory recorded per point), but:

    - the cache is a ``cache.grouped.GroupedDecodeKVCache``: each KV head is read once for its G query
      heads on every attention backend (``enable_gqa`` alone copies K/V G times where
      FlashAttention is missing, e.g. on a T4);
    - on CUDA the step is a CUDA-graph replay (``calls`` steps captured in one graph, each replay
      timed with CUDA events and divided by ``calls``): no kernel-launch overhead, so what is left
      is the step's memory traffic. With ``eager=True`` the same step is also timed eager into
      ``eager_timing`` (launch-bound on a fast GPU), for the contrast;
    - elsewhere the step runs eager (``timing``) and ``eager_timing`` stays None.

    Every replay writes the same position (the cache's contents do not change the time).
    """
    from ..cache.grouped import GroupedDecodeKVCache

    device = torch.device(device)
    wrap = progress or (lambda it, **kw: it)
    bpv = torch.finfo(dtype).bits // 8
    points, live = [], []
    for K in Ks:
        c = cfg.replace(K=K, S_max=max(cfg.S_max, S))
        point = SweepPoint(K=K, B=B, S=S, weight_bytes=0, bytes_per_step=float("nan"),
                           kv_cache_bytes=int(analysis.kv_cache_bytes(c, B, S, bytes_per_value=bpv)))
        points.append(point)
        model = cache = graphed = None
        try:
            with peak_memory(device) as mem:
                with torch.device(device):
                    model = Transformer(c)
                model = model.to(dtype).eval()
                cache = GroupedDecodeKVCache.for_model(model, B, S)
                token = torch.randint(0, c.V, (B, 1), device=device)
                step = (lambda m, ca: lambda t: m(t, ca, S - 1))(model, cache)
                with torch.inference_mode():
                    step(token)
                    if device.type == "cuda":
                        graphed = capture_cuda_graph(lambda t, f=step: [f(t) for _ in range(calls)][-1], token)
            point.kv_cache_bytes = cache.nbytes
            point.weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
            point.bytes_per_step = analysis.decode_bytes_per_step(c, B, S, weight_bytes=bpv, kv_bytes=bpv)
            point.peak_bytes = mem.extra_bytes
            live.append((point, model, cache, token, step, graphed))
        except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
            if not is_oom(err):
                raise
            point.oom, point.error = True, str(err).splitlines()[0]
            del model, cache, graphed
            free_memory(device)

    graph_times = {id(p): [] for p, *_ in live}
    eager_times = {id(p): [] for p, *_ in live}
    with torch.inference_mode():
        for p, model, cache, token, step, graphed in live:  # warm up every K before timing any
            if graphed is not None:
                graphed()
            step(token)
        for _ in wrap(range(rounds), desc="decode steps vs K"):
            for p, model, cache, token, step, graphed in live:
                if graphed is not None:
                    t = time_fn(graphed, warmup=0, repeats=repeats, device=device)
                    graph_times[id(p)] += [x / calls for x in t.times]
                    if eager:
                        eager_times[id(p)] += time_fn(step, token, warmup=0, repeats=repeats, device=device).times
                else:
                    graph_times[id(p)] += time_fn(step, token, warmup=0, repeats=repeats, device=device).times
    method = "cuda graph, cuda events" if device.type == "cuda" else f"eager, perf_counter ({device.type})"
    for p, *_ in live:
        p.timing = Timing(graph_times[id(p)], method=method)
        if eager_times[id(p)]:
            p.eager_timing = Timing(eager_times[id(p)], method="eager, cuda events")
    del live
    free_memory(device)
    return points

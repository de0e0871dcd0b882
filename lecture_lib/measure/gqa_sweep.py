"""A measured sweep of the KV-cached decode step against the number of KV heads K (notebook 05):
step time, the KV cache's bytes and (on CUDA) the peak memory, out-of-memory caught per point."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import analysis
from ..cache.plain import KVCache
from ..config import ModelConfig
from ..model import Transformer
from .oom import free_memory, is_oom
from .timing import Timing, peak_memory, time_fn


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

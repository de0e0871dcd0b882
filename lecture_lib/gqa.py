"""Grouped-query attention helpers for notebook 05: converting between K and N KV heads, and a
measured sweep of the cached decode step against K.

- ``expand_kv_heads``: a GQA model as the MHA model it equals (each KV head's projection copied
  to its G query heads): GQA is MHA with the K/V heads of a group tied together.
- ``pool_kv_heads``: the GQA paper's conversion the other way (arXiv 2305.13245, §2.1): an MHA
  checkpoint becomes a K-head one by mean-pooling the K/V projections of each group. Without the
  paper's short "uptraining" the pooled model is worse; it is a starting point, not a free lunch.
- ``decode_sweep``: time one cached decode step at a long context for several K, with the KV
  cache's bytes and (on CUDA) the peak memory, catching out-of-memory per point.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import analysis
from .config import ModelConfig
from .model import Transformer
from .timing import Timing, peak_memory, time_fn


# ---------------------------------------------------------------------------------------------
# Changing the number of KV heads of a model's weights


def _kv_projections(model: Transformer):
    for block in model.layers:
        attn = block.attn
        if attn.wqkv is not None:
            raise ValueError("The model's Q/K/V projections are fused (fuse_qkv): convert before fusing.")
        yield attn


@torch.no_grad()
def expand_kv_heads(model: Transformer) -> Transformer:
    """The MHA model (K = N) that computes exactly what ``model`` (K KV heads) computes.

    Query head n reads KV head n // G, so repeating each KV head's rows of wk and wv G times
    (``repeat_interleave`` on the head axis) gives N KV heads with the same keys and values.
    The KV cache of the result is G times larger: same function, G times the memory.
    """
    cfg = model.cfg
    mha = Transformer(cfg.replace(K=cfg.N)).to(next(model.parameters()).device, next(model.parameters()).dtype)
    state = {}
    for name, w in model.state_dict().items():
        if name.endswith(("attn.wk.weight", "attn.wv.weight")):
            w = w.view(cfg.K, cfg.H, cfg.D).repeat_interleave(cfg.G, dim=0).reshape(cfg.N * cfg.H, cfg.D)
        state[name] = w
    mha.load_state_dict(state)
    return mha.eval()


@torch.no_grad()
def pool_kv_heads(model: Transformer, K: int) -> Transformer:
    """A K-KV-head model from an MHA (or finer GQA) ``model`` by mean-pooling each group's K/V
    projections: the GQA paper's checkpoint conversion (before uptraining).

    ``model.cfg.K`` must be a multiple of ``K``. Query, output and MLP weights are copied as is.
    """
    cfg = model.cfg
    if K < 1 or cfg.K % K != 0:
        raise ValueError(f"Can pool {cfg.K} KV heads into K groups only if K divides {cfg.K}, got K={K}.")
    per_group = cfg.K // K
    param = next(model.parameters())
    pooled = Transformer(cfg.replace(K=K)).to(param.device, param.dtype)
    state = {}
    for name, w in model.state_dict().items():
        if name.endswith(("attn.wk.weight", "attn.wv.weight")):
            w = w.view(K, per_group, cfg.H, cfg.D).mean(dim=1).reshape(K * cfg.H, cfg.D)
        state[name] = w
    pooled.load_state_dict(state)
    return pooled.eval()


# ---------------------------------------------------------------------------------------------
# Measured decode step vs K


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


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


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
                cache = model.new_cache(B, S)
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
            if not _is_oom(err):
                raise
            point.oom, point.error = True, str(err).splitlines()[0]
            del model, cache
            _free(device)

    def step(model, cache, token):
        with torch.inference_mode():
            model(token, cache, S - 1)

    times = {id(p): [] for p, *_ in live}
    for p, model, cache, token in live:
        try:
            time_fn(step, model, cache, token, warmup=warmup, repeats=1, device=device)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as err:  # activations on top of the cache
            if not _is_oom(err):
                raise
            p.oom, p.error = True, str(err).splitlines()[0]
    live = [x for x in live if not x[0].oom]
    _free(device)
    for _ in wrap(range(rounds), desc="decode steps vs K"):
        for p, model, cache, token in live:
            t = time_fn(step, model, cache, token, warmup=0, repeats=repeats, device=device)
            times[id(p)] += t.times
    for p, *_ in live:
        p.timing = Timing(times[id(p)], method="cuda events" if device.type == "cuda" else "perf_counter")
    del live
    _free(device)
    return points

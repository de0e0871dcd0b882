"""The measured roofline: achieved FLOP/s of real kernels against their arithmetic intensity.

``analysis`` says what the lecture's formulas predict; this module measures what a device does:

- ``matmul_sweep``: X[B×D] @ W[D×F] for a range of B. Intensity ≈ B (bf16), so small B is
  memory-bound (time flat, FLOP/s ∝ B) and large B compute-bound (FLOP/s flat).
- ``ridge_from_sweep``: where the two regimes meet, read from the data (a fitted roofline).
- ``mlp_attention_measurements``: a SwiGLU MLP (``lecture_lib.model.SwiGLU``) and attention
  (``F.scaled_dot_product_attention``) in prefill (many tokens at once) and decode (one token a
  sequence), each with its FLOPs, bytes and intensity from ``analysis``.
- ``python -m lecture_lib.measure.roofline --out data/reference/matmul_<device>.json`` measures the
  device's ceilings, the sweep and the MLP/attention points and writes them as JSON: the
  reference measurements that notebook 03 overlays on a student's own plot.

Every record is a plain dict (JSON-ready) with ``status`` "ok" or "oom"; an out-of-memory
point is recorded, not raised, so that a sweep goes on.

Caches: a weight matrix that fits in the last-level cache (50 MB of L2 on an H100, tens of MB
of L3 on a CPU) is read from the cache, not from memory, after the first call, which would
flatter the bandwidth. Each timed call therefore cycles through enough copies of the weights
to exceed the cache ``cache_factor`` times over (and, on a GPU, through at least a few calls,
so that the launch cost of one kernel is not what we time).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F_

from .. import analysis, devices, hardware
from ..config import ModelConfig
from ..model import SwiGLU
from .ceilings import measure_ceilings
from .oom import free_memory, is_oom
from .references import device_slug, reference_dir
from .timing import time_fn

MiB = 1024**2


def batch_ladder(lo: int, hi: int) -> list[int]:
    """Powers of two and 1.5 times powers of two from ``lo`` to ``hi`` (both included):
    1, 2, 3, 4, 6, 8, 12, ..., dense enough on log axes to see the roofline's corner."""
    out, p = set(), 1
    while p <= hi:
        out.update(b for b in (p, 3 * p // 2) if lo <= b <= hi and b >= 1)
        p *= 2
    return sorted(out | {lo, hi})


# --------------------------------------------------------------------------------------------
# Device facts the sweep needs
# --------------------------------------------------------------------------------------------


def cache_bytes(device) -> int:
    """The last-level cache a kernel's inputs could hide in: the GPU's L2 (50 MB on an H100), the
    CPU's largest cache level from ``/sys`` (Linux), else 32 MiB (CPU) or 64 MiB (Apple)."""
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return int(getattr(props, "L2_cache_size", 0) or 50e6)
    if device.type == "mps":
        return 64 * MiB
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip().upper()
        scale = {"K": 1024, "M": MiB, "G": 1024 * MiB}.get(text[-1:], 1)
        try:
            sizes.append(int(text.rstrip("KMG")) * scale)
        except ValueError:
            pass
    return max(sizes) if sizes else 32 * MiB


def default_matmul_sizes(device, dtype) -> dict:
    """D, F and the batch sizes for ``matmul_sweep`` on this device (a few seconds in all).

    - CUDA: D = F = 8192 (a 128 MiB bf16 weight, bigger than any L2), B from 1 to 16384, far
      beyond an H100's ridge (about 300) so that the compute plateau is well measured.
    - MPS: D = F = 4096, B up to 4096.
    - CPU: D = F = 2048 (16 MiB in fp32), B up to 256: a CPU's ridge is a few FLOP/byte, so the
      plateau starts at B of a few tens. In 16-bit a CPU computes slowly: D = F = 512.
    """
    device, dtype = torch.device(device), devices.as_torch_dtype(dtype)
    if device.type == "cuda":
        return {"D": 8192, "F": 8192, "Bs": batch_ladder(1, 16384)}
    if device.type == "mps":
        return {"D": 4096, "F": 4096, "Bs": batch_ladder(1, 4096)}
    if dtype in (torch.float16, torch.bfloat16):
        return {"D": 512, "F": 512, "Bs": batch_ladder(1, 128)}
    return {"D": 2048, "F": 2048, "Bs": batch_ladder(1, 256)}


def default_mlp_attention_sizes(device, dtype) -> dict:
    """Shapes for ``mlp_attention_measurements``.

    - CUDA: Llama-3-8B-like widths (D = 4096 = 32 heads × 128, F = 14336), prefill of 4096
      tokens, decode with S = 4096 keys at B = 1, 8 and 64.
    - CPU: D = 1024 (16 heads × 64), F = 2816, prefill of 256 tokens, decode with S = 1024 keys
      at B = 1, 8 and 32.
    """
    device, dtype = torch.device(device), devices.as_torch_dtype(dtype)
    if device.type == "cuda":
        return {"D": 4096, "F": 14336, "H": 128, "prefill_tokens": 4096, "S": 4096, "decode_Bs": [1, 8, 64]}
    if device.type == "mps":
        return {"D": 2048, "F": 5632, "H": 128, "prefill_tokens": 2048, "S": 2048, "decode_Bs": [1, 8, 32]}
    if dtype in (torch.float16, torch.bfloat16):
        return {"D": 256, "F": 704, "H": 64, "prefill_tokens": 128, "S": 128, "decode_Bs": [1, 8]}
    return {"D": 1024, "F": 2816, "H": 64, "prefill_tokens": 256, "S": 1024, "decode_Bs": [1, 8, 32]}


# --------------------------------------------------------------------------------------------
# Timing with rotating inputs
# --------------------------------------------------------------------------------------------


def copies_needed(bytes_per_copy: float, device, cache_factor: float = 2.0, max_copies: int = 64) -> int:
    """How many copies of an operand to cycle through so that together they exceed the cache
    ``cache_factor`` times (at least 1, at most ``max_copies``)."""
    need = math.ceil(cache_factor * cache_bytes(device) / max(bytes_per_copy, 1))
    return max(1, min(max_copies, need))


def time_rotating(op, n_copies: int, device, *, min_calls: int = 1, seconds: float = 0.05,
                  warmup: int = 2, repeats: int = 5) -> float:
    """Seconds per call of ``op(i)``, i cycling over ``range(n_copies)``.

    One timed sample runs ``op`` ``max(n_copies, min_calls)`` times back to back (so the device's
    queue stays full and the cache holds none of the inputs), and the median sample is divided
    by that count. Samples are repeated until they add up to ``seconds`` (at least ``repeats``).
    """
    calls = max(n_copies, min_calls)

    def run():
        for i in range(calls):
            op(i % n_copies)

    t = time_fn(run, warmup=warmup, repeats=repeats, min_time=seconds, device=device)
    return t.median / calls


def _record(kind: str, seconds: float | None, flops: float, nbytes: float, intensity: float, **fields) -> dict:
    ok = seconds is not None
    return {"kind": kind, **fields, "status": "ok" if ok else "oom", "seconds": seconds,
            "flops": float(flops), "bytes": float(nbytes), "intensity": float(intensity),
            "flops_per_s": flops / seconds if ok else None, "bytes_per_s": nbytes / seconds if ok else None}


def _progress(items, progress: bool, desc: str):
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)


# --------------------------------------------------------------------------------------------
# The matmul sweep
# --------------------------------------------------------------------------------------------


def matmul_sweep(device=None, dtype=None, Bs=None, D: int | None = None, F: int | None = None, *,
                 seconds_per_point: float = 0.05, cache_factor: float = 2.0, progress: bool = False) -> list[dict]:
    """Achieved FLOP/s and bytes/s of ``X[B×D] @ W[D×F]`` for each B in ``Bs``.

    FLOPs = 2BDF and bytes = (BD + DF + BF)·element size (``analysis.matmul_flops/bytes``):
    read X, read W, write Y, each once. Defaults by device: ``default_matmul_sizes``.
    Weights are random normal, and enough copies of W are cycled through to defeat the cache
    (see ``copies_needed``). Returns one record (dict) per B, in order; a B that runs out of
    memory is recorded with ``status="oom"`` and the sweep goes on.
    """
    device, dtype = devices.resolve(device, dtype)
    sizes = default_matmul_sizes(device, dtype)
    D, F = D or sizes["D"], F or sizes["F"]
    Bs = list(Bs) if Bs is not None else sizes["Bs"]
    size = torch.tensor([], dtype=dtype).element_size()
    n_w = copies_needed(D * F * size, device, cache_factor)
    Ws = [torch.randn(D, F, device=device, dtype=dtype) for _ in range(n_w)]
    min_calls = 4 if device.type != "cpu" else 1  # GPU: several kernels per sample, launch cost hidden
    warmup = 2 if device.type != "cpu" else 1
    records = []
    for B in _progress(Bs, progress, f"matmul sweep D=F={D}"):
        X = Y = None
        seconds = None
        try:
            X = torch.randn(B, D, device=device, dtype=dtype)
            Y = torch.empty(B, F, device=device, dtype=dtype)
            with torch.inference_mode():
                seconds = time_rotating(lambda i: torch.matmul(X, Ws[i], out=Y), n_w, device,
                                        min_calls=min_calls, seconds=seconds_per_point, warmup=warmup)
        except (RuntimeError, MemoryError) as e:
            if not (isinstance(e, MemoryError) or is_oom(e)):
                raise
            free_memory(device)
        records.append(_record(
            "matmul", seconds, analysis.matmul_flops(B, D, F), analysis.matmul_bytes(B, D, F, size),
            analysis.matmul_intensity(B, D, F, size), B=int(B), D=D, F=F,
            dtype=devices.dtype_name(dtype), element_size=size, weight_copies=n_w))
        del X, Y
    del Ws
    return records


def ok_records(records, kind: str | None = None, phase: str | None = None) -> list[dict]:
    """The records that ran (status "ok"), optionally of one kind ("matmul", "mlp", "attention")
    and phase ("prefill", "decode")."""
    return [r for r in records if r.get("status") == "ok"
            and (kind is None or r.get("kind") == kind) and (phase is None or r.get("phase") == phase)]


# --------------------------------------------------------------------------------------------
# The ridge point, from data
# --------------------------------------------------------------------------------------------


@dataclass
class RidgeEstimate:
    """The roofline fitted to a sweep (see ``ridge_from_sweep``)."""

    intensity: float  # FLOP/byte where the fitted bandwidth line meets the fitted plateau
    B: float  # the batch size with that intensity (from the matmul's shape), inf if none
    plateau_flops: float  # fitted compute ceiling, FLOP/s
    bandwidth: float  # fitted effective bandwidth, bytes/s (FLOP/s = bandwidth × intensity)
    knee_B: float | None  # smallest measured B reaching ``fraction`` of the plateau
    fraction: float
    n_memory_bound: int  # points fitted to the bandwidth line (the rest: to the plateau)
    method: str = "hinge fit in log-log: slope 1 below the ridge, slope 0 above, least squares"

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        knee = f", {self.fraction:.0%} of the plateau from B = {self.knee_B:g}" if self.knee_B else ""
        return (f"ridge {self.intensity:,.1f} FLOP/byte (B ≈ {self.B:,.0f}): bandwidth line "
                f"{self.bandwidth / 1e9:,.0f} GB/s meets plateau {self.plateau_flops / 1e12:,.3g} TFLOP/s{knee}")


def _B_for_intensity(r: float, D: int, F: int, element_size: float) -> float:
    """Invert ``analysis.matmul_intensity``: (2/b)·BDF/(BD + BF + DF) = r, solved for B."""
    denominator = (2 / element_size) * D * F - r * (D + F)
    return r * D * F / denominator if denominator > 0 else math.inf


def ridge_from_sweep(records, fraction: float = 0.8) -> RidgeEstimate:
    """Estimate the ridge point from measured (intensity, FLOP/s) points.

    Method: fit the roofline itself. In log-log axes a roofline is two straight pieces: the
    bandwidth line log y = log x + log β (slope 1; β = effective bandwidth) and the plateau
    log y = log P (slope 0; P = compute ceiling). For every way of splitting the points sorted
    by intensity into "below" and "above" (at least one point each side), fit log β as the mean
    of log(y/x) below and log P as the mean of log y above; keep the split with the smallest
    squared error. The ridge is where the two fitted lines cross: intensity P/β. This uses every
    point, needs no threshold, and is exact on a perfect roofline.

    ``knee_B`` is a second, model-free reading: the smallest measured B whose FLOP/s reaches
    ``fraction`` of the fitted plateau (real curves are rounded near the corner, so it sits to
    the right of the intersection). ``B`` converts the ridge intensity to a batch size with the
    matmul's own D, F and element size (when the records carry them, as ``matmul_sweep``'s do).
    """
    pts = sorted((r for r in ok_records(records) if r["flops_per_s"] and r["intensity"] > 0),
                 key=lambda r: r["intensity"])
    if len(pts) < 2:
        raise ValueError(f"ridge_from_sweep needs at least 2 measured points, got {len(pts)} "
                         f"(records with status 'ok'). Run a sweep over more batch sizes.")
    x = np.log([r["intensity"] for r in pts])
    y = np.log([r["flops_per_s"] for r in pts])
    best = None
    for k in range(1, len(pts)):  # points [0, k) on the bandwidth line, [k, n) on the plateau
        log_beta = np.mean(y[:k] - x[:k])
        log_P = np.mean(y[k:])
        err = np.sum((y[:k] - x[:k] - log_beta) ** 2) + np.sum((y[k:] - log_P) ** 2)
        if best is None or err < best[0] - 1e-12:
            best = (err, k, log_beta, log_P)
    _, k, log_beta, log_P = best
    beta, P = math.exp(log_beta), math.exp(log_P)
    ridge = P / beta
    first = pts[0]
    if all(key in first for key in ("D", "F", "element_size")):
        B = _B_for_intensity(ridge, first["D"], first["F"], first["element_size"])
    else:
        B = math.nan
    knee = [r["B"] for r in pts if "B" in r and r["flops_per_s"] >= fraction * P]
    return RidgeEstimate(intensity=ridge, B=B, plateau_flops=P, bandwidth=beta,
                         knee_B=min(knee) if knee else None, fraction=fraction, n_memory_bound=k)


def best_flops(records, kind: str, phase: str, B: int | None = None) -> float:
    """The highest achieved FLOP/s among the ok records of ``kind`` and ``phase`` (and batch ``B``)."""
    rates = [r["flops_per_s"] for r in ok_records(records, kind, phase) if B is None or r["B"] == B]
    if not rates:
        raise ValueError(f"no measured {kind} {phase} record" + (f" at B = {B}" if B is not None else "") + ".")
    return max(rates)


def prefill_decode_ratio(records, flops: float, bandwidth: float, kind: str = "mlp") -> tuple[float, float]:
    """How many times faster (in FLOP/s) ``kind`` runs in prefill than in decode at B = 1:
    ``(measured, predicted)``. The prediction is the roofline with ceilings ``flops`` (FLOP/s) and
    ``bandwidth`` (bytes/s) at each record's intensity, ``min(P, β·I_prefill) / min(P, β·I_decode)``:
    about ridge / I_decode when prefill is compute-bound and decode memory-bound. Uses the fastest
    prefill record and the B = 1 decode record of ``records`` (``mlp_attention_measurements``)."""
    pre = max(ok_records(records, kind, "prefill"), key=lambda r: r["flops_per_s"], default=None)
    dec = [r for r in ok_records(records, kind, "decode") if r["B"] == 1]
    if pre is None or not dec:
        raise ValueError(f"need a measured {kind} prefill record and a {kind} decode record at B = 1.")
    predicted = analysis.roofline(pre["intensity"], flops, bandwidth) / analysis.roofline(dec[0]["intensity"], flops, bandwidth)
    return pre["flops_per_s"] / dec[0]["flops_per_s"], predicted


def memory_bound_slope(records, B_max: float, B_min: float = 1) -> float:
    """Log-log slope of achieved FLOP/s against B over ``B_min <= B <= B_max`` (ok records).
    About 1 where the matmul is memory-bound (time flat while the FLOPs grow with B)."""
    pts = [r for r in ok_records(records) if B_min <= r["B"] <= B_max]
    if len(pts) < 3:
        raise ValueError(f"need at least 3 measured points with {B_min} <= B <= {B_max}, got {len(pts)}.")
    slope, _ = np.polyfit(np.log([r["B"] for r in pts]), np.log([r["flops_per_s"] for r in pts]), 1)
    return float(slope)


# --------------------------------------------------------------------------------------------
# MLP and attention, prefill vs decode
# --------------------------------------------------------------------------------------------


def mlp_attention_measurements(device=None, dtype=None, *, D: int | None = None, F: int | None = None,
                               H: int | None = None, prefill_tokens: int | None = None, S: int | None = None,
                               decode_Bs=None, seconds_per_point: float = 0.05, cache_factor: float = 2.0,
                               progress: bool = False) -> list[dict]:
    """Achieved FLOP/s of a SwiGLU MLP and of attention, in prefill and in decode.

    - MLP (``lecture_lib.model.SwiGLU``, width D → F → D): prefill runs one sequence of
      ``prefill_tokens`` tokens (B = 1, T = prefill_tokens: intensity ≈ B·T); decode runs B
      sequences of one token each (T = 1: intensity ≈ B). FLOPs 6BTDF and bytes 4BTD + 4BTF + 6DF
      at bf16 (``analysis.mlp_*``; the formula counts the matmuls, not SiLU and the product).
    - Attention (``F.scaled_dot_product_attention``, N = D/H heads, K = N): prefill has T = S
      queries against S keys (intensity S/2 at bf16); decode has one query per sequence against
      S cached keys (intensity S/(S+1) < 1, whatever B). FLOPs 4BSTD, bytes 4BSD + 4BTD
      (``analysis.attention_*``). Prefill is run without a causal mask, so that the kernel does
      the lecture's count of work (a causal kernel skips about half of it).

    Sizes default by device (``default_mlp_attention_sizes``). Returns records with ``kind``
    ("mlp"/"attention"), ``phase`` ("prefill"/"decode"), B, T, S, and the measurements.
    """
    device, dtype = devices.resolve(device, dtype)
    sizes = default_mlp_attention_sizes(device, dtype)
    D, F, H = D or sizes["D"], F or sizes["F"], H or sizes["H"]
    P, S = prefill_tokens or sizes["prefill_tokens"], S or sizes["S"]
    decode_Bs = list(decode_Bs) if decode_Bs is not None else sizes["decode_Bs"]
    if D % H:
        raise ValueError(f"D = {D} must be a multiple of the head dim H = {H} (D = N·H).")
    N = D // H
    size = torch.tensor([], dtype=dtype).element_size()
    name = devices.dtype_name(dtype)
    min_calls = 4 if device.type != "cpu" else 1
    cases = [("mlp", "prefill", 1, P, P)] + [("mlp", "decode", B, 1, S) for B in decode_Bs] \
        + [("attention", "prefill", 1, P, P)] + [("attention", "decode", B, 1, S) for B in decode_Bs]
    records = []
    for kind, phase, B, T, S_ in _progress(cases, progress, "MLP and attention"):
        seconds = None
        try:
            with torch.inference_mode():
                if kind == "mlp":
                    seconds = _time_mlp(device, dtype, D, F, B, T, cache_factor, min_calls, seconds_per_point)
                else:
                    seconds = _time_attention(device, dtype, N, H, B, T, S_, cache_factor, min_calls,
                                              seconds_per_point)
        except (RuntimeError, MemoryError) as e:
            if not (isinstance(e, MemoryError) or is_oom(e)):
                raise
            free_memory(device)
        if kind == "mlp":
            flops, nbytes = analysis.mlp_flops(B, T, D, F), analysis.mlp_bytes(B, T, D, F, size)
            intensity = analysis.mlp_intensity(B, T, D, F, size)
            extra = {"F": F}
        else:
            flops, nbytes = analysis.attention_flops(B, S_, T, D), analysis.attention_bytes(B, S_, T, D, size)
            intensity = analysis.attention_intensity(S_, T, size)
            extra = {"N": N, "H": H}
        records.append(_record(kind, seconds, flops, nbytes, intensity, phase=phase, B=B, T=T,
                               S=S_ if kind == "attention" else None,
                               D=D, **extra, dtype=name, element_size=size))
    return records


def _time_mlp(device, dtype, D, F, B, T, cache_factor, min_calls, seconds) -> float:
    cfg = ModelConfig(D=D, F=F, name="roofline-mlp")
    weight_bytes = 3 * D * F * torch.tensor([], dtype=dtype).element_size()
    with torch.device(device):
        mlps = [SwiGLU(cfg).to(dtype).eval() for _ in range(copies_needed(weight_bytes, device, cache_factor))]
        x = torch.randn(B, T, D, dtype=dtype)
    try:
        return time_rotating(lambda i: mlps[i](x), len(mlps), device, min_calls=min_calls, seconds=seconds)
    finally:
        del mlps, x


def _time_attention(device, dtype, N, H, B, T, S, cache_factor, min_calls, seconds) -> float:
    kv_bytes = 2 * B * N * S * H * torch.tensor([], dtype=dtype).element_size()
    copies = copies_needed(kv_bytes, device, cache_factor)
    with torch.device(device):
        q = torch.randn(B, N, T, H, dtype=dtype)
        kvs = [(torch.randn(B, N, S, H, dtype=dtype), torch.randn(B, N, S, H, dtype=dtype))
               for _ in range(copies)]
    try:
        return time_rotating(lambda i: F_.scaled_dot_product_attention(q, *kvs[i]), copies, device,
                             min_calls=min_calls, seconds=seconds)
    finally:
        del q, kvs


# --------------------------------------------------------------------------------------------
# Plotting
# --------------------------------------------------------------------------------------------


def plot_roofline(ax, flops: float, bandwidth: float, label: str, color=None, ls: str = "-",
                  intensities=(0.1, 1e4), mark_ridge: bool = True, **kwargs):
    """Draw ``min(flops, intensity × bandwidth)`` on log-log axes, with a dot at the ridge."""
    x = np.geomspace(*intensities, 300)
    (line,) = ax.loglog(x, np.minimum(flops, x * bandwidth), ls, color=color, label=label, **kwargs)
    if mark_ridge:
        ax.plot([flops / bandwidth], [flops], "o", color=line.get_color(), ms=5, mfc="white")
    return line


def plot_records(ax, records, label: str, color=None, marker: str = "o", annotate=(), **kwargs):
    """Measured (intensity, FLOP/s) points of ``records`` (ok ones); ``annotate``: B values to label."""
    pts = ok_records(records)
    if not pts:
        return None
    xs = [r["intensity"] for r in pts]
    ys = [r["flops_per_s"] for r in pts]
    (line,) = ax.loglog(xs, ys, marker, color=color, label=label, **kwargs)
    for r in pts:
        if r.get("B") in annotate:
            ax.annotate(f"B={r['B']}", (r["intensity"], r["flops_per_s"]), textcoords="offset points",
                        xytext=(4, -10), fontsize="small", color=line.get_color())
    return line


# --------------------------------------------------------------------------------------------
# The CLI: measure everything and write a reference file
# --------------------------------------------------------------------------------------------


def measure_reference(device=None, dtype=None, tiny: bool = False, progress: bool = False) -> dict:
    """Ceilings, matmul sweep, ridge and MLP/attention points of one device, as a JSON-ready dict.

    ``tiny=True`` uses toy sizes (seconds on a CPU): for tests of the file format only.
    """
    t0 = time.perf_counter()
    device, dtype = devices.resolve(device, dtype)
    info = hardware.detect(device)
    info.dtype = dtype
    if tiny:
        ceilings = measure_ceilings(device, dtype, seconds=0.1, nbytes=4 * MiB, n=128)
        # toy sizes fit in any cache: one copy of each operand (cache_factor=0) keeps this fast
        sweep = matmul_sweep(device, dtype, Bs=[1, 2, 4, 8, 16, 32, 64], D=64, F=64, seconds_per_point=0.005,
                             cache_factor=0)
        mlp_att = mlp_attention_measurements(device, dtype, D=64, F=128, H=16, prefill_tokens=32, S=32,
                                             decode_Bs=[1, 4], seconds_per_point=0.005, cache_factor=0)
    else:
        ceilings = measure_ceilings(device, dtype, seconds=2.0)
        sweep = matmul_sweep(device, dtype, progress=progress)
        mlp_att = mlp_attention_measurements(device, dtype, progress=progress)
    try:
        ridge = ridge_from_sweep(sweep).as_dict()
    except ValueError as e:
        ridge = {"error": str(e)}
    first = sweep[0]
    spec = info.spec
    return {
        "about": ("Measured by `python -m lecture_lib.measure.roofline` (lecture_lib/measure/roofline.py): the device's "
                  "ceilings (ceilings.measure_ceilings: a large copy for bandwidth, counted read + write; "
                  "a large square matmul for FLOP/s), a matmul sweep X[B x D] @ W[D x F] over B, the ridge "
                  "fitted to that sweep (ridge_from_sweep), and SwiGLU MLP / attention in prefill and "
                  "decode. FLOPs and bytes come from lecture_lib.analysis; seconds are medians."),
        "device": info.describe(),
        "device_type": device.type,
        "spec": spec.key if spec else None,
        "spec_figures": ({"flops": spec.flops_for(dtype), "memory_bandwidth": spec.memory_bandwidth}
                         if spec and spec.flops.get(devices.dtype_name(dtype)) else None),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dtype": devices.dtype_name(dtype),
        "tiny": tiny,
        "ceilings": {"bandwidth": ceilings.bandwidth, "flops": ceilings.flops, "ridge": ceilings.ridge},
        "matmul": {"D": first["D"], "F": first["F"], "records": sweep},
        "ridge": ridge,
        "mlp_attention": {"records": mlp_att},
        "runtime_s": round(time.perf_counter() - t0, 2),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lecture_lib.measure.roofline",
        description="Measure this device's roofline (ceilings, matmul sweep over B, MLP and attention "
                    "in prefill/decode) and write it as JSON, e.g. the reference file notebook 03 overlays.")
    p.add_argument("--out", type=Path, default=None,
                   help="output file (default: data/reference/matmul_<device>.json)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--dtype", default=None, help="bf16, fp16 or fp32 (default: the device's, bf16 on an H100)")
    p.add_argument("--tiny", action="store_true", help="toy sizes, for testing the file format")
    args = p.parse_args(argv)
    device = torch.device(args.device) if args.device else devices.pick_device()
    ref = measure_reference(device, args.dtype, tiny=args.tiny, progress=sys.stderr.isatty())
    out = args.out or reference_dir() / f"matmul_{device_slug(hardware.detect(device))}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(ref, indent=1) + "\n")
    c = ref["ceilings"]
    print(f"{ref['device']}")
    print(f"ceilings: copy {c['bandwidth'] / 1e9:,.0f} GB/s, {ref['dtype']} matmul "
          f"{c['flops'] / 1e12:,.3g} TFLOP/s, ridge {c['ridge']:,.1f} FLOP/byte")
    if "intensity" in ref["ridge"]:
        print(f"sweep:    {RidgeEstimate(**ref['ridge'])}")
    for r in ref["mlp_attention"]["records"]:
        rate = f"{r['flops_per_s'] / 1e12:8.3f} TFLOP/s" if r["status"] == "ok" else "     OOM"
        print(f"{r['kind']:>9} {r['phase']:>7} B={r['B']:<3} T={r['T']:<5}: intensity {r['intensity']:8.2f}, {rate}")
    print(f"wrote {out} in {ref['runtime_s']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

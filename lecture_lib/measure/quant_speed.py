"""Speed of weight-only quantized models (notebook 06): a decode step per variant, at batch 1 and
at sizes where weight-only quantization stops helping (a large batch, a prefill), and the linear
layers alone. On a CUDA GPU every time is a CUDA-graph replay (``timing.decode_step_seconds``,
``timing.graph_seconds``), so kernel-launch overhead does not hide the memory traffic.

- ``speed_shape``: the largest real model shape whose random weights fit the device (a 135M model
  is too small to show the weight read on a GPU: its step is ~1,000 small kernels).
- ``linear_seconds``: every linear layer applied once to B rows: the weight read of a step alone.
- ``measure_variants``: build, quantize (``quant.quantize_variant_``) and time each variant.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from .. import analysis
from ..config import get_config
from ..quant import Int4Linear, Int8Linear, layer_kinds, quantize_variant_, use_cpu_kernels_, weight_bytes
from .oom import free_memory
from .timing import decode_step_seconds, graph_seconds, time_fn

SPEED_SHAPES = ("llama3-8b", "llama3.2-1b-like")


def speed_shape(device, dtype=torch.bfloat16, shapes: Iterable[str] = SPEED_SHAPES,
                headroom: float = 3.5) -> tuple[str | None, str]:
    """(preset, why): on CUDA the first of ``shapes`` whose weights in ``dtype``, times ``headroom``,
    fit in the free memory (random weights are drawn in fp32 and cast: 4 + 2 bytes a parameter at
    the peak, plus the quantized copy's codes); None elsewhere or when none fits."""
    device = torch.device(device)
    if device.type != "cuda":
        return None, f"{device.type}: no random-weight shape (too slow here)"
    free = torch.cuda.mem_get_info(device)[0]
    nbytes = torch.finfo(dtype).bits // 8
    for name in shapes:
        need = headroom * analysis.num_params(get_config(name)) * nbytes
        if need <= free:
            return name, f"{free / 1e9:.0f} GB free: {name} ({need / 1e9:.0f} GB with headroom) fits"
    return None, f"{free / 1e9:.0f} GB free: none of {list(shapes)} fits"


def _linears(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, Int8Linear, Int4Linear))]


def linear_seconds(model: nn.Module, B: int = 1, repeats: int = 20) -> float:
    """Seconds for every linear layer of ``model`` (the LM head included) applied once to B rows of
    zeros: the weight-read part of a decode step without attention, norms, RoPE and the other small
    kernels. On CUDA all the layers in one CUDA graph; elsewhere eager, the median of ``repeats``."""
    layers = _linears(model)
    w = model.norm.weight
    inputs = {f: torch.zeros(B, f, device=w.device, dtype=w.dtype) for f in {m.in_features for m in layers}}
    with torch.inference_mode():
        fn = lambda: [m(inputs[m.in_features]) for m in layers][-1]  # noqa: E731
        if w.device.type == "cuda":
            return graph_seconds(fn, calls=1, repeats=repeats)
        return time_fn(fn, warmup=2, repeats=repeats, device=w.device).median


def measure_variants(make_model: Callable[[], nn.Module], variants: Iterable[str],
                     cases: Iterable[tuple[int, int]] = ((1, 1),), S: int = 64, repeats: int = 20,
                     runs: int = 1, linear: bool = True, cpu_kernels: bool = True,
                     progress=None) -> list[dict]:
    """For each variant: ``make_model()`` (a fresh model), quantized in place as the variant says,
    on a CPU switched to PyTorch's packed CPU kernels (``cpu_kernels``), then timed.

    ``cases``: (B, T) pairs: T = 1 is a decode step of B sequences with S tokens cached; T > 1 a
    forward of T new tokens (a prefill chunk). Each is ``decode_step_seconds``, the least of ``runs``
    runs (the least disturbed one on a shared machine). Returns one dict per variant: ``variant``,
    ``layers`` (kinds that ran), ``bytes`` (all weights as stored), ``linear_bytes`` and
    ``bits_per_weight`` (the linear layers but the LM head), ``step`` {(B, T): seconds} and, with
    ``linear``, ``linear`` (``linear_seconds`` at B = 1). Each model is freed before the next."""
    wrap = progress or (lambda it, **kw: it)
    rows = []
    for v in wrap(list(variants), desc="timing variants"):
        m = quantize_variant_(make_model(), v)
        device = m.norm.weight.device
        if device.type == "cpu" and cpu_kernels:
            use_cpu_kernels_(m)
        lin = [mod for name, mod in m.named_modules()
               if isinstance(mod, (nn.Linear, Int8Linear, Int4Linear)) and name != "lm_head"]
        lin_bytes = sum(weight_bytes(mod) for mod in lin)
        row = dict(variant=v, layers=layer_kinds(m), bytes=weight_bytes(m), linear_bytes=lin_bytes,
                   bits_per_weight=8 * lin_bytes / sum(mod.in_features * mod.out_features for mod in lin),
                   step={})
        for B, T in cases:
            row["step"][B, T] = min(decode_step_seconds(m, B=B, S=S, repeats=repeats, T=T) for _ in range(runs))
        if linear:
            row["linear"] = min(linear_seconds(m, 1, repeats) for _ in range(runs))
        rows.append(row)
        del m, lin
        free_memory(device)
    return rows

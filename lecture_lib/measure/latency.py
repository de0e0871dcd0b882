"""Decode latency against the batch size, and total generation time from a few measured steps
(notebooks 02 and 04).

- ``decode_batch_sweep``: one decode step at each batch size B (``timing.decode_step_seconds``:
  a CUDA-graph replay on a GPU, so the kernel-launch floor does not hide the memory wall; eager
  elsewhere), skipping the batch sizes whose KV cache would not fit in a share of the device's
  free memory, and recording an out-of-memory point instead of raising it.
- ``summed_steps``: the time to generate T tokens, as the sum of the step times at positions
  first ... first + T - 1, interpolated (log-log) from steps measured at a few positions. Naive
  decoding's steps at long prefixes cost seconds each: measuring a few and summing shows the
  total's growth at lengths that a full run could not reach in a notebook.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .. import analysis
from .oom import free_memory, is_oom, oom_note
from .timing import decode_step_seconds


@dataclass
class BatchSweep:
    """``decode_batch_sweep``'s result. ``seconds[B]`` is nan where B was skipped (``skipped[B]``
    says why: it would not fit, or it ran out of memory)."""

    S: int  # tokens already in each sequence's cache: the step attends to S + 1 keys
    seconds: dict[int, float] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)
    how: str = ""  # "CUDA graph" or "eager"

    @property
    def batch_sizes(self) -> list[int]:
        return list(self.seconds)

    def array(self) -> np.ndarray:
        return np.array([self.seconds[B] for B in self.seconds], float)


def step_memory_bytes(model, B: int, S: int, calls: int = 10) -> float:
    """A generous estimate of the memory one timed decode step at batch B needs on top of the
    weights: its static KV cache (B sequences of S + 1 positions), and ``calls`` steps' logits
    and activations (a CUDA graph of ``calls`` steps keeps each one's output alive)."""
    cfg = model.cfg
    elt = model.norm.weight.element_size()
    cache = analysis.kv_cache_bytes(cfg, B, S + 1, bytes_per_value=elt)
    activations = calls * B * (cfg.V + 4 * cfg.D + 3 * cfg.F) * elt
    return cache + activations


def decode_batch_sweep(model, batch_sizes, S: int, repeats: int = 20, calls: int = 10,
                       memory_fraction: float = 0.6, progress=None) -> BatchSweep:
    """Seconds of one decode step of ``model`` at each B in ``batch_sizes``, S tokens cached per
    sequence (``timing.decode_step_seconds``). On a CUDA GPU a B whose ``step_memory_bytes``
    exceed ``memory_fraction`` of the free memory is skipped (so the sweep fits a 16 GB T4 as well
    as an H200), and one that still runs out of memory is recorded and freed. ``progress``: an
    optional wrapper of the iterable, e.g. ``tqdm``."""
    device = model.norm.weight.device
    on_cuda = device.type == "cuda"
    sweep = BatchSweep(S=S, how="CUDA graph" if on_cuda else "eager")
    wrap = progress or (lambda it, **kw: it)
    for B in wrap(list(batch_sizes), desc="decode step vs batch"):
        sweep.seconds[B] = float("nan")
        if on_cuda:
            free = torch.cuda.mem_get_info(device)[0]
            need = step_memory_bytes(model, B, S, calls)
            if need > memory_fraction * free:
                sweep.skipped[B] = (f"needs about {need / 1e9:.1f} GB, more than {memory_fraction:.0%} "
                                    f"of the {free / 1e9:.1f} GB free")
                continue
        try:
            sweep.seconds[B] = decode_step_seconds(model, B=B, S=S, repeats=repeats, calls=calls)
        except Exception as error:  # noqa: BLE001 - only out-of-memory is recorded; the rest raises
            if not is_oom(error):
                raise
            sweep.skipped[B] = oom_note(error)
        finally:
            free_memory(device)
    return sweep


def summed_steps(positions, step_seconds, first: int, T_values) -> np.ndarray:
    """Seconds to run the steps at positions ``first``, ``first + 1``, ..., ``first + T - 1``, for
    each T in ``T_values``: each step's time interpolated linearly in log-log between the
    ``step_seconds`` measured at ``positions`` (increasing). Every position summed must lie within
    the measured range: no extrapolation."""
    positions = np.asarray(positions, float)
    step_seconds = np.asarray(step_seconds, float)
    T_values = np.asarray(T_values, int)
    if positions.ndim != 1 or positions.shape != step_seconds.shape or len(positions) < 2:
        raise ValueError("positions and step_seconds must be 1-D arrays of the same length (at least 2).")
    if np.any(np.diff(positions) <= 0) or np.any(step_seconds <= 0) or np.any(~np.isfinite(step_seconds)):
        raise ValueError("positions must increase and every step time must be positive and finite.")
    last = first + int(T_values.max()) - 1
    if first < positions[0] or last > positions[-1] or T_values.min() < 1:
        raise ValueError(f"steps {first}..{last} reach outside the measured positions "
                         f"{positions[0]:g}..{positions[-1]:g}: measure further instead of extrapolating.")
    every = np.arange(first, last + 1, dtype=float)
    per_step = np.exp(np.interp(np.log(every), np.log(positions), np.log(step_seconds)))
    cumulative = np.cumsum(per_step)
    return cumulative[T_values - 1]

"""The device's measured ceilings: memory bandwidth from a large copy, FLOP/s from a large matmul.

Datasheet peaks are never reached; ``measure_ceilings`` finds what *this* device actually does
in a few seconds. Their ratio is the measured ridge point of the roofline.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..devices import _FP8, dtype_name, pick_device, resolve
from ..hardware import GiB, MiB, _ram_bytes
from .timing import time_fn


def _free_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "mps" and hasattr(torch.mps, "recommended_max_memory"):
        return torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
    return _ram_bytes(available=True)


def measure_copy_bandwidth(device=None, nbytes: int | None = None, seconds: float = 1.0) -> float:
    """Memory bandwidth in bytes/s from a large device-to-device copy, counting read + write.

    ``dst.copy_(src)`` reads ``nbytes`` and writes ``nbytes``, so bandwidth = 2·nbytes / time
    (the FAST_DECODE H100 figure, 2,969 GB/s, is counted the same way). The copy must be much
    larger than the caches (50 MB L2 on H100; tens of MB of L3 on a CPU) or we would measure the
    cache: default 2 GiB on CUDA, 512 MiB on MPS, 256 MiB on a CPU, and at most a quarter of the
    free memory. Median over repeats totalling about ``seconds``.
    """
    device = torch.device(device) if device is not None else pick_device()
    if nbytes is None:
        nbytes = {"cuda": 2 * GiB, "mps": 512 * MiB}.get(device.type, 256 * MiB)
        free = _free_bytes(device)
        if free:
            nbytes = max(MiB, min(nbytes, free // 4))
    src = torch.empty(int(nbytes), dtype=torch.uint8, device=device).fill_(1)  # touched: real pages
    dst = torch.empty_like(src)
    t = time_fn(dst.copy_, src, warmup=2, repeats=5, min_time=seconds, device=device)
    del src, dst
    return 2 * nbytes / t.median


def _default_matmul_n(device: torch.device, dtype: torch.dtype) -> int:
    if device.type == "cuda":
        return 8192  # 1.1 TFLOP a call: long enough to hide launch cost even on an H100
    if device.type == "mps":
        return 4096
    if dtype in (torch.float16, torch.bfloat16):
        # Many CPUs have no fast 16-bit matmul (about 1 GFLOP/s on a 2-core EPYC, vs 50 in fp32):
        # keep one call well under a second.
        return 512
    return 2048 if torch.get_num_threads() > 4 else 1024  # 2-17 GFLOP: tens of ms on a laptop


def measure_matmul_flops(device=None, dtype=None, n: int | None = None, seconds: float = 1.0) -> float:
    """Matmul throughput in FLOP/s: an n×n @ n×n matmul does 2·n³ FLOPs (a multiply and an add
    per term). Inputs are random normal, not zeros: GPUs draw less power on zeros and clock
    higher, which would flatter the number. ``n`` defaults by device: 8192 on CUDA, 4096 on MPS,
    1024-2048 on a CPU in fp32, 512 in 16-bit on a CPU. Median over repeats totalling about
    ``seconds``.

    fp32 on CUDA runs at the plain fp32 rate unless TF32 is enabled
    (``torch.set_float32_matmul_precision("high")``): compare with the spec's "fp32" or "tf32".
    """
    device, dtype = resolve(device, dtype)
    if dtype in _FP8:
        raise ValueError("fp8 matmuls need torch._scaled_mm with scales; measure bf16/fp16/fp32 here.")
    n = n or _default_matmul_n(device, dtype)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)  # reused: time the matmul, not the allocator
    t = time_fn(lambda: torch.matmul(a, b, out=out), warmup=1, repeats=3, min_time=seconds, device=device)
    return 2 * n**3 / t.median


@dataclass
class Ceilings:
    """The two roofline ceilings measured on this device."""

    device: str
    dtype: str
    bandwidth: float  # bytes/s
    flops: float  # FLOP/s

    @property
    def ridge(self) -> float:
        """Measured accelerator intensity (FLOP/byte): kernels below it are memory-bound."""
        return self.flops / self.bandwidth

    def __str__(self) -> str:
        return (f"{self.device}: copy {self.bandwidth / 1e9:,.0f} GB/s, {self.dtype} matmul "
                f"{self.flops / 1e12:,.3g} TFLOP/s, ridge {self.ridge:,.0f} FLOP/byte")


def measure_ceilings(device=None, dtype=None, seconds: float = 2.0, nbytes: int | None = None,
                     n: int | None = None) -> Ceilings:
    """Measure bandwidth and matmul FLOP/s (about ``seconds`` in total, plus set-up).

    ``nbytes`` and ``n`` are passed to ``measure_copy_bandwidth`` and ``measure_matmul_flops``.
    """
    device, dtype = resolve(device, dtype)
    bw = measure_copy_bandwidth(device, nbytes=nbytes, seconds=seconds / 2)
    fl = measure_matmul_flops(device, dtype, n=n, seconds=seconds / 2)
    return Ceilings(device=str(device), dtype=dtype_name(dtype), bandwidth=bw, flops=fl)


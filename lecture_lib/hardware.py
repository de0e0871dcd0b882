"""The hardware: peak specs from ``data/hardware.json``, the current device, and its measured ceilings.

The lecture's roofline needs two numbers per accelerator: how fast it computes (FLOP/s) and how
fast it reads memory (bytes/s). Their ratio, the *accelerator intensity* or ridge point, is the
FLOP/byte a kernel must exceed to be compute-bound: 989e12 / 3.35e12 = 295 for the lecture's H100,
so a matmul X[B×D] @ W[D×F] with intensity ≈ B is memory-bound for B < 295.

Datasheet peaks are never reached; ``measure_ceilings`` finds what *this* device actually does
(a large copy for bandwidth, a large matmul for FLOP/s) in a few seconds.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from .paths import data_path
from .timing import time_fn

GiB = 1024**3
MiB = 1024**2

# --------------------------------------------------------------------------------------------
# dtypes by name
# --------------------------------------------------------------------------------------------

_ALIASES = {
    "fp32": "fp32", "float32": "fp32", "float": "fp32",
    "fp16": "fp16", "float16": "fp16", "half": "fp16",
    "bf16": "bf16", "bfloat16": "bf16",
    "fp8": "fp8", "float8": "fp8", "float8_e4m3fn": "fp8", "float8_e5m2": "fp8",
    "float8_e4m3fnuz": "fp8", "float8_e5m2fnuz": "fp8", "e4m3": "fp8", "e5m2": "fp8",
    "tf32": "tf32", "int8": "int8", "int4": "int4", "fp4": "fp4", "fp64": "fp64", "float64": "fp64",
}
_TORCH = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
          "fp8": torch.float8_e4m3fn, "int8": torch.int8, "fp64": torch.float64}


def dtype_name(dtype) -> str:
    """Short name used in ``hardware.json``: ``torch.bfloat16`` or "bfloat16" -> "bf16"."""
    key = str(dtype).removeprefix("torch.").lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown dtype {dtype!r}; known names: {sorted(set(_ALIASES.values()))}.")
    return _ALIASES[key]


def as_torch_dtype(dtype) -> torch.dtype:
    """``"bf16"`` -> ``torch.bfloat16``; a ``torch.dtype`` passes through."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = dtype_name(dtype)
    if name not in _TORCH:
        raise ValueError(f"{dtype!r} has no torch dtype to compute in (tf32 is a matmul mode of fp32).")
    return _TORCH[name]


# --------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GPUSpec:
    """Peak figures of one GPU model (dense tensor-core FLOP/s; see ``_about`` in the JSON)."""

    key: str  # "H100 SXM": the name used by get_spec
    name: str
    architecture: str
    compute_capability: tuple[int, int]
    memory_bytes: float
    memory_type: str
    memory_bandwidth: float  # bytes/s
    flops: dict  # dtype name -> FLOP/s (None: not supported)
    supports_bf16: bool
    supports_fp8: bool
    name_patterns: tuple[str, ...]
    source: str
    notes: str = ""

    def flops_for(self, dtype="bf16") -> float:
        name = dtype_name(dtype)
        value = self.flops.get(name)
        if value is None:
            have = [k for k, v in self.flops.items() if v is not None]
            raise ValueError(f"{self.key} has no {name} figure (no such tensor-core format, or "
                             f"none in the sources). Figures it has: {have}.")
        return value

    def ridge(self, dtype="bf16") -> float:
        """Accelerator intensity: peak FLOP/s over bytes/s (FLOP/byte). H100 SXM, bf16: 295."""
        return self.flops_for(dtype) / self.memory_bandwidth


@lru_cache(maxsize=None)
def _load() -> tuple[GPUSpec, ...]:
    raw = json.loads(data_path("hardware.json").read_text())
    specs = []
    for key, d in raw.items():
        if key.startswith("_"):
            continue
        d = dict(d, compute_capability=tuple(d["compute_capability"]),
                 name_patterns=tuple(d["name_patterns"]))
        specs.append(GPUSpec(key=key, **d))
    return tuple(specs)


def load_specs() -> dict[str, GPUSpec]:
    """All GPU specs from ``data/hardware.json``, by key ("H100 SXM", "T4", ...)."""
    return {s.key: s for s in _load()}


def get_spec(name: str) -> GPUSpec:
    """The spec called ``name`` (a key such as "H100 SXM"; case and spacing are forgiven)."""
    specs = load_specs()
    norm = {_words(k): s for k, s in specs.items()}
    if _words(name) in norm:
        return norm[_words(name)]
    raise KeyError(f"no GPU spec called {name!r}. Known: {list(specs)}. "
                   f"To match a torch device name such as 'NVIDIA H100 80GB HBM3', use match_spec.")


def _words(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[a-z0-9]+", text.lower()))


def match_spec(device_name: str) -> GPUSpec | None:
    """The spec whose ``name_patterns`` match a ``torch.cuda.get_device_name()`` string, else None.

    Patterns match whole words ("L4" matches "NVIDIA L4" but not "NVIDIA L40S"), and the longest
    matching pattern wins ("H100 NVL" before a bare "H100" pattern).
    """
    words = _words(device_name)
    best, best_len = None, 0
    for spec in _load():
        for pattern in spec.name_patterns:
            p = _words(pattern)
            found = any(words[i:i + len(p)] == p for i in range(len(words) - len(p) + 1))
            if found and len(p) > best_len:
                best, best_len = spec, len(p)
    return best


# --------------------------------------------------------------------------------------------
# Device and dtype choice
# --------------------------------------------------------------------------------------------


def pick_device() -> torch.device:
    """CUDA if there is a GPU, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _cuda_capability(device: torch.device) -> tuple[int, int]:
    if not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for, but torch.cuda.is_available() is False "
                         "(no NVIDIA GPU, or a CPU-only torch build). Use pick_device().")
    return tuple(torch.cuda.get_device_capability(device))


def pick_dtype(device=None) -> torch.dtype:
    """The dtype the notebooks compute in on ``device`` (default: ``pick_device()``).

    - CUDA with compute capability >= 8.0 (Ampere and newer): bf16, the lecture's 2-byte format.
    - CUDA below 8.0 (T4, V100): fp16. ``torch.cuda.is_bf16_supported()`` says True on a T4
      because bf16 is emulated, slowly, and compiling it fails; so the capability decides.
    - MPS: fp16. Native on every Apple GPU and 2 bytes like bf16, so the memory-bound effects
      look the same; bf16 on MPS needs macOS 14+ and is not native on older chips.
    - CPU: fp32. Most CPUs have no fast 16-bit matmul, and fp32 keeps the numbers exact enough
      for the asserts; the byte counts of the lecture (2 bytes a parameter) are computed, not run.
    """
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        return torch.bfloat16 if _cuda_capability(device) >= (8, 0) else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


_FP8 = {getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
        if hasattr(torch, n)}


def check_dtype(device, dtype) -> torch.dtype:
    """Raise a ``ValueError`` naming the problem and the fix if ``device`` cannot compute in ``dtype``.

    Checked: bf16 on CUDA below compute capability 8.0 (T4), fp8 compute without fp8 tensor cores
    (needs 8.9: L4/Ada, H100, newer; and even there matmuls go through ``torch._scaled_mm``, not
    ``@``), fp8 on CPU/MPS, bf16 on an MPS that lacks it, fp64 on MPS, non-float dtypes.
    Slow but working combinations (fp16 or bf16 matmul on a CPU) are allowed.
    Returns the ``torch.dtype``, so ``dtype = check_dtype(device, "bf16")`` works.
    """
    device, dtype = torch.device(device), as_torch_dtype(dtype)
    name = dtype_name(dtype)
    if not dtype.is_floating_point:
        raise ValueError(f"{dtype} is not a floating-point dtype: models compute in fp32/bf16/fp16. "
                         "For int8/int4 weights, store them quantized and dequantize (lecture_lib.quant).")
    if device.type == "cuda":
        cap = _cuda_capability(device)
        gpu = f"{torch.cuda.get_device_name(device)} (compute capability {cap[0]}.{cap[1]})"
        if dtype == torch.bfloat16 and cap < (8, 0):
            raise ValueError(f"bf16 needs compute capability >= 8.0 (Ampere or newer); {gpu} has no "
                             "bf16 tensor cores (torch emulates it slowly, and compiling it fails). "
                             "Use torch.float16 (pick_dtype(device) chooses it).")
        if dtype in _FP8 and cap < (8, 9):
            raise ValueError(f"fp8 compute needs compute capability >= 8.9 (Ada/L4, Hopper/H100 or "
                             f"newer); {gpu} has none. Store weights in fp8 if you like, but upcast to "
                             f"{dtype_name(pick_dtype(device))} to compute, or use int8 weight-only.")
    elif dtype in _FP8:
        raise ValueError(f"{name} compute is not supported on {device.type}: there are no fp8 "
                         "matmul kernels. Store in fp8 and upcast to fp32/fp16 to compute.")
    elif device.type == "mps":
        if dtype == torch.float64:
            raise ValueError("MPS has no float64. Use torch.float32.")
        if dtype == torch.bfloat16:
            try:
                x = torch.ones(2, 2, dtype=dtype, device=device)
                (x @ x).cpu()
            except (RuntimeError, TypeError) as e:
                raise ValueError(f"bf16 does not work on this MPS device ({e}); it needs macOS 14 "
                                 "or newer. Use torch.float16.") from None
    return dtype


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=2).stdout.strip() or platform.processor()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _ram_bytes(available: bool = False) -> int | None:
    """Total (or, on Linux, available) system memory in bytes; None where unknown."""
    if available:
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass
class DeviceInfo:
    """What we are running on: printed as the first output of every notebook."""

    type: str  # "cuda", "mps" or "cpu"
    name: str  # GPU name as torch reports it, or the CPU model
    total_memory: int | None  # bytes: GPU memory, or system RAM for CPU/MPS (unified memory)
    num_threads: int  # torch's CPU threads (what CPU matmuls use)
    compute_capability: tuple[int, int] | None
    spec: GPUSpec | None  # the matched datasheet entry, if any
    dtype: torch.dtype  # pick_dtype's choice
    torch_version: str = field(default_factory=lambda: torch.__version__)

    def describe(self) -> str:
        """E.g. "NVIDIA H100 80GB HBM3 (matched spec: H100 SXM), 79.1 GiB, torch 2.11.0, bf16"."""
        parts = [self.name]
        if self.type == "cuda":
            parts[0] += f" (matched spec: {self.spec.key})" if self.spec else " (no matching spec)"
        elif self.type == "mps":
            parts[0] = f"Apple MPS on {self.name}"
        else:
            parts[0] = f"CPU: {self.name} ({self.num_threads} torch threads)"
        if self.total_memory:
            parts.append(f"{self.total_memory / GiB:.1f} GiB" + ("" if self.type == "cuda" else " RAM"))
        parts += [f"torch {self.torch_version}", dtype_name(self.dtype)]
        return ", ".join(parts)

    def __str__(self) -> str:
        return self.describe()


def detect(device=None) -> DeviceInfo:
    """Describe ``device`` (default: ``pick_device()``) and match it to a datasheet spec."""
    device = torch.device(device) if device is not None else pick_device()
    cap = spec = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        name, total, cap = props.name, props.total_memory, (props.major, props.minor)
        spec = match_spec(name)
    else:
        name, total = _cpu_name(), _ram_bytes()
        if device.type == "mps" and hasattr(torch.mps, "recommended_max_memory"):
            total = torch.mps.recommended_max_memory()  # what Metal lets one process use
    return DeviceInfo(type=device.type, name=name, total_memory=total, num_threads=torch.get_num_threads(),
                      compute_capability=cap, spec=spec, dtype=pick_dtype(device))


# --------------------------------------------------------------------------------------------
# Measured ceilings
# --------------------------------------------------------------------------------------------


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
    device = torch.device(device) if device is not None else pick_device()
    dtype = check_dtype(device, dtype if dtype is not None else pick_dtype(device))
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
    device = torch.device(device) if device is not None else pick_device()
    dtype = check_dtype(device, dtype if dtype is not None else pick_dtype(device))
    bw = measure_copy_bandwidth(device, nbytes=nbytes, seconds=seconds / 2)
    fl = measure_matmul_flops(device, dtype, n=n, seconds=seconds / 2)
    return Ceilings(device=str(device), dtype=dtype_name(dtype), bandwidth=bw, flops=fl)

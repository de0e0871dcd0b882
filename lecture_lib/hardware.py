"""The hardware: peak specs from ``data/hardware.json``, and which device this is.

The lecture's roofline needs two numbers per accelerator: how fast it computes (FLOP/s) and how
fast it reads memory (bytes/s). Their ratio, the *accelerator intensity* or ridge point, is the
FLOP/byte a kernel must exceed to be compute-bound: 989e12 / 3.35e12 = 295 for the lecture's H100,
so a matmul X[B×D] @ W[D×F] with intensity ≈ B is memory-bound for B < 295.

Datasheet peaks are never reached: ``lecture_lib.measure.ceilings`` finds what *this* device
actually does. Choosing a device and dtype is ``lecture_lib.devices``.
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

from .devices import dtype_name, pick_device, pick_dtype
from .paths import data_path

GiB = 1024**3
MiB = 1024**2


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


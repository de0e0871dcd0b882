"""Which device and dtype to compute on: pick them, check them, and wait for them.

- ``pick_device``: CUDA, then Apple's MPS, then the CPU. ``pick_dtype``: bf16 on Ampere and newer,
  fp16 on older GPUs (T4) and on MPS, fp32 on a CPU. ``check_dtype``: a clear error where a
  device cannot compute in a dtype. ``resolve(device, dtype)``: all three in one call, the way
  every measurement and notebook chooses (None means "pick for me").
- ``dtype_name``/``as_torch_dtype``: the short names of ``data/hardware.json`` ("bf16") and back.
- ``synchronize``: wait for queued device work, so that a host clock reads a true time.

What the hardware *is* (datasheet specs, detection) lives in ``lecture_lib.hardware``; what it
measurably *does* (bandwidth, FLOP/s) in ``lecture_lib.measure.ceilings``.
"""
from __future__ import annotations

import torch

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



def resolve(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) to compute on: each as given, or picked (``pick_device``, ``pick_dtype``)
    when None; the pair is checked (``check_dtype``). The one place every measurement chooses."""
    device = torch.device(device) if device is not None else pick_device()
    dtype = check_dtype(device, dtype if dtype is not None else pick_dtype(device))
    return device, dtype


def synchronize(device=None) -> None:
    """Wait for queued work on ``device`` (CUDA/MPS) so that a host clock reads a true time.

    ``device=None`` waits for every accelerator this process uses: CUDA (only if already
    initialized: synchronizing would otherwise create a context for nothing) and MPS.
    CPU work is synchronous, so there is nothing to wait for.
    """
    device = None if device is None else torch.device(device)
    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        if torch.backends.mps.is_available():
            torch.mps.synchronize()
    elif device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()

"""Out-of-memory in a sweep: recognised, recorded, and freed, so that the sweep goes on and the
point is plotted as "out of memory" rather than crashing a notebook mid-lecture."""
from __future__ import annotations

import gc

import torch


def is_oom(error: BaseException) -> bool:
    """True for a GPU out-of-memory error, or a CPU/MPS allocation failure."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate" in text)


def free_memory(device) -> None:
    """Collect garbage and hand cached GPU blocks back, so the next point starts clean."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def oom_note(error: BaseException) -> str:
    """A one-line note for a record: "out of memory: <the error's first line>"."""
    first = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
    return f"out of memory: {first}"

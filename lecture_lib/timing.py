"""Honest timing (placeholder: being written)."""
import torch


def synchronize(device=None) -> None:
    """Wait for queued work on ``device`` (CUDA/MPS) so that a host clock reads a true time."""
    device = torch.device(device) if device is not None else None
    if device is None or device.type == "cuda":
        if torch.cuda.is_available():
            torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()

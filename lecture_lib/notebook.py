"""What every notebook's first code cell does: pick device and dtype, seed, set the figure style,
and print the hardware, so that every stored notebook says what it ran on."""
from __future__ import annotations

import datetime
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from . import devices, hardware, plotting


@dataclass
class NotebookEnv:
    device: torch.device
    dtype: torch.dtype
    info: hardware.DeviceInfo

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    def size(self, cpu, gpu):
        """Pick a problem size by device: small enough for a 2-core laptop, large enough on a GPU
        to show the effect (a tiny model on a GPU is launch-bound, which hides the memory wall).
        MPS counts as CPU-sized: laptops' GPUs share the laptop's memory and patience."""
        return gpu if self.on_gpu else cpu


def _inline_figures() -> None:
    """Inside a Jupyter kernel, draw figures inline even if MPLBACKEND (e.g. Agg, set for headless
    scripts) leaked into the kernel's environment: with Agg, plt.show() draws nothing and a stored
    notebook silently loses its plots."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        shell.run_line_magic("matplotlib", "inline")


def setup(seed: int = 0, presentation: bool | None = None, device=None, dtype=None) -> NotebookEnv:
    """Seed everything, choose device and dtype through the library, print the hardware.

    ``presentation=True`` (or the env var LECTURE_PRESENTATION=1) switches to large fonts for a
    projector. ``device``/``dtype`` override the automatic choice (checked: a dtype the device
    cannot do raises a clear error).
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if presentation is None:
        presentation = os.environ.get("LECTURE_PRESENTATION") == "1"
    _inline_figures()
    plotting.use_style(presentation)
    device, dtype = devices.resolve(device, dtype)
    info = hardware.detect(device)
    print(f"Hardware: {info.describe()}")
    print(f"Device {device}, dtype {devices.dtype_name(dtype)}, seed {seed}, "
          f"run on {datetime.date.today().isoformat()}")
    return NotebookEnv(device, dtype, info)

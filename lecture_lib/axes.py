"""Axis formatting shared by the notebooks' log-log plots (costs, latencies, batch sizes).

Matplotlib labels a log axis with powers of ten (``10^0``, ``10^1``), which is hard to read
when a plot spans only one or two decades, as a cost-per-token or latency curve often does.
``label_log_axis`` puts ticks at 1, 2, 5, 10, 20, 50, ... and writes them as plain numbers.
"""
from __future__ import annotations

from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter


def plain_number(value: float, _pos=None) -> str:
    """``1000 -> "1,000"``, ``0.5 -> "0.5"``, ``2e-3 -> "0.002"``: a tick label without exponents."""
    if value == 0:
        return "0"
    if abs(value) >= 1e-4:
        return f"{value:,.6f}".rstrip("0").rstrip(".")
    return f"{value:g}"


def label_log_axis(axis, subs=(1, 2, 5)) -> None:
    """Label a log-scaled axis (``ax.xaxis`` or ``ax.yaxis``) at 1, 2, 5, 10, 20, ... (``subs``
    times each power of ten) with plain numbers, and no labels on the minor ticks."""
    axis.set_major_locator(LogLocator(subs=tuple(subs)))
    axis.set_major_formatter(FuncFormatter(plain_number))
    axis.set_minor_formatter(NullFormatter())

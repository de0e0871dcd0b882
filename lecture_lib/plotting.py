"""One figure style for the series, a presentation mode for the projector, and small helpers that
several notebooks need (log-log slope fits, theory-vs-measurement axes)."""
from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

COLORS = {"theory": "#444444", "measured": "#d62728", "naive": "#ff7f0e", "cached": "#1f77b4",
          "reference": "#2ca02c", "roofline": "#9467bd"}


def use_style(presentation: bool = False) -> None:
    """Modest-dpi PNGs for stored notebooks; larger fonts and figures for a live lecture."""
    scale = 1.5 if presentation else 1.0
    mpl.rcParams.update({
        "figure.figsize": (7.5 * scale, 4.2 * scale), "figure.dpi": 80 if not presentation else 100,
        "savefig.dpi": 80, "font.size": 10 * scale, "axes.titlesize": 11 * scale,
        "axes.labelsize": 10 * scale, "legend.fontsize": 9 * scale, "axes.grid": True,
        "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
        "figure.constrained_layout.use": True,
    })
    try:  # PNG rather than SVG: nbval compares text only, and SVG embeds a date anyway
        from matplotlib_inline.backend_inline import set_matplotlib_formats
        set_matplotlib_formats("png")
    except ImportError:
        pass


def loglog_slope(x, y) -> tuple[float, float]:
    """Least-squares fit of log y = slope * log x + c; returns (slope, c)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = (x > 0) & (y > 0) & np.isfinite(y)
    slope, c = np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)
    return float(slope), float(c)


def plot_loglog_fit(ax, x, y, label: str, color=None, marker="o"):
    """Measured points and their fitted power law; returns the slope."""
    slope, c = loglog_slope(x, y)
    x = np.asarray(x, float)
    ax.loglog(x, y, marker, color=color, label=f"{label} (slope {slope:.2f})")
    xs = np.geomspace(x.min(), x.max(), 50)
    ax.loglog(xs, np.exp(c) * xs ** slope, "-", color=color, alpha=0.5)
    return slope


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{n:,.0f} B"
        n /= 1000
    return f"{n} B"

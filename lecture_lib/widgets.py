"""Widget helpers that degrade to a static figure where there is no widget frontend.

Pattern used by every notebook (nbval-safe, see NOTEBOOK_PRACTICE.md):
  1. a tested cell calls the drawing function once with default values (a static figure);
  2. the next cell, marked ``# NBVAL_IGNORE_OUTPUT``, calls ``interact(draw, ...)`` to make it live.
The drawing function must be fast (formulas or cached measurements, never a new measurement), so
that a redraw takes well under a second on a projector.
"""
from __future__ import annotations

from typing import Callable


def has_widget_frontend() -> bool:
    """True inside a Jupyter kernel with ipywidgets installed (a plain python run has neither)."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def interact(draw: Callable, **controls):
    """``ipywidgets.interact`` with ``continuous_update=False`` on sliders (redraw on release).

    ``controls`` are ipywidgets widgets or the shorthand ipywidgets accepts (lists, tuples).
    Without a widget frontend, draw once with each control's first/default value instead.
    """
    if not has_widget_frontend():
        return draw(**{k: _default(v) for k, v in controls.items()})
    import ipywidgets as w

    for value in controls.values():
        if isinstance(value, w.widgets.ValueWidget) and hasattr(value, "continuous_update"):
            value.continuous_update = False
    return w.interact(draw, **controls)


def _default(control):
    if hasattr(control, "value"):
        return control.value
    if isinstance(control, (list, tuple)) and control and not isinstance(control[0], (int, float)):
        first = control[0]
        return first[1] if isinstance(first, tuple) else first
    if isinstance(control, tuple):  # (min, max[, step]) shorthand: the middle, as ipywidgets does
        return type(control[0])((control[0] + control[1]) / 2)
    return control

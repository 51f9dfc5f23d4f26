"""Argument checks shared by both parts: run once at the edge of a public call, each error names the
argument, what it got and the fix."""
from __future__ import annotations

import math
import numbers


def is_int(value) -> bool:
    """A Python or NumPy integer, and not a bool (``True`` is an ``int`` to Python)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_number(name: str, value, low: float | None = None, high: float | None = None,
                 fix: str = "") -> float:
    """``value`` as a float if it is a finite real number in [low, high]; else a ``TypeError`` (not a
    number) or ``ValueError`` (NaN, inf, out of range) that names ``name`` and ends with ``fix``."""
    tail = f"; {fix}" if fix else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        got = f"the string {value!r}" if isinstance(value, str) else f"{value!r} ({type(value).__name__})"
        raise TypeError(f"{name} must be a number, got {got}{tail}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}{tail}")
    if (low is not None and value < low) or (high is not None and value > high):
        span = (f"in [{low:g}, {high:g}]" if low is not None and high is not None
                else f">= {low:g}" if low is not None else f"<= {high:g}")
        raise ValueError(f"{name} must be {span}, got {value:g}{tail}")
    return value

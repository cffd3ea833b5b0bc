"""Numbers as short strings, for the headless printer and the dashboard.

Every function takes whatever a log may hold (a float, an int too big for a
float, None, NaN, +-1e308, even a string where a number belongs) and returns
a short string; none of them raises.  No Textual, Rich or torch here.
"""
from __future__ import annotations

import math

UNITS = (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3))


def as_float(v: object) -> float:
    """``v`` as a float, NaN when it is not a number (bools are not numbers)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return math.nan
    try:
        return float(v)
    except OverflowError:  # an int beyond a float's range
        return math.inf if v > 0 else -math.inf


def fmt_loss(v: object) -> str:
    """A loss to 4 decimals: ``2.3456``; ``nan``, ``inf``; large or tiny ones as ``1.2e+30``."""
    x = as_float(v)
    if not math.isfinite(x):
        return "nan" if x != x else ("inf" if x > 0 else "-inf")
    if x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-4):
        return f"{x:.3g}"
    return f"{x:.4f}"


def fmt_count(v: object) -> str:
    """A count or rate in 4-6 characters: ``950``, ``12.3k``, ``4.5M``, ``1.2e+20``; ``-`` when unknown."""
    return _scaled(v, ".1e", ".1f", ".0f")


def fmt_duration(s: object) -> str:
    """Seconds as ``m:ss`` or ``h:mm:ss``; days beyond 4 days (``17d``); ``-`` when unknown."""
    x = as_float(s)
    if not math.isfinite(x):
        return "-"
    x = max(0.0, x)
    if x >= 4 * 86400:
        return f"{x / 86400:.0f}d" if x < 1e7 * 86400 else f"{x / 86400:.1e}d"
    n = int(round(x))
    h, rem = divmod(n, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def fmt_step(v: object) -> str:
    """A step for an axis tick: ``500``, ``2.5k``, ``1M``, ``4.6e+18``."""
    return _scaled(v, ".2g", ".4g", ".4g")


def _scaled(v: object, huge: str, unit: str, plain: str) -> str:
    """``v`` with a k/M/G/T unit (formatted ``unit``), in exponent form from 1e15 (``huge``)."""
    x = as_float(v)
    if not math.isfinite(x):
        return "-"
    if abs(x) >= 1e15:
        return format(x, huge)
    for name, size in UNITS:
        if abs(x) >= size:
            return format(x / size, unit) + name
    return format(x, plain)


def fmt_small(v: object) -> str:
    """A small number (a learning rate) for an axis tick: ``3e-4``, ``1.5e-3``, ``0``."""
    x = as_float(v)
    if not math.isfinite(x):
        return "-"
    if x == 0:
        return "0"
    return f"{x:.1e}".replace("e-0", "e-").replace("e+0", "e").replace("e+", "e").replace(".0e", "e")


def fmt_value(v: object) -> str:
    """Any axis value in at most 7 characters: ``2.5``, ``0.013``, ``1.2e+30``."""
    x = as_float(v)
    if not math.isfinite(x):
        return "-"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e5:
        return f"{x:.3g}"
    return fmt_small(x)


def fmt_mfu(v: object) -> str:
    """A model FLOPs utilisation (a fraction) as a percentage: ``35%`` from
    10% up, ``2.0%`` below, ``<0.1%`` below 0.1% (a tiny model on a GPU),
    never ``0.0%``; ``-`` when unknown."""
    x = as_float(v)
    if not math.isfinite(x) or x < 0:
        return "-"
    if x < 0.001:
        return "<0.1%"
    return f"{100 * x:.0f}%" if x >= 0.1 else f"{100 * x:.1f}%"


def fmt_lr(v: object) -> str:
    """A learning rate for the status line: ``3.00e-04``; empty when unknown."""
    x = as_float(v)
    return f"{x:.2e}" if math.isfinite(x) else ""


def fmt_int(v: object) -> str:
    """A step or count with thousands separators: ``12,345``; huge ones shortened."""
    if isinstance(v, bool) or not isinstance(v, int):
        x = as_float(v)
        return "-" if not math.isfinite(x) else f"{x:,.0f}" if abs(x) < 1e15 else f"{x:.2g}"
    return f"{v:,}" if abs(v) < 10**15 else f"{float(v):.3g}" if abs(v) < 10**300 else "huge"

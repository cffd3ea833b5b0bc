"""Numbers as short strings, for the headless printer and the dashboard.

Every function takes whatever a log may hold (a float, an int too big for a
float, None, NaN, +-1e308, even a string where a number belongs) and returns
a short string; none of them raises.  No Textual, Rich or torch here.

The rule for every narrow place: a number keeps its value.  Digits are
significant digits, or the number goes to scientific notation (``5e-3``);
what is shown is never more than ``MAX_REL_ERROR`` from the value, and a
number that cannot be shown so in the room there is shows as ``NO_ROOM``.
``fit(x, n)`` is that rule for n characters (tests/test_numbers.py holds
every formatter here to it).
"""
from __future__ import annotations

import math

UNITS = (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3))
MAX_REL_ERROR = 0.05   # the most a shown number may differ from its value
NO_ROOM = "#"          # a number that does not fit its place (as a spreadsheet's ###)
ABSENT = "–"           # a value never given (not a NaN: that shows as nan)


def as_float(v: object) -> float:
    """``v`` as a float, NaN when it is not a number (bools are not numbers)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return math.nan
    try:
        return float(v)
    except OverflowError:  # an int beyond a float's range
        return math.inf if v > 0 else -math.inf


def fit(v: object, width: int) -> str:
    """``v`` in at most ``width`` characters, keeping its value: the form with
    the most significant digits that fits (``0.01``, ``1.5e-3``, ``12k``,
    ``2e15``), ``nan``/``inf`` as such, ``NO_ROOM`` when nothing within
    ``MAX_REL_ERROR`` fits (``1e-12`` in 3 characters); ``ABSENT`` for None."""
    if v is None:
        return ABSENT if width >= 1 else ""
    x = as_float(v)
    if not math.isfinite(x):
        s = "nan" if x != x else ("inf" if x > 0 else "-inf")
        return s if len(s) <= width else NO_ROOM
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) < 10**width and len(str(v)) <= width:
        return str(v)
    best: tuple[float, int, int, str] | None = None
    for kind, s in _forms(x, width):
        if len(s) > width:
            continue
        err = abs(float(_unit_value(s)) - x) / abs(x) if x else abs(float(_unit_value(s)))
        key = (err, kind, len(s), s)
        if best is None or key < best:
            best = key
    if best is None or best[0] > MAX_REL_ERROR:
        return NO_ROOM
    return best[3]


def _forms(x: float, width: int):
    """Candidate spellings of ``x``: (0 plain, 1 with a unit, 2 scientific; the first wins a tie)."""
    for d in range(0, max(1, width - 1)):
        s = f"{x:.{d}f}"
        if "." in s:
            s = s.rstrip("0").rstrip(".") if d else s
        yield 0, "0" if s in ("-0", "") else s
    if 1e3 <= abs(x) < 1e15:
        for name, size in UNITS:
            if abs(x) >= size:
                for d in range(0, 3):
                    yield 1, f"{x / size:.{d}f}".rstrip("0").rstrip(".") + name if d else f"{x / size:.0f}{name}"
                break
    for p in range(0, max(1, width - 2)):
        yield 2, _short_exp(f"{x:.{p}e}")


def _short_exp(s: str) -> str:
    """``1.50e-03`` as ``1.50e-3``, ``2e+15`` as ``2e15``."""
    mant, _, exp = s.partition("e")
    sign = "-" if exp.startswith("-") else ""
    return f"{mant}e{sign}{exp.lstrip('+-').lstrip('0') or '0'}"


def _unit_value(s: str) -> float:
    for name, size in UNITS:
        if s.endswith(name):
            return float(s[:-1]) * size
    return float(s)


def fmt_loss(v: object) -> str:
    """A loss to 4 decimals: ``2.3456``; ``nan``, ``inf``; large or small ones
    in significant digits (``0.00123``, ``1.2e+30``); ``ABSENT`` for None."""
    if v is None:
        return ABSENT
    x = as_float(v)
    if not math.isfinite(x):
        return "nan" if x != x else ("inf" if x > 0 else "-inf")
    if x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-2):
        return f"{x:.3g}"
    return f"{x:.4f}"


def fmt_percent(v: object) -> str:
    """A fraction as a percentage: ``45%``, ``2.0%``, ``0.04%`` (never ``0.0%``); ``-`` when unknown."""
    x = 100 * as_float(v)
    if not math.isfinite(x):
        return "-"
    return f"{x:.0f}%" if abs(x) >= 10 else f"{x:.1f}%" if abs(x) >= 1 else f"{x:.2g}%"


def fmt_count(v: object) -> str:
    """A count or rate in 4-6 characters: ``950``, ``12.3k``, ``4.5M``, ``1.2e+20``, ``0.4``; ``-`` when unknown."""
    x = as_float(v)
    if math.isfinite(x) and 0 < abs(x) < 10 and x != int(x):
        return f"{x:.2g}"  # a slow rate: 0.4 tok/s is not 0
    return _scaled(v, ".1e", ".1f", ".0f")


def fmt_duration(s: object) -> str:
    """Seconds as ``m:ss`` or ``h:mm:ss``; days beyond 4 days (``17d``); ``-`` when unknown."""
    x = as_float(s)
    if not math.isfinite(x):
        return "-"
    x = max(0.0, x)
    if x >= 4 * 86400:
        days = x / 86400
        return f"{days:.1f}d" if days < 100 else f"{days:.0f}d" if days < 1e7 else f"{days:.1e}d"
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
        if math.isfinite(x) and abs(x) < 100 and x != int(x):
            return f"{x:.3g}"  # a fraction is not rounded to 0
        return "-" if not math.isfinite(x) else f"{x:,.0f}" if abs(x) < 1e15 else f"{x:.2g}"
    return f"{v:,}" if abs(v) < 10**15 else f"{float(v):.3g}" if abs(v) < 10**300 else "huge"

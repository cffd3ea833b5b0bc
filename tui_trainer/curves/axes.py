"""Numbers as plot coordinates, in one place (no Textual here): the
dashboard's plots (``ui.plot``) and ``tui-trainer view --snap``
(``snapshot``) both draw through ``Axis``.

A log can hold any value (1e308, 1e-300, a step of 2**62), and plotext,
given such numbers, raises or dies natively.  So plotext never sees a value
from the data: each axis keeps its finite, bounded, non-empty range, maps
values into ``[0, COORD]``, and labels its own round ticks.  A log-scale axis
is drawn the same way over log10 of the positive values.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

LIMIT = 1e300   # values beyond are drawn at the edge (their difference stays finite)
COORD = 1000.0  # plotext is only ever given coordinates in [0, COORD]
MAX_TICKS = 24


class Axis:
    """One axis: data values in, bounded plot coordinates and tick labels out."""

    def __init__(self, values: list[np.ndarray], *, log: bool = False, lo: float | None = None):
        self.log = log
        allv = np.concatenate([v for v in values if len(v)] or [np.zeros(0)])
        if len(allv):
            a, b = float(allv.min()), float(allv.max())
        else:
            a = b = 0.0
        if lo is not None and math.isfinite(lo) and len(allv):
            a = min(b, max(0.0, self.value(lo)))  # a window's left edge, shared by every run
        self.lo, self.hi = _span(a, b)

    def value(self, v: float) -> float:
        """One data value in axis units (log10 on a log axis), bounded."""
        if self.log:
            v = math.log10(v) if v > 0 else -LIMIT
        return min(LIMIT, max(-LIMIT, v))

    def coords(self, v: np.ndarray) -> np.ndarray:
        """Axis-unit values as plot coordinates, clipped to the frame."""
        return np.clip((v - self.lo) / (self.hi - self.lo) * COORD, 0.0, COORD)

    def ticks(self, n: int, fmt: Callable[[float], str]) -> tuple[list[float], list[str]]:
        """About ``n`` round ticks: positions (coordinates) and labels (data values)."""
        if not self.log:
            at = nice_ticks(self.lo, self.hi, n)
            values = at
        elif self.hi - self.lo >= 1:  # powers of ten
            step = max(1, math.ceil((self.hi - self.lo) / max(1, n)))
            first = math.ceil(self.lo)
            at = [float(first + k * step) for k in range(MAX_TICKS) if first + k * step <= self.hi]
            values = [10.0 ** t for t in at]
        else:  # less than a decade: round values, placed on the log scale
            try:
                values = [v for v in nice_ticks(10.0 ** self.lo, 10.0 ** self.hi, n) if v > 0]
            except OverflowError:
                values = []
            at = [math.log10(v) for v in values]
        labels = [fmt(v) for v in values]
        if len(set(labels)) < len(labels):  # ticks finer than the labels (a flat curve): label it once
            mid = len(at) // 2
            at, labels = at[mid:mid + 1], labels[mid:mid + 1]
        return [float(c) for c in self.coords(np.array(at, dtype=np.float64))], labels


def safe_values(x: np.ndarray, y: np.ndarray, log: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Finite points only, y as log10 on a log axis (positive values only), all within +-LIMIT."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    if log:
        keep &= y > 0
    x, y = x[keep], y[keep]
    if log:
        y = np.log10(y)
    return np.clip(x, -LIMIT, LIMIT), np.clip(y, -LIMIT, LIMIT)


def _span(lo: float, hi: float) -> tuple[float, float]:
    """A finite range with room in it: a single value (or one too close to
    its neighbours for float steps) is widened around its centre."""
    lo, hi = max(-LIMIT, min(LIMIT, lo)), max(-LIMIT, min(LIMIT, hi))
    if hi < lo:
        lo, hi = hi, lo
    if hi - lo > max(abs(lo), abs(hi)) * 1e-9 and hi - lo > 1e-300:
        return lo, hi
    mid = lo / 2 + hi / 2
    half = max(abs(mid) * 1e-3, 1e-9)
    return mid - half, mid + half


def nice_ticks(lo: float, hi: float, n: int) -> list[float]:
    """As many round tick positions (1, 2 or 5 times a power of ten) within
    [lo, hi] as fit in ``n``; empty for a range that is not a finite, positive span."""
    n = max(1, min(n, MAX_TICKS))
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return []
    raw = (hi / n) - (lo / n)  # never overflows, even for +-1e308
    if not math.isfinite(raw) or raw <= 0:
        return []
    mag = 10.0 ** math.floor(math.log10(raw))
    if not (math.isfinite(mag) and mag > 0):
        return []
    for m in (1, 2, 5, 10, 20, 50, 100):  # the smallest step whose ticks fit in n
        step = m * mag
        first = math.ceil(lo / step) * step
        count = int((hi - first) / step + 1e-9) + 1
        if count <= n:
            break
    out = []
    for k in range(n):
        t = first + k * step
        if t > hi + step * 1e-9 or not math.isfinite(t):
            break
        out.append(t)
    return out

"""Bounded curves: a fixed number of min/max buckets over a whole run plus a
ring of the most recent raw points, queried at about one or two points per
screen column.

No Textual here.  Memory stays bounded however long the run: a curve keeps a
fixed number of buckets, halving its resolution (merging neighbours) when
full.  Queries return about one or two points per screen column, because the
plotting library's cost grows with the points it is given, not the columns.
"""
from __future__ import annotations

import math

import numpy as np

BUCKETS = 2048        # whole-run resolution of a curve (buckets, each min/max/mean)
RECENT = 4096         # raw points kept for the recent-window view


class Buckets:
    """A fixed number of buckets over an append-only (x, y) stream.

    Every bucket but the last holds exactly ``width`` points; when all are in
    use, neighbours merge pairwise and ``width`` doubles.  Appends are O(1)
    amortised and memory is O(capacity) forever.
    """

    def __init__(self, capacity: int = BUCKETS):
        self.capacity = capacity - capacity % 2
        self.x0 = np.empty(self.capacity)   # first x in the bucket
        self.x1 = np.empty(self.capacity)   # last x in the bucket
        self.lo = np.empty(self.capacity)
        self.hi = np.empty(self.capacity)
        self.sum = np.empty(self.capacity)
        self.cnt = np.zeros(self.capacity, dtype=np.int64)
        self.n = 0
        self.width = 1

    def __len__(self) -> int:
        return int(self.cnt[:self.n].sum())

    def _halve(self) -> None:
        n, m = self.n, self.n // 2
        odd = n % 2
        a, b = slice(0, 2 * m, 2), slice(1, 2 * m, 2)
        self.x1[:m] = self.x1[b]
        self.x0[:m] = self.x0[a]
        self.lo[:m] = np.minimum(self.lo[a], self.lo[b])
        self.hi[:m] = np.maximum(self.hi[a], self.hi[b])
        self.sum[:m] = self.sum[a] + self.sum[b]
        self.cnt[:m] = self.cnt[a] + self.cnt[b]
        if odd:  # the lone last bucket carries on, now only partly full
            for arr in (self.x0, self.x1, self.lo, self.hi, self.sum, self.cnt):
                arr[m] = arr[n - 1]
        self.n = m + odd
        self.cnt[self.n:] = 0
        self.width *= 2

    def append(self, x: float, y: float) -> None:
        i = self.n - 1
        if i >= 0 and self.cnt[i] < self.width:
            self.x1[i] = x
            if y < self.lo[i]:
                self.lo[i] = y
            if y > self.hi[i]:
                self.hi[i] = y
            self.sum[i] += y
            self.cnt[i] += 1
            return
        if self.n == self.capacity:
            self._halve()
            self.append(x, y)
            return
        i = self.n
        self.x0[i] = self.x1[i] = x
        self.lo[i] = self.hi[i] = self.sum[i] = y
        self.cnt[i] = 1
        self.n += 1

    def extend(self, xs: np.ndarray, ys: np.ndarray) -> None:
        """Append many points at once, vectorised (the viewer's bulk path)."""
        xs = np.asarray(xs, dtype=np.float64)
        ys = np.asarray(ys, dtype=np.float64)
        while len(xs):
            i = self.n - 1
            if i >= 0 and self.cnt[i] < self.width:  # top up the partial last bucket
                k = min(len(xs), int(self.width - self.cnt[i]))
                self.x1[i] = xs[k - 1]
                self.lo[i] = min(self.lo[i], ys[:k].min())
                self.hi[i] = max(self.hi[i], ys[:k].max())
                self.sum[i] += ys[:k].sum()
                self.cnt[i] += k
                xs, ys = xs[k:], ys[k:]
                continue
            need = -(-len(xs) // self.width)
            if self.n + need > self.capacity:
                self._halve()
                continue
            starts = np.arange(0, len(xs), self.width)
            j = slice(self.n, self.n + need)
            self.x0[j] = xs[starts]
            self.x1[j] = xs[np.minimum(starts + self.width, len(xs)) - 1]
            self.lo[j] = np.minimum.reduceat(ys, starts)
            self.hi[j] = np.maximum.reduceat(ys, starts)
            self.sum[j] = np.add.reduceat(ys, starts)
            self.cnt[j] = np.diff(np.append(starts, len(xs)))
            self.n += need
            return

    def view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, lo, hi, sum, count) of the buckets in use, x at each bucket's middle."""
        n = self.n
        return ((self.x0[:n] + self.x1[:n]) / 2, self.lo[:n], self.hi[:n], self.sum[:n],
                self.cnt[:n].astype(np.float64))


class Ring:
    """The last ``capacity`` raw (x, y) points."""

    def __init__(self, capacity: int = RECENT):
        self.capacity = capacity
        self.x = np.empty(capacity)
        self.y = np.empty(capacity)
        self.n = 0       # points ever written
        self.first_x = math.nan

    def append(self, x: float, y: float) -> None:
        if self.n == 0:
            self.first_x = x
        i = self.n % self.capacity
        self.x[i] = x
        self.y[i] = y
        self.n += 1

    def extend(self, xs: np.ndarray, ys: np.ndarray) -> None:
        m = len(xs)
        if not m:
            return
        if self.n == 0:
            self.first_x = float(xs[0])
        # Only the tail can survive; write it where a one-by-one append would have.
        k = min(m, self.capacity)
        idx = (self.n + m - k + np.arange(k)) % self.capacity
        self.x[idx] = xs[m - k:]
        self.y[idx] = ys[m - k:]
        self.n += m

    def view(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n <= self.capacity:
            return self.x[:self.n], self.y[:self.n]
        i = self.n % self.capacity
        return np.concatenate([self.x[i:], self.x[:i]]), np.concatenate([self.y[i:], self.y[:i]])

    @property
    def complete(self) -> bool:
        """True while the ring still holds every point ever appended."""
        return self.n <= self.capacity


class Curve:
    """A bounded curve: whole-run buckets plus recent raw points."""

    def __init__(self, buckets: int = BUCKETS, recent: int = RECENT):
        self.buckets = Buckets(buckets)
        self.recent = Ring(recent)
        self.last_x = math.nan
        self.last_y = math.nan

    def __len__(self) -> int:
        return len(self.buckets)

    def append(self, x: float, y: float) -> None:
        self.buckets.append(x, y)
        self.recent.append(x, y)
        self.last_x, self.last_y = x, y

    def extend(self, xs: np.ndarray, ys: np.ndarray) -> None:
        if not len(xs):
            return
        self.buckets.extend(xs, ys)
        self.recent.extend(xs, ys)
        self.last_x, self.last_y = float(xs[-1]), float(ys[-1])

    def points(self, width: int, start: float | None = None, mean: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """About ``width`` columns of the curve from x >= ``start``: min and max
        per column (two points), or the mean per column when ``mean``."""
        width = max(1, int(width))
        rx, ry = self.recent.view()
        if len(rx) and (self.recent.complete or (start is not None and start >= rx[0])):
            keep = slice(None) if start is None else rx >= start
            x, y = rx[keep], ry[keep]
            return columns(x, y, y, y, np.ones_like(y), width, mean)
        x, lo, hi, s, c = self.buckets.view()
        if start is not None:
            keep = x >= start
            x, lo, hi, s, c = x[keep], lo[keep], hi[keep], s[keep], c[keep]
        return columns(x, lo, hi, s, c, width, mean)


def columns(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, s: np.ndarray, c: np.ndarray,
             width: int, mean: bool) -> tuple[np.ndarray, np.ndarray]:
    if len(x) == 0:
        return np.empty(0), np.empty(0)
    if len(x) > width:
        with np.errstate(over="ignore", invalid="ignore"):  # x from a hostile log can span past float's range
            span = x[-1] - x[0]
            pos = (x - x[0]) * (width / span) if span > 0 else np.zeros(len(x))
        col = np.clip(np.nan_to_num(pos, nan=0.0, posinf=width - 1, neginf=0.0), 0, width - 1).astype(np.int64)
        starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
        cnt = np.add.reduceat(c, starts)
        with np.errstate(over="ignore", invalid="ignore"):
            mean_x = np.add.reduceat(x * c, starts) / cnt
        if not np.all(np.isfinite(mean_x)):  # sums past float's range: the column's middle instead
            mid = np.minimum.reduceat(x, starts) / 2 + np.maximum.reduceat(x, starts) / 2
            mean_x = np.where(np.isfinite(mean_x), mean_x, mid)
        x = mean_x
        lo = np.minimum.reduceat(lo, starts)
        hi = np.maximum.reduceat(hi, starts)
        with np.errstate(over="ignore", invalid="ignore"):
            sums = np.add.reduceat(s, starts)
        bad = ~np.isfinite(sums)
        if bad.any():  # y sums past float's range: the column's middle (as a sum of one) instead
            sums, cnt = np.where(bad, lo / 2 + hi / 2, sums), np.where(bad, 1, cnt)
        s, c = sums, cnt
    if mean:
        return x, s / c
    # Low then high within each column: the line sweeps the column's whole range,
    # so a spike in a 100k-step run is still drawn at 80 columns.
    same = lo == hi
    xs = np.repeat(x, 2)
    ys = np.empty(2 * len(x))
    ys[0::2], ys[1::2] = lo, hi
    keep = np.ones(2 * len(x), dtype=bool)
    keep[1::2] = ~same
    return xs[keep], ys[keep]

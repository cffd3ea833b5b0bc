"""One run's state for display: bounded, downsampled series and status fields.

No Textual here.  The dashboard and the viewer both feed a ``RunSeries``
through ``apply(record)`` (or ``extend_train`` for a whole log at once) and the
widgets read it.  Memory stays bounded however long the run: a curve keeps a
fixed number of min/max buckets, halving its resolution (merging neighbours)
when full, plus a ring of the most recent raw points for the "recent window"
view.  Queries return about one or two points per screen column, because the
plotting library's cost grows with the points it is given, not the columns.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from .records import (Ack, BadStep, Checkpoint, Eval, Paused, Record, Resumed, RunEnd, RunStart,
                      Sample, Status, TrainStep)

EMA_BETA = 0.95       # smoothing of the train loss (about a 20-step memory), bias-corrected
BUCKETS = 2048        # whole-run resolution of a curve (buckets, each min/max/mean)
RECENT = 4096         # raw points kept for the recent-window view
SAMPLES_KEPT = 50
STATES = ("starting", "running", "paused", "evaluating", "checkpointing", "finished",
          "failed", "diverged", "stopped", "killed")
ENDED = frozenset({"finished", "failed", "diverged", "stopped", "killed"})


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
            return _columns(x, y, y, y, np.ones_like(y), width, mean)
        x, lo, hi, s, c = self.buckets.view()
        if start is not None:
            keep = x >= start
            x, lo, hi, s, c = x[keep], lo[keep], hi[keep], s[keep], c[keep]
        return _columns(x, lo, hi, s, c, width, mean)


def _columns(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, s: np.ndarray, c: np.ndarray,
             width: int, mean: bool) -> tuple[np.ndarray, np.ndarray]:
    if len(x) == 0:
        return np.empty(0), np.empty(0)
    if len(x) > width:
        span = x[-1] - x[0]
        col = (np.minimum(((x - x[0]) * (width / span)).astype(np.int64), width - 1) if span > 0
               else np.zeros(len(x), np.int64))
        starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
        cnt = np.add.reduceat(c, starts)
        x = np.add.reduceat(x * c, starts) / cnt
        lo = np.minimum.reduceat(lo, starts)
        hi = np.maximum.reduceat(hi, starts)
        s, c = np.add.reduceat(s, starts), cnt
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


def ema(values: np.ndarray, beta: float = EMA_BETA, state: float = 0.0, count: int = 0,
        block: int = 64) -> tuple[np.ndarray, float, int]:
    """Bias-corrected exponential moving average, vectorised in blocks.

    Returns (smoothed, raw EMA state, count) so a stream can continue where a
    bulk load stopped.  Within a block the recurrence is a small triangular
    matrix product; only the block ends are carried in Python.
    """
    y = np.asarray(values, dtype=np.float64)
    m = len(y)
    if m == 0:
        return np.empty(0), state, count
    pad = -m % block
    rows = np.append(y, np.zeros(pad)).reshape(-1, block)
    i = np.arange(block)
    tri = np.tril(beta ** (i[:, None] - i[None, :]).clip(min=0)) * (1 - beta)
    # Each block's EMA started from zero.  einsum, not @: a matrix product goes to
    # OpenBLAS, whose threads spin for 100x the time on a busy 2-core machine.
    z = np.einsum("ij,kj->ik", rows, tri)
    carry = np.empty(len(rows))           # raw EMA entering each block
    bL = beta ** block
    for r, end in enumerate(z[:, -1].tolist()):
        carry[r] = state
        state = bL * state + end
    raw = z + carry[:, None] * beta ** (i + 1)[None, :]
    raw = raw.ravel()[:m]
    state = float(raw[-1])
    n = count + np.arange(1, m + 1)
    return raw / (1 - beta ** n), state, count + m


@dataclass
class EvalPoint:
    step: int
    train: float
    val: float
    elapsed: float


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


class RunSeries:
    """Everything the dashboard shows about one run, fed one record at a time."""

    def __init__(self, name: str = "run"):
        self.name = name
        self.loss = Curve()
        self.smooth = Curve()        # EMA of the train loss, bucketed the same way
        self.lr_curve = Curve()
        self.evals: list[EvalPoint] = []
        self.samples: deque[tuple[int, str]] = deque(maxlen=SAMPLES_KEPT)
        self.samples_seen = 0
        self.step = 0
        self.total_steps = 0
        self.tokens = 0
        self.tokens_per_sec = 0.0
        self.lr = math.nan
        self.train_loss = math.nan
        self.elapsed_s = 0.0
        self.state = "starting"
        self.detail = ""
        self.error: str | None = None
        self.message = ""            # the engine's last refusal or note (an Ack that was not ok)
        self.bad_steps = 0           # NaN/inf steps the engine skipped
        self.bad_lines = 0           # unreadable log lines (set by a file reader)
        self.last_checkpoint: Checkpoint | None = None
        self.n_params = 0
        self.device = ""
        self.config: dict[str, Any] = {}
        self.version = 0             # bumped on every change; widgets redraw when it moves
        self.evals_version = 0
        self._eval_cache: tuple[int, np.ndarray] = (-1, np.empty((0, 2)))
        self._ema_state, self._ema_count = 0.0, 0
        self._rate: deque[tuple[float, int, int]] = deque(maxlen=64)  # (elapsed, step, tokens)

    # --- feeding ---
    def apply(self, r: Record) -> None:
        self.version += 1
        if isinstance(r, TrainStep):
            self._train(r)
        elif isinstance(r, Eval):
            self.evals.append(EvalPoint(r.step, r.train_loss, r.val_loss, r.elapsed_s))
            self.evals_version += 1
            self.elapsed_s = max(self.elapsed_s, r.elapsed_s)
        elif isinstance(r, Sample):
            self.samples.append((r.step, r.text))
            self.samples_seen += 1
        elif isinstance(r, Status):
            if self.state not in ENDED:
                self.state = "diverged" if self.diverged and r.state == "paused" else r.state
                self.detail = r.detail
        elif isinstance(r, Paused):
            self.state = "diverged" if r.reason == "diverged" else "paused"
        elif isinstance(r, Resumed):
            self.state = "running"
            self._rate.clear()  # the pause is not training time
        elif isinstance(r, BadStep):
            self.bad_steps += 1
        elif isinstance(r, Checkpoint):
            self.last_checkpoint = r
        elif isinstance(r, Ack):
            if not r.ok:
                self.message = f"{r.command}: {r.message}"
        elif isinstance(r, RunStart):
            self.name = r.run_name or self.name
            self.total_steps = r.total_steps
            self.step = max(self.step, r.step)
            self.n_params, self.device, self.config = r.n_params, r.device, r.config
            self.state, self.error = "running", None
        elif isinstance(r, RunEnd):
            self.state = r.status
            self.error = r.error
            self.step = max(self.step, r.step)
            self.elapsed_s = max(self.elapsed_s, r.elapsed_s)

    @property
    def diverged(self) -> bool:
        return self.state == "diverged"

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def _train(self, r: TrainStep) -> None:
        self.step = r.step
        self.lr = r.lr
        self.tokens = r.tokens or self.tokens
        self.tokens_per_sec = r.tokens_per_sec
        self.elapsed_s = r.elapsed_s
        if self.state not in ENDED:
            self.state = "running"
        self._rate.append((r.elapsed_s, r.step, r.tokens))
        if _finite(r.lr):
            self.lr_curve.append(r.step, r.lr)
        if _finite(r.train_loss):
            self.train_loss = r.train_loss
            self.loss.append(r.step, r.train_loss)
            b = EMA_BETA
            self._ema_state = b * self._ema_state + (1 - b) * r.train_loss
            self._ema_count += 1
            self.smooth.append(r.step, self._ema_state / (1 - b ** self._ema_count))

    def extend_train(self, steps: np.ndarray, losses: np.ndarray, lrs: np.ndarray | None = None) -> None:
        """Bulk path: many train steps at once (a log read back from disk).
        Non-finite values are dropped, as ``apply`` drops them."""
        steps = np.asarray(steps, dtype=np.float64)
        losses = np.asarray(losses, dtype=np.float64)
        if not len(steps):
            return
        self.version += 1
        ok = np.isfinite(losses)
        xs, ys = steps[ok], losses[ok]
        self.loss.extend(xs, ys)
        sm, self._ema_state, self._ema_count = ema(ys, EMA_BETA, self._ema_state, self._ema_count)
        self.smooth.extend(xs, sm)
        if len(ys):
            self.train_loss = float(ys[-1])
        if lrs is not None:
            lrs = np.asarray(lrs, dtype=np.float64)
            okl = np.isfinite(lrs)
            self.lr_curve.extend(steps[okl], lrs[okl])
            if okl.any():
                self.lr = float(lrs[okl][-1])
        self.step = max(self.step, int(steps[-1]))

    # --- queries ---
    def train_points(self, width: int, window: int | None = None, smooth: bool = False, *,
                     start: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Train loss for a plot ``width`` columns wide: min/max per column, or
        the EMA when ``smooth``.  ``window`` keeps the last N steps of this run;
        ``start`` (overrides it) keeps x >= start, for lining up several runs."""
        if start is None and window is not None:
            start = self.step - window
        if smooth:
            return self.smooth.points(width, start, mean=True)
        return self.loss.points(width, start)

    def lr_points(self, width: int, window: int | None = None, *,
                  start: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        if start is None and window is not None:
            start = self.step - window
        return self.lr_curve.points(width, start, mean=True)

    def eval_points(self, start: float | None = None, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(step, val loss) of the evals at or after ``start``, finite only; with
        ``width``, at most one point (the mean) per column."""
        if not self.evals:
            return np.empty(0), np.empty(0)
        if self._eval_cache[0] != self.evals_version:
            a = np.array([(e.step, e.val) for e in self.evals], dtype=np.float64)
            self._eval_cache = (self.evals_version, a[np.isfinite(a[:, 1])])
        a = self._eval_cache[1]
        if start is not None:
            a = a[a[:, 0] >= start]
        x, y = a[:, 0], a[:, 1]
        if width is not None and len(x) > width:
            x, y = _columns(x, y, y, y, np.ones_like(y), width, mean=True)
        return x, y

    @property
    def smoothed_loss(self) -> float:
        return self.smooth.last_y

    def rates(self) -> tuple[float, float]:
        """(steps/s, tokens/s) over the last few dozen steps; NaN when unknown."""
        if len(self._rate) >= 2:
            (e0, s0, t0), (e1, s1, t1) = self._rate[0], self._rate[-1]
            if e1 > e0:
                tps = (t1 - t0) / (e1 - e0) if t1 > t0 else self.tokens_per_sec
                return (s1 - s0) / (e1 - e0), tps
        return math.nan, self.tokens_per_sec if self.tokens_per_sec else math.nan

    def eta_s(self) -> float:
        sps, _ = self.rates()
        if self.ended or self.state == "paused" or not self.total_steps or not (sps > 0):
            return math.nan  # a paused run has no time of arrival
        return max(0, self.total_steps - self.step) / sps

    def sample(self, back: int = 0) -> tuple[int, str, int, int] | None:
        """The sample ``back`` places before the latest: (step, text, index, count)."""
        if not self.samples:
            return None
        back = max(0, min(back, len(self.samples) - 1))
        step, text = self.samples[-1 - back]
        return step, text, len(self.samples) - back, len(self.samples)

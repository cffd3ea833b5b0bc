"""The plots' x axis (steps, tokens seen or wall time) and a run's figures at a point of it.

No Textual here.  A ``RunSeries`` keeps its curves by step; this module maps
steps to the other x units and back:

- tokens: a run sees the same number of tokens every step (batch x context x
  processes is fixed for a run, a resume included), so tokens are the step
  times the run's tokens per step (its last token count over its last step);
- wall time: the run's elapsed seconds, known at every eval and at its latest
  step, interpolated in between (a pause between two evals is spread over
  the steps between them).

A run that does not know a unit (someone else's log has no token count or
elapsed time) has no curve in it: ``to_x`` returns None for it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .series import RunSeries

MODES = ("step", "tokens", "time")
NAMES = {"step": "step", "tokens": "tokens", "time": "wall time"}
LOOKUP_POINTS = 4096  # resolution of a curve when reading its value at a step


def tokens_per_step(run: RunSeries) -> float | None:
    if run.tokens > 0 and run.step > 0:
        return run.tokens / run.step
    return None


def _clock(run: RunSeries) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, elapsed seconds) known for the run, increasing; None when fewer than two."""
    pts = [(0.0, 0.0)] + [(float(e.step), float(e.elapsed)) for e in run.evals
                          if math.isfinite(e.elapsed) and e.elapsed >= 0]
    if math.isfinite(run.elapsed_s) and run.elapsed_s > 0 and run.step > 0:
        pts.append((float(run.step), float(run.elapsed_s)))
    if len(pts) < 2:
        return None
    a = np.array(sorted(pts))
    steps, secs = a[:, 0], np.maximum.accumulate(a[:, 1])
    if secs[-1] <= 0:
        return None
    return steps, secs


def known(run: RunSeries, mode: str) -> bool:
    return mode == "step" or (tokens_per_step(run) if mode == "tokens" else _clock(run)) is not None


def to_x(run: RunSeries, steps: np.ndarray, mode: str) -> np.ndarray | None:
    """Steps of ``run`` as x values in ``mode``'s unit; None when the run does not know it."""
    steps = np.asarray(steps, dtype=np.float64)
    if mode == "step":
        return steps
    if mode == "tokens":
        per = tokens_per_step(run)
        return None if per is None else steps * per
    clock = _clock(run)
    if clock is None:
        return None
    s, t = clock
    return np.interp(steps, s, t)  # beyond the last known point: held at the run's latest time


def to_step(run: RunSeries, x: float, mode: str) -> float | None:
    """The step of ``run`` at x (in ``mode``'s unit); None when the run does not know the unit."""
    if mode == "step":
        return x
    if mode == "tokens":
        per = tokens_per_step(run)
        return None if per is None else x / per
    clock = _clock(run)
    if clock is None:
        return None
    s, t = clock
    return float(np.interp(x, t, s))


@dataclass
class PointValues:
    """A run's figures at one step: the nearest train point, its EMA, the
    latest eval at or before it, the learning rate."""

    step: float
    train: float = math.nan
    ema: float = math.nan
    val: float = math.nan
    val_step: int | None = None
    lr: float = math.nan


def values_at(run: RunSeries, step: float) -> PointValues:
    out = PointValues(step)
    for name, curve in (("train", run.loss), ("ema", run.smooth), ("lr", run.lr_curve)):
        x, y = curve.points(LOOKUP_POINTS, mean=True)
        if len(x) and x[0] <= step + 0.5:
            i = int(np.searchsorted(x, step, side="right")) - 1  # the last point at or before the step
            setattr(out, name, float(y[max(0, i)]))
            if name == "train":
                out.step = float(x[max(0, i)])
    for e in reversed(run.evals):
        if e.step <= step + 0.5 and math.isfinite(e.val):
            out.val, out.val_step = e.val, e.step
            break
    return out

"""``--time 10m``: train for about that wall time.

The run starts with its ``steps``; ``TimeBudget``, a sink of the run's
records, measures the wall seconds per step from the train records' own
``elapsed_s`` (evals and checkpoints included, the first step and time spent
paused or suspended left out), and once it has a few seconds' worth (5% of
the budget, at most 10 s, or half the planned steps), fixes ``steps`` so the
run ends at the budget (less the longest wait between two steps so far,
for the last eval and checkpoint): a live ``steps`` change with source ``time``, applied
by the loop at its next step like any other (``live.py``), so the schedule
refits from the current step and LR (``schedule.py``) and the ``change``
record says so.  Every 10% of the budget after that it checks the pace again
and corrects ``steps`` when the end it projects is more than 3% of the budget
away, so evals the first measure missed do not push the end past the budget.

The fixed ``steps`` are the config's and the live settings' (``changed``),
so a checkpoint holds them: a resumed run whose steps a budget already fixed
keeps them (exact resume) unless the resume gives another ``--time``.  A
person's own change of ``steps`` wins: the budget stops steering.

No torch here.
"""
from __future__ import annotations

import math
import time
from typing import Any

from ..bounds import MAX_STEPS, parse_duration  # noqa: F401 (the duration form lives with the bounds)
from ..control.commands import Command, Order
from ..records import Change, Paused, Record, Resumed, RunStart, TrainStep

MIN_STEPS = 5          # steps measured before steps is fixed
WINDOW_SHARE = 0.05    # of the budget, measured before steps is fixed ...
WINDOW_MAX_S = 10.0    # ... but no longer than this
CHECK_SHARE = 0.10     # of the budget between two checks of the pace
TOLERANCE = 0.03       # of the budget: a projected end further off than this is corrected


class TimeBudget:
    """A sink: fixes the run's ``steps`` to fit ``budget_s`` of training time
    (see the module docstring).  ``commands``: the run's queue; ``floor``:
    the least steps may be (the warmup)."""

    def __init__(self, budget_s: float, commands: Any, floor: int = 1, clock: Any = time.perf_counter):
        self.budget = float(budget_s)
        self.commands = commands
        self.floor = max(1, int(floor))
        self.clock = clock
        self.done = False           # steps are a person's (or kept from before a resume): hands off
        self.total = 0              # the planned steps as the records say
        self.fixed: int | None = None
        self.start: tuple[float, int] | None = None  # (training time, step) the pace is measured from
        self.next_check = math.inf
        self.paused_s = 0.0         # this session's time paused or suspended
        self.last_t = math.nan      # the previous train record's training time
        self.longest = 0.0          # the longest wait between two steps (an eval, a sample, a checkpoint)
        self._paused_at: float | None = None

    def emit(self, r: Record) -> None:
        if isinstance(r, RunStart):
            self.total, self.start, self.paused_s, self._paused_at = r.total_steps, None, 0.0, None
            self.last_t = math.nan
            kept = r.resumed and "steps" in (r.live or {}) and "time_budget" not in (r.changes or {})
            self.done = self.done or kept
        elif isinstance(r, Change) and r.key == "steps":
            if isinstance(r.new, int):
                self.total = r.new
            if r.source != "time":
                self.done = True
        elif isinstance(r, Paused):
            self._paused_at = self.clock() if self._paused_at is None else self._paused_at
        elif isinstance(r, Resumed) and self._paused_at is not None:
            self.paused_s += self.clock() - self._paused_at
            self._paused_at = None
        elif isinstance(r, TrainStep) and not self.done:
            self._train(r)

    def _train(self, r: TrainStep) -> None:
        t = r.elapsed_s - self.paused_s
        if not math.isfinite(t):
            return
        last, self.last_t = self.last_t, t
        if self.start is None:
            self.start = (t, r.step)  # the first step (a compile, a cold cache) is not the pace
            return
        if t > last:
            self.longest = max(self.longest, t - last)
        t0, s0 = self.start
        steps, spent = r.step - s0, t - t0
        if steps <= 0 or spent <= 0:
            return
        if self.fixed is None:
            window = min(self.budget * WINDOW_SHARE, WINDOW_MAX_S)
            if not ((steps >= MIN_STEPS and spent >= window) or (steps >= 2 and r.step * 2 >= self.total)):
                return
        elif t < self.next_check:
            return
        per_step = spent / steps
        # The last eval, sample and checkpoint come after the last step: kept out of the steps' time.
        target = r.step + int(max(0.0, self.budget - t - self.longest) / per_step)
        target = min(MAX_STEPS, max(target, r.step + 1, self.floor))
        self.next_check = t + self.budget * CHECK_SHARE
        if self.fixed is not None and abs(target - self.fixed) * per_step <= self.budget * TOLERANCE:
            return
        self.fixed = target
        self.commands.put(Order(Command.SET, {"key": "steps", "value": target}, source="time"))

"""A run's pace for the status line: steps/s for the ETA and tokens/s for
the rate, as medians over the recent steps.

Tokens/s is the training rate, from each train record's own rate (the time
its step took), so an eval or a checkpoint between steps does not dent it;
the step that compiled the model is left out.  Where the wall time between
train records is slower per token (the loop's own time between steps:
logging, steering, the sinks), that pace is shown, as it is what the run
gets; the evals, checkpoints and the compile between steps are taken out of
it (``add``'s ``away_s``: their own time, ``pauses``), so a run that evaluates
every step or two has a steady rate too.  Steps/s, for the ETA, is from the
wall time between train records, less the same.

Medians, not means: a compile, the first slow steps, an eval or a checkpoint
are a few outliers among the steps, so the figures show the steady pace from
the first dozen steps on, and a pause point is no jump in the ETA (it shows
as its own time on the status line: ``pauses``).  Early on, the median is of
the newer half of the steps seen (``recent_median``): a warm-up of several
slow steps is out of it by step 10.
"""
from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

RATE_STEPS = 64       # recent steps the rates are the median of
RATE_MIN = 3          # fewer steps than this in the window: not yet a median worth the name


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def recent_median(values: deque[float]) -> float:
    """The median of the newer half of ``values`` (all of them while fewer
    than ``2 * RATE_MIN``, the last ``RATE_STEPS`` once there are twice as
    many; NaN when empty): the first steps after a start, slower than the
    steady pace while caches and allocators warm up, drop out of the window
    as fast as steps come in, not only after ``RATE_STEPS`` of them."""
    n = len(values)
    if not n:
        return math.nan
    keep = n if n < 2 * RATE_MIN else min(RATE_STEPS, max(RATE_MIN, (n + 1) // 2))
    return statistics.median(list(values)[n - keep:])


class Pace:
    """The recent steps' times, fed one train record at a time."""

    kept = 2 * RATE_STEPS

    def __init__(self) -> None:
        self._step_times: deque[float] = deque(maxlen=self.kept)  # each step's own seconds per token
        self._gaps: deque[float] = deque(maxlen=self.kept)  # wall seconds per step between train records
        self._token_gaps: deque[float] = deque(maxlen=self.kept)  # the same, per token
        # (elapsed, step, tokens) of the previous train record; None: a new start or a gap
        self._last: tuple[Any, int, Any] | None = None

    def add(self, step: int, tokens: Any, elapsed_s: Any, tokens_per_sec: Any, compiled: bool = False,
            away_s: float = 0.0) -> None:
        """One train record: its own rate (unless its step compiled the model)
        and the wall time since the previous one, less ``away_s`` (an eval,
        a checkpoint between them: their own time)."""
        last, self._last = self._last, (elapsed_s, step, tokens)
        if last is not None and _finite(elapsed_s) and _finite(last[0]) and step > last[1] \
                and elapsed_s >= last[0]:
            wall = elapsed_s - last[0] - (away_s if _finite(away_s) and away_s > 0 else 0.0)
            if wall > 0:  # else the clocks disagree: no gap worth keeping
                self._gaps.append(wall / (step - last[1]))
                if _finite(tokens) and _finite(last[2]) and tokens > last[2]:
                    self._token_gaps.append(wall / (tokens - last[2]))
        if not compiled and _finite(tokens_per_sec) and 0 < tokens_per_sec < 1e30:
            self._step_times.append(1.0 / tokens_per_sec)

    def gap(self) -> None:
        """A pause: the time until the next train record is not step time."""
        self._last = None

    @property
    def has_steps(self) -> bool:
        return bool(self._step_times)

    def rates(self) -> tuple[float, float]:
        """(steps/s, tokens/s); NaN where there is no median yet."""
        gap = recent_median(self._gaps)
        sps = 1.0 / gap if gap > 0 else math.nan
        if len(self._step_times) < 2:
            return sps, math.nan
        # The slower of the steps' own pace and the wall pace between their
        # records: the loop's own time between steps is training time too.
        per_token = recent_median(self._step_times)
        if len(self._token_gaps) >= 2:
            per_token = max(per_token, recent_median(self._token_gaps))
        return sps, 1.0 / per_token

"""Time away from training: the compile, each eval and each checkpoint.

The records say it: a ``status`` record (evaluating, checkpointing,
compiling) starts a pause point at its ``time``, the next status, train
record or run end ends it, and a ``checkpoint`` record's ``blocked_s`` and
``write_s`` are the checkpoint's own figures (an asynchronous save's record
comes once its background write is done, steps later).  The status line and
the console show a pause point as its own time ("checkpointing 1.2 s"), never
as a jump in the rate or the ETA, which are of training time only
(``series.RunSeries.rates``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..fmt import fmt_duration
from ..records import Checkpoint, Status

SHOWN_S = 30.0  # an ended pause point stays on the status line this long (wall seconds)
LONGEST_S = 1e7  # a duration beyond this (a clock gone wrong, a hostile log) is not shown
NAMES = {"evaluating": "eval", "checkpointing": "checkpoint", "compiling": "compiled in"}
# How the engine's status detail begins when the compile failed and the run went on eagerly (engine._compile_step).
COMPILE_FAILED = "torch.compile failed"


def _time(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _span(v: float | None) -> float | None:
    return v if v is not None and 0 <= v <= LONGEST_S else None


def fmt_seconds(s: object) -> str:
    """A pause's length: ``0.21 s``, ``1.2 s``, ``1:05``; ``-`` when unknown."""
    x = _time(s)
    if x is None or not 0 <= x <= LONGEST_S:
        return "-"
    return f"{x:.2f} s" if x < 1 else f"{x:.1f} s" if x < 60 else fmt_duration(x)


@dataclass
class PausePoint:
    """One stretch of time away from training, at ``step``."""

    state: str                      # evaluating, checkpointing or compiling
    step: int
    began: float | None             # wall time (records' ``time``); None: not known
    ended: float | None = None      # None: still going on
    blocked_s: float | None = None  # a checkpoint record's: training held up
    write_s: float | None = None    # a checkpoint record's: its write (in the background when async)
    reported: float | None = None   # when the checkpoint record came
    failed: bool = False            # a compile that failed: the run went on eagerly

    @property
    def seconds(self) -> float | None:
        if self.blocked_s is not None:
            return self.blocked_s
        if self.began is None or self.ended is None:
            return None
        return _span(self.ended - self.began)


class PausePoints:
    """A run's pause point going on, and the latest of each kind that ended,
    fed its status, train, checkpoint and run-end records (``RunSeries.apply``)."""

    def __init__(self) -> None:
        self.latest: PausePoint | None = None
        self.last: dict[str, PausePoint] = {}  # state: the latest of that kind

    @property
    def going_on(self) -> PausePoint | None:
        p = self.latest
        return p if p is not None and p.ended is None else None

    def status(self, r: Status) -> None:
        p = self.going_on
        if r.state in NAMES:
            if p is not None and p.state == r.state:
                return  # the same pause, said again ("waiting for the previous checkpoint write")
            self.end(r.time)
            self.latest = self.last[r.state] = PausePoint(r.state, r.step, _time(r.time))
        else:
            if compile_failed(r) and "compiling" in self.last:  # said as the compile ends, or just after
                self.last["compiling"].failed = True
            self.end(r.time)

    def end(self, when: object) -> None:
        """Training goes on (or the run ended) at ``when``: the pause point going on, if any, ended."""
        p = self.going_on
        if p is not None:
            t = _time(when)
            p.ended = t if t is not None else p.began if p.began is not None else 0.0

    def checkpoint(self, r: Checkpoint) -> None:
        blocked, write, t = _span(_time(r.blocked_s)), _span(_time(r.write_s)), _time(r.time)
        p = self.last.get("checkpointing")
        if p is None or p.step != r.step:  # no status records for it (a loop of its own), or a save refused between
            began = t - blocked if t is not None and blocked is not None else None
            p = self.last["checkpointing"] = PausePoint("checkpointing", r.step, began,
                                                         ended=t if t is not None else 0.0)
        p.blocked_s = blocked if blocked is not None else p.blocked_s
        p.write_s, p.reported = write, t

    def so_far(self, state: str, now: object) -> float | None:
        """Seconds the ``state`` pause point going on has lasted at ``now``."""
        p, t = self.going_on, _time(now)
        if p is None or p.state != state or p.began is None or t is None:
            return None
        return _span(max(0.0, t - p.began))

    def text(self, state: str, now: float, most: int = 3) -> str:
        """What the status line shows at wall time ``now`` for a run in
        ``state``: the pause point going on and how long so far, then those
        that ended lately (``going_text``, ``ended_text``); "" when none."""
        return ", ".join(t for t in (self.going_text(state, now), self.ended_text(now, most)) if t)

    def going_text(self, state: str, now: float) -> str:
        """The pause point going on at ``now`` in a run in ``state``, and how
        long so far ("checkpointing 1.2 s"); "" when none."""
        secs = self.so_far(state, now)
        return f"{state} {fmt_seconds(secs)}" if secs is not None else ""

    def ended_text(self, now: float, most: int = 3) -> str:
        """The latest eval, checkpoint and compile that ended less than
        ``SHOWN_S`` before ``now``, the latest first, at most ``most``
        ("checkpoint 0.20 s (write 1.3 s)": training held up 0.20 s, the
        write in the background 1.3 s; "eval 0.50 s"); "" when none."""
        out = []
        ended = [p for p in self.last.values() if p.ended is not None and p.seconds is not None]
        for p in sorted(ended, key=_shown_from, reverse=True):
            if now - _shown_from(p) <= SHOWN_S:
                said = (f"compile failed after {fmt_seconds(p.seconds)}: eager" if p.failed
                        else f"{NAMES[p.state]} {fmt_seconds(p.seconds)}")
                if p.write_s is not None and p.write_s > p.seconds + 0.005:  # written in the background
                    said += f" (write {fmt_seconds(p.write_s)})"
                out.append(said)
        return ", ".join(out[:max(1, most)])


def compile_failed(r: Status) -> bool:
    """Whether ``r`` says the compile failed and the run trains eagerly."""
    return r.state == "running" and isinstance(r.detail, str) and r.detail.startswith(COMPILE_FAILED)


def _shown_from(p: PausePoint) -> float:
    """When ``p`` was last news: its end, or its checkpoint record's coming."""
    assert p.ended is not None
    return max(p.ended, p.reported) if p.reported is not None else p.ended

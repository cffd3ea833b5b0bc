"""What the last records of a log say: its latest step and train loss, how
its last session ended, a later session's settings, a changed total, a pause.

Read backwards from the end, newest first, only as far as needed (usually a
line or three), then the rare records (``run_start``, ``change``, ``pause``,
``resume``) found by a search of the rest of the tail."""
from __future__ import annotations

import math
import os
import re
from typing import Any

from ..logs.formats import read as read_object
from ..logs.parsing import decode
from ..records import Change, Eval, Paused, Record, Resumed, RunEnd, RunStart, TrainStep
from .evals import candidates
from .summary import NAN, RunSummary

TAIL_BYTES = 1 << 16     # the last records: this much, four times more while no train line is in it
TAIL_MAX = 1 << 22
# Rare records the tail is searched for, wherever they are in it.
_TAIL_RARE = re.compile(rb'"(?:run_start|change|pause|resume)"')


class Tail:
    """What the last records of a log say, read backwards."""

    def __init__(self) -> None:
        self.train: Record | tuple | None = None
        self.end: RunEnd | None = None
        self.ended: bool | None = None   # the last session's fate: True ended, False went on after
        self.start: RunStart | None = None
        self.changed_total = 0
        self.paused: Paused | None = None
        self.state_seen = False
        self.max_step = 0
        self.elapsed = NAN
        self.any = False


def read_tail(s: RunSummary, fd: int, size: int) -> Tail:
    n = TAIL_BYTES
    while True:
        off = max(0, size - n)
        buf = os.pread(fd, size - off, off)
        begin = buf.find(b"\n") + 1 if off > 0 else 0  # it starts mid-line
        t = Tail()
        # The newest records, newest first, until a train line has been read
        # and the last session's fate is known (usually a line or three).
        pos = len(buf) - 1 if buf.endswith(b"\n") else len(buf)
        oldest = pos
        while pos > begin and (t.train is None or t.ended is None):
            oldest = max(begin, buf.rfind(b"\n", begin, pos) + 1)
            _take_line(t, buf[oldest:pos])
            pos = oldest - 1
        # Then the rare records anywhere before those, newest first: a
        # session's start, a changed total, a pause or a resume.
        for ls, le in reversed(candidates(buf[begin:oldest], b"rcp", _TAIL_RARE)):
            _take_line(t, buf[begin + ls:begin + le])
        if t.train is not None or off == 0 or n >= TAIL_MAX:
            break
        n *= 4
    if t.start is not None:  # a later session (a resume) is in the tail: its settings count
        s.config, s.total_steps = dict(t.start.config), t.start.total_steps
    if t.changed_total:
        s.total_steps = t.changed_total
    s.step = t.max_step
    s.elapsed_s = t.elapsed
    if isinstance(t.train, TrainStep):
        s.train_loss, s.tokens = t.train.train_loss, t.train.tokens or s.tokens
        if math.isfinite(t.train.elapsed_s):
            s.elapsed_s = t.train.elapsed_s if not math.isfinite(s.elapsed_s) else max(s.elapsed_s, t.train.elapsed_s)
    elif isinstance(t.train, tuple):
        s.train_loss = t.train[1]
    return t


def _take_line(t: Tail, raw: bytes) -> None:
    d = decode(raw)
    if type(d) is dict:
        _take(t, read_object(d))


def _take(t: Tail, got: Any) -> None:
    """One record of the tail, newest first."""
    if isinstance(got, tuple):  # someone else's train point
        t.any = True
        t.max_step = max(t.max_step, got[0])
        if t.train is None:
            t.train = got
        return
    if not isinstance(got, Record):
        return
    t.any = True
    t.max_step = max(t.max_step, got.step)
    elapsed = getattr(got, "elapsed_s", NAN)
    if isinstance(elapsed, (int, float)) and math.isfinite(elapsed):
        t.elapsed = elapsed if not math.isfinite(t.elapsed) else max(t.elapsed, elapsed)
    if isinstance(got, TrainStep):
        if t.train is None:
            t.train = got
    elif isinstance(got, Change):
        if got.key == "steps" and type(got.new) is int and t.start is None and not t.changed_total:
            t.changed_total = got.new
    elif isinstance(got, (Paused, Resumed)):
        if not t.state_seen:
            t.state_seen = True
            t.paused = got if isinstance(got, Paused) else None
    if isinstance(got, RunEnd):
        if t.ended is None:
            t.ended, t.end = True, got
    elif isinstance(got, (TrainStep, Eval, RunStart)) or got.type == "checkpoint":
        if t.ended is None:
            t.ended = False
    if isinstance(got, RunStart) and t.start is None:
        t.start = got


def status_of(s: RunSummary, t: Tail, live: bool, empty: bool) -> str:
    if live:
        return "paused" if t.paused is not None else "running"
    if t.end is not None and t.ended:
        return t.end.status
    if empty or not t.any:
        return "empty"
    if s.foreign:
        return "log"
    return "crashed"

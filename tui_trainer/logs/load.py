"""One log read whole into a ``RunSeries``: a replay, or the start of a follow.

``read_whole`` reads from the start in chunks (memory is one chunk plus the
bounded series); a log a resume wrote over is read twice, the second time
dropping what the resume superseded (``resumes.py``).  ``preview`` samples a
big file in a few milliseconds so a first frame shows while the full read
runs.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ..records import RunStart, TrainStep
from ..curves.series import RunSeries
from .formats.hugging_face import TrainerState
from .parsing import Item, LineParser, ReadCounts, TrainBlock
from .paths import LogError, display_name, locate
from .resumes import cutoffs
from .tail import CHUNK, StateTail, Tail, open_tail

PREVIEW_POINTS = 2000
RECENT_BYTES = 256 << 10  # the end of a log read for its recent pace


def apply_items(series: RunSeries, items: list[Item]) -> None:
    """Fold parsed items into a series, in file order."""
    for it in items:
        if isinstance(it, TrainBlock):
            if it.last is not None:
                series.extend_train(it.steps[:-1], it.losses[:-1], it.lrs[:-1])
                series.apply(it.last)
            else:
                series.extend_train(it.steps, it.losses, it.lrs)
                if series.state == "starting":
                    series.state = "running"
        else:
            if isinstance(it, TrainStep) and series.state == "starting":
                series.state = "running"
            series.apply(it)


def read_whole(tail: Tail, name: str, follow: bool, stop: threading.Event | None = None, *,
               then_resumed: int | None = None) -> tuple[RunSeries, LineParser] | None:
    """The file ``tail`` has open, read from its start into a fresh series,
    and the parser that read it (its ``counts`` say what was read); None if
    ``stop`` was set.  ``follow``: the file is still growing (a torn last line
    is left for later, and a log without a run_end is not finished; the rate
    estimator is fed the latest session's recent steps).  ``then_resumed``:
    the step of a resume that comes after what is read (a resumed run's
    history, ``logs/history.py``), which supersedes as any resume does."""
    series, parser = _read(tail, name, follow, stop, None)
    resumes = parser.resumes + ([then_resumed] if then_resumed is not None else [])
    if series is not None and (parser.supersedes or then_resumed is not None and then_resumed < parser.max_step):
        # A resumed run rewrote steps an earlier session had logged: read
        # again, dropping what the resume superseded.
        tail.open()
        series, parser = _read(tail, name, follow, stop, cutoffs(resumes))
    if series is None:
        return None
    series.bad_lines = parser.counts.bad
    if follow and type(tail) is Tail:
        series.seed_rates(recent_train(tail))
    if isinstance(tail, StateTail) and tail.state is not None:
        state_figures(series, tail.state)
    elif not follow and not series.total_steps and not series.ended:
        # Someone else's log (no run_start/run_end): read to its end, it is a finished file.
        series.state, series.total_steps = "finished", series.step
    return series, parser


def state_figures(series: RunSeries, state: TrainerState) -> None:
    """A trainer_state.json's length and status: a snapshot that reached
    ``max_steps`` (or names none) is a finished run; an earlier one is where a
    run was at that checkpoint, which may still be training (the viewer says
    "log", as for any log no process of ours holds)."""
    series.total_steps = state.max_steps or max(series.step, state.global_step or 0)
    if state.finished or not state.max_steps:
        series.state = "finished"
    series.detail = state.describe()


def _read(tail: Tail, name: str, follow: bool, stop: threading.Event | None, cuts: list[int] | None
          ) -> tuple[RunSeries | None, LineParser]:
    parser = LineParser(bulk=True, counts=ReadCounts(), cutoffs=cuts)
    series = RunSeries(name)
    while True:
        if stop is not None and stop.is_set():
            return None, parser
        buf = tail.read_chunk(CHUNK)
        if buf is None:
            break
        apply_items(series, parser.feed_chunk(buf))
    if not follow:
        apply_items(series, read_last_line(tail, parser))
    return series, parser


def recent_train(tail: Tail, back: int = RECENT_BYTES) -> list[TrainStep]:
    """The train records of the last ``back`` bytes read, after the last
    ``run_start`` among them (the latest session's), oldest first."""
    if tail.fd is None:
        return []
    start = max(0, tail.offset - back)
    buf = os.pread(tail.fd, tail.offset - start, start)
    lines = buf.split(b"\n")[1 if start else 0:-1]  # whole lines only
    out: list[TrainStep] = []
    for it in LineParser(bulk=False).feed(lines):
        if isinstance(it, RunStart):
            out.clear()
        elif isinstance(it, TrainStep):
            out.append(it)
    return out


def read_last_line(tail: Tail, parser: LineParser) -> list[Item]:
    """A finished file's last line when it has no newline: read if it reads,
    else counted as torn (a write cut short), not as a bad line."""
    rest = tail.take_partial()
    if not rest.strip():
        return []
    c = parser.counts
    before = c.bad
    items = parser.feed([rest])
    if c.bad > before:
        c.bad, c.lines, c.torn_tail = before, c.lines - 1, True
        c.first_bad = c.first_bad[:before]
    return items


def load_series(path: Path, name: str | None = None) -> tuple[RunSeries, ReadCounts]:
    """Read a whole log at once (replay): the series and what was read."""
    log = locate(path)
    tail = open_tail(log) if log is not None else None
    if tail is None or not tail.open():
        raise LogError(f"{path} does not exist")
    try:
        got = read_whole(tail, display_name(path), follow=False)
    finally:
        tail.close()
    assert got is not None
    series, parser = got
    if name:
        series.name = name
    return series, parser.counts


def preview(path: Path, name: str, points: int = PREVIEW_POINTS) -> RunSeries | None:
    """A quick look at a big log: ``points`` train lines sampled evenly through
    the file (a few ms), shown while the full read runs."""
    if isinstance(open_tail(path), StateTail):
        return None  # one JSON document: no line of it reads alone
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        lines = []
        for k in range(points):
            off = size * k // points
            buf = os.pread(fd, 2048, off)
            start = 0 if off == 0 else buf.find(b"\n") + 1
            end = buf.find(b"\n", start)
            if start <= 0 and off or end < 0:
                continue
            lines.append(buf[start:end])
    finally:
        os.close(fd)
    series = RunSeries(name)
    for it in LineParser(bulk=True).feed(lines):
        if isinstance(it, TrainBlock):
            order = np.argsort(it.steps, kind="stable")
            series.extend_train(it.steps[order], it.losses[order], it.lrs[order])
    if not len(series.loss) and not len(series.lr_curve):
        return None
    series.state = "starting"
    series.detail = "preview"
    return series


def has_plottable(path: Path, limit: int = 1 << 30) -> bool:
    """True as soon as the log holds one train point or eval (reads no more)."""
    parser = LineParser(bulk=True)
    tail = open_tail(path)
    if not tail.open():
        return False
    try:
        read, chunk = 0, 1 << 14  # small first: a log's first lines usually settle it
        while read < limit:
            lines = tail.read(chunk)
            if lines is None:
                break
            read += chunk
            chunk = min(chunk * 4, 1 << 20)
            parser.feed(lines)
            if parser.counts.plottable:
                return True
        parser.feed([tail.take_partial()])
        return parser.counts.plottable > 0
    finally:
        tail.close()

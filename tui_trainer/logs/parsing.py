"""Turning complete lines of a log into items: blocks of train points and records.

A line is read as strict JSON (orjson: no NaN, no 1e400, UTF-8) and offered
to the formats (``formats/``).  A line that is not strict JSON, not an
object, or has a wrong type where a number belongs is skipped and counted,
never fatal; a blank line is skipped and not counted.

Two ways in, one set of rules.  ``feed`` reads lines one by one.
``feed_chunk`` takes a chunk of complete lines and, on a whole-file load,
first tries ``chunks.decode`` (msgspec, the whole chunk at once); any line
that is not a plain train line of ours goes through the same per-line step
(``_line``) as ``feed``.  Either way a train line of ours is recognised by
``formats.ours.train_point`` alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from ..records import Eval, Paused, Record, Resumed, RunEnd, RunStart, Status, TrainStep, from_dict
from .chunks import FastTrain, columns
from .chunks import decode as decode_chunk
from .formats import BAD, IGNORED, nanogpt
from .formats import read as read_object
from .formats.ours import train_point
from .resumes import kept, resume_step

NAN = math.nan
_STATE_RECORDS = (Paused, Resumed, Status)
_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark
BLANK = object()


@dataclass
class TrainBlock:
    """Consecutive train points of a log, as arrays for ``RunSeries.extend_train``.
    ``last`` is the final point as a full record when it is one of ours (it
    carries the tokens/sec, elapsed and token count the status line shows)."""

    steps: np.ndarray
    losses: np.ndarray
    lrs: np.ndarray
    last: TrainStep | None = None


Item = TrainBlock | Record


@dataclass
class ReadCounts:
    lines: int = 0          # non-blank lines seen
    bad: int = 0            # lines that were not a readable record
    ignored: int = 0        # readable objects with nothing to plot (no step, a summary, ...)
    first_bad: list[int] = field(default_factory=list)  # line numbers of the first few bad lines
    plottable: int = 0      # train points and evals kept
    torn_tail: bool = False  # the file ended in a line without its newline that did not read

    def bad_line(self, lineno: int) -> None:
        self.bad += 1
        if len(self.first_bad) < 10:
            self.first_bad.append(lineno)

    def describe(self) -> str:
        if not self.bad:
            return ""
        where = ", ".join(str(n) for n in self.first_bad[:3])
        return f"{self.bad:,} bad line{'s' if self.bad != 1 else ''} skipped (line {where}{'…' if self.bad > 3 else ''})"


def decode(raw: bytes, first: bool = False) -> Any:
    """One line's JSON value; ``BLANK`` for a blank line, ``formats.BAD`` for
    one that is not strict JSON.  ``first``: the file's first line, which may
    start with a byte-order mark."""
    if not raw:
        return BLANK
    try:
        return orjson.loads(raw)
    except (orjson.JSONDecodeError, RecursionError):  # orjson refuses depth > 1024 itself
        pass
    if raw.isspace():
        return BLANK
    if first and raw.startswith(_BOM):
        return decode(raw[3:])
    got = nanogpt.from_text(raw)  # a line of nanoGPT's printed log, as an object
    return BAD if got is None else BLANK if got is nanogpt.NOTE else got


class LineParser:
    """Turns complete lines of a log into items: ``TrainBlock``s and records.

    ``bulk``: consecutive train lines become one ``TrainBlock`` (a whole-file
    load); otherwise each becomes a ``TrainStep`` (the few lines a followed
    file grows by per poll, which the app applies one by one).

    ``cutoffs`` applies the resume rule (``resumes.py``) on a second read:
    entry k is the cutoff for the records before the k-th resumed
    ``run_start``; a record read there with a step above it is dropped.
    """

    def __init__(self, bulk: bool = True, counts: ReadCounts | None = None,
                 cutoffs: list[int] | None = None):
        self.bulk = bulk
        self.counts = counts if counts is not None else ReadCounts()
        self.lineno = 0
        self.max_step = -1               # the highest step seen so far
        self.resumes: list[int] = []     # step of each resumed run_start, in file order
        self.supersedes = False          # some resume dropped records read before it
        self.cutoffs = cutoffs
        self._cut = cutoffs[0] if cutoffs else None
        self._rows: list[tuple] = []     # (step, loss, lr) of consecutive train lines
        self._pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # arrays pending before _rows
        self._npieces = 0                # points in _pieces
        self._last: dict | bytes | None = None  # the last train line kept (bytes: not parsed yet)
        self._mark: tuple[int, int] | None = None  # (points pending, item index) at the last state record
        self._items: list[Item] = []

    def feed(self, lines: list[bytes]) -> list[Item]:
        """Complete lines, without their newlines."""
        items: list[Item] = []
        self._items = items
        lineno = self.lineno
        blank = 0
        for raw in lines:
            lineno += 1
            if not self._line(raw, lineno):
                blank += 1
        self.counts.lines += len(lines) - blank
        self.lineno = lineno
        self._flush()
        self._items = []
        return items

    def feed_chunk(self, buf: bytes) -> list[Item]:
        """Complete lines, each ending in a newline, as one buffer: the same
        items and counts as ``feed(buf.split(b"\\n")[:-1])``, faster."""
        if not buf:
            return []
        got = decode_chunk(buf, self.lineno == 0) if self.bulk else None
        if got is None:
            lines = buf.split(b"\n")
            if not lines[-1]:
                lines.pop()
            return self.feed(lines)
        rows, nl = got
        items: list[Item] = []
        self._items = items
        slow = [i for i, r in enumerate(rows) if type(r) is not FastTrain]
        train = [r for r in rows if type(r) is FastTrain] if slow else rows
        steps, losses, lrs = columns(train)
        lineno = self.lineno
        at = k = 0  # next row, next train point
        for i in slow + [len(rows)]:
            if i > at:  # rows at..i-1 are train points k..
                self._add_fast(buf, nl, at, steps[k:k + i - at], losses[k:k + i - at], lrs[k:k + i - at])
                k += i - at
            if i < len(rows):
                self._line(buf[nl[i - 1] + 1 if i else 0:nl[i]], lineno + i + 1)
            at = i + 1
        self.counts.lines += len(rows)
        self.lineno = lineno + len(rows)
        self._flush()
        self._items = []
        return items

    def _line(self, raw: bytes, lineno: int) -> bool:
        """One line (without its newline); False when it is blank."""
        d = decode(raw, lineno == 1)
        if d is BLANK:
            return False
        if d is BAD:
            self.counts.bad_line(lineno)
            return True
        # The hot path: one of our train lines, three numbers kept, no object built.
        point = train_point(d) if self.bulk and type(d) is dict else None
        if point is None:
            self._other(d, lineno)
        elif kept(point[0], self._cut):
            self._rows.append(point)
            self._last = d
        return True

    def _add_fast(self, buf: bytes, nl: np.ndarray, first: int, steps: np.ndarray, losses: np.ndarray,
                  lrs: np.ndarray) -> None:
        """Train points of rows ``first``.. (fast path), after the resume cutoff."""
        last = len(steps) - 1
        if self._cut is not None:
            keep = steps <= self._cut  # resumes.kept, for an array
            if not keep.all():
                idx = np.flatnonzero(keep)
                if not len(idx):
                    return
                last = int(idx[-1])
                steps, losses, lrs = steps[keep], losses[keep], lrs[keep]
        if self._rows:
            self._pieces.append(_arrays(self._rows))
            self._rows.clear()
        self._pieces.append((steps, losses, lrs))
        self._npieces += len(steps)
        row = first + last
        self._last = buf[nl[row - 1] + 1 if row else 0:nl[row]]

    def _other(self, d: Any, lineno: int) -> None:
        """Everything but a well-formed train line of ours in bulk."""
        c, cut, items = self.counts, self._cut, self._items
        got = read_object(d) if type(d) is dict else BAD
        if got is BAD:
            c.bad_line(lineno)
        elif got is IGNORED:
            c.ignored += 1
        elif isinstance(got, Record):
            resumed = resume_step(got)
            if resumed is not None:
                self._flush()  # order matters here: the points read before the resume
                self.supersedes |= resumed < self.max_step
                self.resumes.append(resumed)
                if self.cutoffs is not None:
                    k = len(self.resumes)
                    self._cut = self.cutoffs[k] if k < len(self.cutoffs) else None
            if not kept(got.step, cut):  # the cutoff in force before this line
                return
            if isinstance(got, (RunStart, RunEnd)):
                self._flush()
            elif isinstance(got, _STATE_RECORDS):
                self._mark = (self._npieces + len(self._rows), len(items))
            self.max_step = max(self.max_step, got.step)
            if isinstance(got, TrainStep) or (isinstance(got, Eval) and math.isfinite(got.val_loss)):
                c.plottable += 1
            items.append(got)
        elif not kept(got[0], cut):  # someone else's train point
            pass
        elif self.bulk:
            self._rows.append(got)
        else:
            self.max_step = max(self.max_step, got[0])
            c.plottable += 1
            items.append(TrainStep(step=got[0], train_loss=got[1], lr=got[2], tokens_per_sec=NAN,
                                   grad_norm=NAN, elapsed_s=NAN, time=NAN))

    def _flush(self) -> None:
        rows, pieces, last, mark = self._rows, self._pieces, self._last, self._mark
        self._last = self._mark = None
        if not rows and not pieces:
            return
        if rows:
            pieces.append(_arrays(rows))
            rows.clear()
        if len(pieces) == 1:
            s, l, r = pieces[0]
        else:
            s, l, r = (np.concatenate(c) for c in zip(*pieces))
        pieces.clear()
        self._npieces = 0
        self.max_step = max(self.max_step, int(s.max()))
        self.counts.plottable += len(s)
        if mark is not None and mark[0] > 0:
            # The points read before the last state record (pause, resume,
            # status) go before it, or a paused run would read as running.
            k, at = mark
            before = TrainBlock(s[:k], l[:k], r[:k])
            s, l, r = s[k:], l[k:], r[k:]
            self._items.insert(at, before)
            if not len(s):
                before.last = _full(last, before.steps[-1])
                return
        block = TrainBlock(s, l, r)
        block.last = _full(last, s[-1])
        self._items.append(block)


def _full(last: dict | bytes | None, step: float) -> TrainStep | None:
    """The last train line as a full record, when it is the block's last point."""
    if isinstance(last, bytes):
        last = decode(last)
    if type(last) is dict and last.get("step") == step:
        rec = from_dict(last)
        return rec if isinstance(rec, TrainStep) else None
    return None


def _arrays(rows: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.array(rows, dtype=np.float64)  # None (a null loss or lr) becomes NaN
    return a[:, 0], a[:, 1], a[:, 2]

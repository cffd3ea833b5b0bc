"""The best val loss of a log, from its eval lines alone.

The only pass over a whole log: the lines that may be an eval (ours, flat,
Hugging Face), a ``run_start`` or a ``change`` are found by a byte search and
parsed alone; a log that grew is searched on from where the last search
stopped.  Resumes are applied (``logs.resumes``): an eval a resume superseded
does not count."""
from __future__ import annotations

import math
import os
import re
from typing import Any

import numpy as np

from ..logs.formats import read as read_object
from ..logs.parsing import decode
from ..logs.resumes import cutoffs, kept
from ..records import Change, Eval, RunStart
from ..run.log_writer import LOG_NAME
from .summary import NAN, Entry

SCAN_CHUNK = 8 << 20     # the search reads this much at a time
# A line that may be an eval (ours, flat, Hugging Face), a run_start or a change holds one of these.
_SCAN_KEYS = re.compile(rb'"(?:val_loss|eval_loss|run_start|change)"')


def search_evals(entry: Entry) -> None:
    """Search the log's bytes not searched yet for eval, run_start and change
    lines; parse only those; update the best val loss."""
    s = entry.summary
    if not entry.key:
        return
    size = entry.key[2]
    ident = entry.key[:2]
    if entry.scanned >= size and entry.ident == ident:
        apply_search(entry)
        return
    try:
        fd = os.open(s.path / LOG_NAME, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        if os.fstat(fd).st_ino != ident[1]:
            return  # replaced since the stat: the next scan starts again
        off = entry.scanned
        carry = b""
        while off < size:
            buf = carry + os.pread(fd, min(SCAN_CHUNK, size - off), off)
            got = len(buf) - len(carry)
            if not got:
                break
            off += got
            end = buf.rfind(b"\n") + 1
            if off >= size and end < len(buf) and not (entry.live or False):
                end = len(buf)  # a finished log's last line without its newline
            _search(entry, buf[:end])
            carry = buf[end:]
            if len(carry) > SCAN_CHUNK:
                carry = b""  # junk without newlines: nothing to find in it
        entry.scanned = off - len(carry)
        entry.ident = ident
    finally:
        os.close(fd)
    apply_search(entry)


def _search(entry: Entry, buf: bytes) -> None:
    """Parse the lines of ``buf`` (complete lines) that may be an eval, a
    run_start or a change."""
    for start, end in candidates(buf, b"erc", _SCAN_KEYS):
        d = decode(buf[start:end])
        if type(d) is not dict:
            continue
        step, val = d.get("step"), d.get("val_loss")
        if d.get("type") == "eval" and type(step) is int and type(val) in (int, float):
            got: Any = None  # the common case, an eval of ours: its two numbers, no record built
            if math.isfinite(val):
                bpb = d.get("val_bpb")
                bpb = float(bpb) if type(bpb) in (int, float) else NAN
                entry.evals.append((step, float(val), len(entry.resumes), bpb))
        else:
            got = read_object(d)
        if isinstance(got, Eval):
            if math.isfinite(got.val_loss):
                bpb = NAN if got.val_bpb is None else float(got.val_bpb)
                entry.evals.append((got.step, got.val_loss, len(entry.resumes), bpb))
        elif isinstance(got, RunStart):
            entry.total = got.total_steps
            if got.resumed:
                entry.resumes.append(got.step)
        elif isinstance(got, Change) and got.key == "steps" and type(got.new) is int:
            entry.total = got.new


_OURS = np.frombuffer(b'{"type":"', np.uint8)   # how every line our writer writes starts


def candidates(buf: bytes, letters: bytes, keys: re.Pattern) -> list[tuple[int, int]]:
    """(start, end) of the lines of ``buf`` that may be wanted, in file order.

    When every line is ours (the usual case) numpy finds them: the letter
    after ``{"type":"`` starts the record type, so only lines whose type
    starts with one of ``letters`` are parsed (e, r, c: eval, run_start,
    change, and run_end, resume, checkpoint, which the reader drops).
    Anything else (someone else's log, a line of junk) is searched for
    ``keys`` by regex, line by line of those that hold one."""
    if not buf:
        return []
    a = np.frombuffer(buf, np.uint8)
    nl = np.flatnonzero(a == 10)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(buf)]))
    full = ends > starts
    starts, ends = starts[full], ends[full]
    if len(starts) and not (ends - starts <= len(_OURS)).any():
        ours = a[starts] == _OURS[0]
        for k in range(1, len(_OURS)):
            ours &= a[starts + k] == _OURS[k]
        if ours.all():
            wanted = np.zeros(256, dtype=bool)
            wanted[list(letters)] = True
            pick = wanted[a[starts + len(_OURS)]]
            return list(zip(starts[pick].tolist(), ends[pick].tolist()))
    out = []
    last = -1
    for m in keys.finditer(buf):
        if m.start() < last:
            continue  # a second key on a line already taken
        start = buf.rfind(b"\n", 0, m.start()) + 1
        nl_at = buf.find(b"\n", m.end())
        last = nl_at if nl_at >= 0 else len(buf)
        out.append((start, last))
    return out


def apply_search(entry: Entry) -> None:
    """The best val loss (after resumes) and the total steps the searched lines say."""
    cuts = cutoffs(entry.resumes)
    best, at, bpb = NAN, None, NAN
    for step, val, k, b in entry.evals:
        if kept(step, cuts[k] if k < len(cuts) else None) and not val >= best:
            best, at, bpb = val, step, b
    s = entry.summary
    s.best_val, s.best_step, s.best_bpb, s.evals_read = best, at, bpb, True
    if entry.total:
        s.total_steps = entry.total

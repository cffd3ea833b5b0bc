"""A folder of runs at a glance: each run folder summarised from a few reads.

No Textual here.  ``scan(folder)`` lists the run folders directly inside
``folder`` as ``RunSummary`` rows (what the runs browser shows); a
``Scanner`` does the same again and again, cheaply, for a browser that keeps
its table up to date.

What is read of a log, never all of it:

- the head: its first line, the ``run_start`` (name, settings, start date);
- the tail: the last 64 KiB, more only when it holds no train line (step,
  last train loss, tokens, wall time, how it ended);
- the lines that can hold an eval, a ``run_start`` or a ``change`` (best val
  loss and its step, resumes, a changed total), found by a byte search for
  their keys; only those lines are parsed.  This pass is the only one that
  touches the whole file, it is separate (``Scanner.scan(evals=False)`` lists
  without it) and it is incremental: a log that grew is searched from where
  the last search stopped.

A run's status is ``running`` (or ``paused``) only when a process holds its
lock (``rundir.is_live``), never guessed from the log; otherwise how its last
session ended (``run_end.status``: finished, stopped, diverged, failed,
killed), or ``crashed`` when that session wrote no ``run_end``.  A log that is
not ours (no ``run_start``) is ``log``; a log with no record yet is ``empty``.

A folder that cannot be listed as a run (no log, unreadable, a binary file)
is still returned, with ``problem`` saying why, so the browser can say what
it skipped; a folder name that is not UTF-8 is shown with its odd bytes as
``\\xNN`` (``records.clean_text``) and still read.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import RESUMABLE_CHANGES
from .logs.formats import read as read_object
from .logs.parsing import BLANK, decode
from .logs.paths import is_binary
from .logs.resumes import cutoffs, kept
from .records import Change, Eval, Paused, Record, Resumed, RunEnd, RunStart, TrainStep, clean_text
from .rundir import is_live
from .runlog import LOG_NAME

HEAD_BYTES = 1 << 13     # the first line (run_start) is read from this much, more if it is longer
HEAD_MAX = 1 << 22
TAIL_BYTES = 1 << 16     # the last records: this much, four times more while no train line is in it
TAIL_MAX = 1 << 22
SCAN_CHUNK = 8 << 20     # the eval search reads this much at a time
# A line that may be an eval (ours, flat, Hugging Face), a run_start or a change holds one of these.
_SCAN_KEYS = re.compile(rb'"(?:val_loss|eval_loss|run_start|change)"')
# Rare records the tail is searched for, wherever they are in it.
_TAIL_RARE = re.compile(rb'"(?:run_start|change|pause|resume)"')
LABEL_MAX = 12           # characters of a label: the eval table shows 12 of a run's name
NOT_SETTINGS = frozenset({"out", "name"})  # differ between any two runs: not a setting that made them differ
LIVE = ("running", "paused")
ENDED = ("finished", "stopped", "diverged", "failed", "killed")
NAN = math.nan


@dataclass
class RunSummary:
    """One run folder as the runs browser shows it."""

    path: Path                 # the run folder
    folder: str                # its name, printable (odd bytes as \\xNN)
    run_name: str = ""         # run_start.run_name, else the folder's name
    label: str = ""            # the shortest distinct part of the names of the runs listed with it
    status: str = ""           # see the module docstring
    step: int = 0
    total_steps: int = 0
    best_val: float = NAN
    best_step: int | None = None
    train_loss: float = NAN
    tokens: int = 0
    elapsed_s: float = NAN
    started: float = NAN       # epoch seconds of its first run_start (NaN: unknown)
    config: dict[str, Any] = field(default_factory=dict)
    problem: str = ""          # why this folder is not a run to list ("" when it is one)
    evals_read: bool = False   # the eval search has run: best_val is known
    foreign: bool = False      # someone else's log (no run_start)
    size: int = 0              # bytes of its log when read

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def live(self) -> bool:
        return self.status in LIVE


@dataclass
class _Entry:
    """What a ``Scanner`` remembers of one folder between scans."""

    summary: RunSummary
    key: tuple = ()                      # (dev, ino, size, mtime_ns) of the log when last read
    live: bool | None = None
    scanned: int = 0                     # bytes of the log the eval search has covered
    ident: tuple[int, int] | None = None  # (dev, ino) the search covered
    evals: list[tuple[int, float, int]] = field(default_factory=list)  # (step, val, resumes before it)
    resumes: list[int] = field(default_factory=list)
    total: int = 0                       # the total steps the searched lines say, 0: none


class Scanner:
    """Scans one folder of runs, again and again, re-reading only what changed.

    A folder whose log has the same size and mtime as last time, and whose
    lock is in the same state, is not read again; a log that grew has its
    head and tail read again and only its new bytes searched for evals.  New
    folders appear, removed ones go.  Use from one thread at a time; the
    summaries handed out are copies, never changed afterwards.
    """

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        self._entries: dict[bytes, _Entry] = {}
        self.error = ""   # why the folder itself could not be listed, if it could not

    def scan(self, evals: bool = True) -> list[RunSummary]:
        """Every folder directly inside, sorted by name; with ``evals`` the
        best val loss too (the one pass that searches whole logs)."""
        names = self._list()
        seen = {}
        for raw in names:
            entry = self._entries.get(raw)
            if entry is None:
                path = Path(os.fsdecode(os.path.join(os.fsencode(self.folder), raw)))
                entry = _Entry(RunSummary(path, clean_text(os.fsdecode(raw))))
            _refresh(entry)
            if evals and entry.summary.ok:
                _search_evals(entry)
            seen[raw] = entry
        self._entries = seen
        out = [dataclasses.replace(e.summary) for e in seen.values()]
        label(out)
        return out

    def _list(self) -> list[bytes]:
        try:
            with os.scandir(os.fsencode(self.folder)) as it:
                names = []
                for d in it:
                    try:
                        if d.is_dir() and not d.name.startswith(b"."):
                            names.append(d.name)
                    except OSError:
                        continue
        except OSError as e:
            self.error = f"cannot list {clean_text(str(self.folder))}: {e.strerror or e}"
            return []
        self.error = ""
        return sorted(names)


def scan(folder: str | os.PathLike[str], evals: bool = True) -> list[RunSummary]:
    """The runs (and skipped folders, with ``problem`` set) directly inside ``folder``."""
    return Scanner(folder).scan(evals)


# --- one folder -----------------------------------------------------------------

def _refresh(entry: _Entry) -> None:
    s = entry.summary
    log = s.path / LOG_NAME
    try:
        st = os.stat(log)
    except FileNotFoundError:
        entry.key, entry.live = (), None
        _reset(entry, problem=f"no {LOG_NAME}")
        return
    except OSError as e:
        entry.key, entry.live = (), None
        _reset(entry, problem=f"cannot read: {(e.strerror or str(e)).lower()}")
        return
    if not stat.S_ISREG(st.st_mode):
        _reset(entry, problem=f"{LOG_NAME} is not a regular file")
        return
    live = is_live(s.path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key == entry.key and live == entry.live and s.ok:
        return
    if entry.ident is not None and (entry.ident != key[:2] or st.st_size < entry.scanned):
        _reset(entry)  # replaced or truncated: search it again from the start
    try:
        fd = os.open(log, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        _reset(entry, problem=f"cannot read: {(e.strerror or str(e)).lower()}")
        return
    try:
        _read(entry, fd, st.st_size, live)
    except OSError as e:
        _reset(entry, problem=f"cannot read: {(e.strerror or str(e)).lower()}")
        return
    finally:
        os.close(fd)
    entry.key, entry.live = key, live


def _reset(entry: _Entry, problem: str = "") -> None:
    old = entry.summary
    entry.summary = RunSummary(old.path, old.folder, run_name=old.folder, problem=problem,
                               status="" if not problem else "skipped")
    entry.scanned, entry.ident, entry.evals, entry.resumes, entry.total = 0, None, [], [], 0


def _read(entry: _Entry, fd: int, size: int, live: bool) -> None:
    s = entry.summary
    head = os.pread(fd, HEAD_BYTES, 0)
    if is_binary(head[:8192]):
        _reset(entry, problem=f"{LOG_NAME} is a binary file")
        return
    s.problem, s.size = "", size
    first = _first_object(fd, head, size)
    start = _as_record(first)
    if isinstance(start, RunStart):
        s.foreign = False
        s.run_name = clean_text(start.run_name) or s.folder
        s.started = start.time if math.isfinite(start.time) else NAN
        s.config, s.total_steps = dict(start.config), start.total_steps
    else:
        s.foreign, s.run_name, s.config = first is not None, s.folder, {}
    tail = _read_tail(s, fd, size)
    s.status = _status(s, tail, live, first is None)
    if entry.ident is not None:
        _apply_search(entry)  # what the last search found still holds for the bytes it covered


def _first_object(fd: int, head: bytes, size: int) -> dict | None:
    """The first JSON object of the log (its first non-blank line), None if none."""
    buf, off = head, 0
    while True:
        end = buf.find(b"\n", off)
        if end < 0:
            if len(buf) >= size or len(buf) >= HEAD_MAX:
                line = buf[off:]
                if not line.strip():
                    return None
            else:
                buf = os.pread(fd, min(HEAD_MAX, 4 * len(buf)), 0)
                continue
        else:
            line = buf[off:end]
        d = decode(line, first=off == 0)
        if d is BLANK and end >= 0:
            off = end + 1
            continue
        return d if type(d) is dict else None


class _Tail:
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


def _read_tail(s: RunSummary, fd: int, size: int) -> _Tail:
    n = TAIL_BYTES
    while True:
        off = max(0, size - n)
        buf = os.pread(fd, size - off, off)
        begin = buf.find(b"\n") + 1 if off > 0 else 0  # it starts mid-line
        t = _Tail()
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
        for ls, le in reversed(_candidates(buf[begin:oldest], b"rcp", _TAIL_RARE)):
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


def _take_line(t: _Tail, raw: bytes) -> None:
    d = decode(raw)
    if type(d) is dict:
        _take(t, read_object(d))


def _take(t: _Tail, got: Any) -> None:
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


def _status(s: RunSummary, t: _Tail, live: bool, empty: bool) -> str:
    if live:
        return "paused" if t.paused is not None else "running"
    if t.end is not None and t.ended:
        return t.end.status
    if empty or not t.any:
        return "empty"
    if s.foreign:
        return "log"
    return "crashed"


def _as_record(d: dict | None) -> Any:
    return read_object(d) if d is not None else None


# --- the eval search ---------------------------------------------------------------

def _search_evals(entry: _Entry) -> None:
    """Search the log's bytes not searched yet for eval, run_start and change
    lines; parse only those; update the best val loss."""
    s = entry.summary
    if not entry.key:
        return
    size = entry.key[2]
    ident = entry.key[:2]
    if entry.scanned >= size and entry.ident == ident:
        _apply_search(entry)
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
    _apply_search(entry)


def _search(entry: _Entry, buf: bytes) -> None:
    """Parse the lines of ``buf`` (complete lines) that may be an eval, a
    run_start or a change."""
    for start, end in _candidates(buf, b"erc", _SCAN_KEYS):
        d = decode(buf[start:end])
        if type(d) is not dict:
            continue
        step, val = d.get("step"), d.get("val_loss")
        if d.get("type") == "eval" and type(step) is int and type(val) in (int, float):
            got: Any = None  # the common case, an eval of ours: its two numbers, no record built
            if math.isfinite(val):
                entry.evals.append((step, float(val), len(entry.resumes)))
        else:
            got = read_object(d)
        if isinstance(got, Eval):
            if math.isfinite(got.val_loss):
                entry.evals.append((got.step, got.val_loss, len(entry.resumes)))
        elif isinstance(got, RunStart):
            entry.total = got.total_steps
            if got.resumed:
                entry.resumes.append(got.step)
        elif isinstance(got, Change) and got.key == "steps" and type(got.new) is int:
            entry.total = got.new


_OURS = np.frombuffer(b'{"type":"', np.uint8)   # how every line our writer writes starts


def _candidates(buf: bytes, letters: bytes, keys: re.Pattern) -> list[tuple[int, int]]:
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


def _apply_search(entry: _Entry) -> None:
    """The best val loss (after resumes) and the total steps the searched lines say."""
    cuts = cutoffs(entry.resumes)
    best, at = NAN, None
    for step, val, k in entry.evals:
        if kept(step, cuts[k] if k < len(cuts) else None) and not val >= best:
            best, at = val, step
    s = entry.summary
    s.best_val, s.best_step, s.evals_read = best, at, True
    if entry.total:
        s.total_steps = entry.total


# --- labels and settings -------------------------------------------------------------

# A separator between the words of a name: - _ space /, but not the minus of 3e-4.
_SEP = re.compile(r"[_ /]+|(?<![0-9]e)-+")


def short_labels(names: list[str], limit: int = LABEL_MAX) -> list[str]:
    """The shortest distinct part of each name, in whole words.

    Each name gets the shortest run of its consecutive words that no other
    name holds (the later one when two are as short; a short number keeps the
    word before it): ``run-20261201-153012`` and
    ``run-20261201-160233`` become ``153012`` and ``160233``;
    ``gpt-lr3e-4-bs32`` and ``gpt-lr1e-3-bs32`` become ``lr3e-4`` and
    ``lr1e-3``; ``run-3`` and ``run-4`` stay as they are.  Two labels can
    never be the same, since each is a part no other name has; a name with
    no such part (the start of another name) gets its shortest ending that
    is no other's label, and a duplicate is kept whole.  A label longer than ``limit``
    keeps its end; labels that are still the same get ``#2``, ``#3``.
    """
    if len(names) < 2:
        return [_cut(n, limit) for n in names]
    parts = [_parts(n) for n in names]
    count: dict[str, int] = {}
    for ps in parts:
        for p in set(ps):
            count[p] = count.get(p, 0) + 1
    out: list[str | None] = []
    for name, ps in zip(names, parts):
        mine = [(_cost(p), -k, p) for k, p in enumerate(ps) if count[p] == 1]
        out.append(min(mine)[2] if mine else None)
    used = set(out)
    for i, (name, ps) in enumerate(zip(names, parts)):
        if out[i] is None:  # every part is in another name too (it is a prefix of one): any part not a label
            ends = [p for p in ps if name.endswith(p)]
            free = [(_cost(p), -k, p) for k, p in enumerate(ends) if p not in used]
            out[i] = min(free)[2] if free else name
            used.add(out[i])
    out = [_cut(x, limit) for x in out]
    seen: dict[str, int] = {}
    for k, x in enumerate(out):
        if x in seen:
            seen[x] += 1
            out[k] = f"{_cut(x, limit - 1 - len(str(seen[x])))}#{seen[x]}"
        else:
            seen[x] = 1
    return out


def _parts(name: str) -> list[str]:
    """Every run of consecutive words of ``name``, as written (separators kept), in order of their end."""
    spans = _words(name) or [(0, len(name))]
    return [name[spans[i][0]:spans[j][1]] for j in range(len(spans)) for i in range(j, -1, -1)]


_NUMBER = re.compile(r"[0-9.eE+-]+")


def _cost(part: str) -> int:
    """Shorter is better, but a short number alone (``3``, ``3e-4``, ``0.1``)
    says little without the word before it (``run-3``, ``lr-3e-4``); a long one
    (a date, a time) is fine alone."""
    return len(part) + (10 if len(part) < 6 and _NUMBER.fullmatch(part) else 0)


def _words(name: str) -> list[tuple[int, int]]:
    spans, at = [], 0
    for m in _SEP.finditer(name):
        if m.start() > at:
            spans.append((at, m.start()))
        at = m.end()
    if at < len(name):
        spans.append((at, len(name)))
    return spans


def _cut(s: str, limit: int) -> str:
    return s if len(s) <= limit else "…" + s[len(s) - limit + 1:]


def label(summaries: list[RunSummary]) -> None:
    """Set each run's ``label`` from the names of the runs listed with it."""
    runs = [s for s in summaries if s.ok]
    for s, lab in zip(runs, short_labels([s.run_name or s.folder for s in runs])):
        s.label = lab
    for s in summaries:
        if not s.ok:
            s.label = _cut(s.folder, LABEL_MAX)


def settings_diff(summaries: list[RunSummary]) -> dict[str, list[Any]]:
    """The settings that differ between these runs (those that are runs, ``ok``)."""
    return config_diff([s.config for s in summaries if s.ok])


def config_diff(configs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The settings that differ: {key: [value in each config]} (None where a
    config does not have the key).  Those that change what is learned (model,
    data, optimiser) come first, then the ones a resume may change (cadences,
    sampling, device: ``config.RESUMABLE_CHANGES``), each in the order the
    configs list them.  Keys that name the run itself (``out``, ``name``) are
    left out."""
    keys: dict[str, None] = {}
    for c in configs:
        keys.update(dict.fromkeys(c))
    out: dict[str, list[Any]] = {}
    for k in keys:
        if k in NOT_SETTINGS:
            continue
        values = [c.get(k) for c in configs]
        if any(_differs(values[0], v) for v in values[1:]):
            out[k] = values
    return dict(sorted(out.items(), key=lambda kv: kv[0] in RESUMABLE_CHANGES))


def _differs(a: Any, b: Any) -> bool:
    return type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))) or a != b

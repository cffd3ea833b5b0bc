"""Reading run logs back: find them, parse them, follow them as they grow.

No Textual here.  The viewer (``ui/viewer.py``) shows what this module reads;
tests and the benchmark drive it directly.

What it reads.  Our own ``losses.jsonl`` (``records.from_dict``), and any JSONL
of flat objects with a step-like key (``step``, ``iter``, ``global_step``) and
loss-like keys (``train_loss``/``loss``, ``lr``/``learning_rate``,
``val_loss``/``eval_loss``): the lesson's ``{"step", "train_loss", "lr"}``
lines and Hugging Face Trainer ``log_history`` entries written one per line.
Unknown keys are ignored.  A line that is not strict JSON, not an object, or
has a wrong type where a number belongs is skipped and counted, never fatal.

Big logs.  A million train lines must show in well under two seconds, so a
whole-file load never builds a dict or a record per train line.  Each 4 MB
chunk is decoded at once by msgspec (``decode_lines``) into small structs that
keep only a train line's step, loss and lr (every other record type keeps
nothing), the numbers go straight into numpy arrays, and only the rare other
lines (evals, samples, ...) are parsed again, one by one, by the per-line path.
A chunk the fast decoder cannot take whole (a bad line, a blank line, someone
else's format, a null loss) is read by the per-line path instead (orjson per
line), so what is skipped and counted is the same either way.  Files are read
in chunks, so memory is the chunk plus the bounded series.

Following.  As toolong does: a plain thread ``os.read``s from the last offset,
splits complete lines, keeps a torn last line until its newline arrives, and
sleeps briefly when nothing came.  Truncation, replacement (a new inode) and
a rewritten head are noticed and the file is read again from the start.  A
resumed run's log is read with the rule of ``runlog.effective_records``:
records before a resumed ``run_start`` at step S with a step above S are
superseded.
"""
from __future__ import annotations

import dataclasses
import math
import operator
import os
import queue
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import msgspec
import numpy as np
import orjson

from .config import UserError
from .records import (RECORD_TYPES, Eval, Paused, Record, Resumed, RunEnd, RunStart, Status, TrainStep,
                      from_dict)
from .runlog import LOG_NAME
from .series import RunSeries

STEP_KEYS = ("step", "iter", "global_step")
TRAIN_KEYS = ("train_loss", "loss")
LR_KEYS = ("lr", "learning_rate")
VAL_KEYS = ("val_loss", "eval_loss")
SUMMARY_KEYS = ("train_runtime",)  # HF's end-of-training summary: its train_loss is a run average

CHUNK = 4 << 20            # bytes per read: bounds the memory of a load
MAX_LINE = 16 << 20        # a "line" longer than this is junk (or a binary file): dropped
PREVIEW_BYTES = 16 << 20   # files at least this big get a quick sampled preview first
PREVIEW_POINTS = 2000
FOLLOW_SLEEP_S = 0.1       # poll interval when nothing new arrived (records show within 0.5 s)
HEAD = 256                 # bytes of the file's start remembered to notice a rewrite
NAN = math.nan
_NUM = frozenset({int, float})
_NUM_OR_NONE = frozenset({int, float, type(None)})
_STATE_RECORDS = (Paused, Resumed, Status)
_TRAIN_FIELDS = operator.itemgetter("type", "step", "train_loss", "lr")
_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark
_NL, _BRACE = ord("\n"), ord("{")


def _fast_types() -> tuple[type, msgspec.json.Decoder]:
    """The chunk decoder: a tagged union with one struct per record type of ours.

    The train struct takes exactly what the per-line hot path takes as a train
    point (step an int, loss and lr a number or null, all three present) and
    every other field of ours as any JSON, with unknown fields forbidden: so
    every byte of a train line is parsed and checked as strictly as orjson
    would (a 1e400 or bad UTF-8 anywhere fails the chunk).  The other types
    keep nothing; their lines are parsed again by orjson one by one.
    """
    rest = [(f.name, Any, msgspec.UNSET) for f in dataclasses.fields(TrainStep)
            if f.name not in ("step", "train_loss", "lr")] + [("nonfinite", Any, msgspec.UNSET)]
    train = msgspec.defstruct("_FastTrain", [("step", int), ("train_loss", Union[float, None]),
                                             ("lr", Union[float, None])] + rest,
                              tag="train", tag_field="type", forbid_unknown_fields=True)
    others = [msgspec.defstruct(f"_Fast_{t}", [], tag=t, tag_field="type") for t in RECORD_TYPES if t != "train"]
    return train, msgspec.json.Decoder(Union[tuple([train] + others)])  # type: ignore[misc]


_FastTrain, _FAST = _fast_types()
_get_step, _get_loss, _get_lr = (operator.attrgetter(n) for n in ("step", "train_loss", "lr"))


def _column(rows: list, get: Callable[[Any], Any]) -> np.ndarray:
    """One field of the fast train structs as float64 (null is NaN)."""
    try:
        return np.fromiter(map(get, rows), np.float64, len(rows))
    except TypeError:  # a null: np.array turns None into NaN
        return np.array(list(map(get, rows)), dtype=np.float64)


class LogError(UserError):
    """A log that cannot be read at all (missing, binary, unreadable, nothing to plot)."""


# --- finding the log -------------------------------------------------------

def locate(path: Path) -> Path | None:
    """The log file PATH names (itself, or DIR/losses.jsonl); None if not there yet."""
    if path.is_dir():
        log = path / LOG_NAME
        return log if log.exists() else None
    return path if path.exists() else None


def resolve(path: Path) -> Path:
    """The log file PATH names, checked readable and text; ``LogError`` says why not."""
    log = locate(path)
    if log is None:
        if path.is_dir():
            raise LogError(f"{path} is a folder without {LOG_NAME}{_runs_hint(path)}")
        raise LogError(f"{path} does not exist; pass a losses.jsonl or a run folder holding one "
                       "(or add --follow to wait for a run that has not started)")
    check_file(log)
    return log


def _runs_hint(folder: Path) -> str:
    try:
        runs = sorted(p.name for p in folder.iterdir() if (p / LOG_NAME).is_file())
    except OSError:
        runs = []
    if runs:
        more = f" and {len(runs) - 3} more" if len(runs) > 3 else ""
        return f"; it holds runs ({', '.join(runs[:3])}{more}): pass one or more of those"
    return "; pass a run folder (outputs/NAME) or its losses.jsonl"


def check_file(log: Path) -> None:
    """Raise ``LogError`` unless ``log`` is a readable regular file of text."""
    try:
        # Non-blocking: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(log, os.O_RDONLY | os.O_NONBLOCK)
    except PermissionError:
        raise LogError(f"cannot read {log}: permission denied; check its permissions (ls -l {log})") from None
    except OSError as e:
        raise LogError(f"cannot read {log}: {e.strerror or e}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LogError(f"{log} is not a regular file; pass a losses.jsonl or a run folder")
        head = os.read(fd, 8192)
    except OSError as e:
        raise LogError(f"cannot read {log}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if is_binary(head):
        raise LogError(f"{log} is a binary file, not a JSONL log; pass the run's {LOG_NAME} "
                       "(checkpoints .pt are not logs)")


def is_binary(head: bytes) -> bool:
    return b"\0" in head


def display_name(path: Path) -> str:
    """A short name for a run: its folder for DIR/losses.jsonl, else the file name."""
    p = path if not path.is_dir() else path / LOG_NAME
    return (p.parent.name or p.name) if p.name == LOG_NAME else p.name


# --- parsing lines ---------------------------------------------------------

@dataclass
class TrainBlock:
    """Consecutive train points of a log, as arrays for ``RunSeries.extend_train``.
    ``last`` is the final point as a full record when it is one of ours (it
    carries the tokens/sec, elapsed and token count the status line shows)."""

    steps: np.ndarray
    losses: np.ndarray
    lrs: np.ndarray
    last: TrainStep | None = None


Item = Union[TrainBlock, Record]


@dataclass
class ReadCounts:
    lines: int = 0          # non-blank lines seen
    bad: int = 0            # lines that were not a readable record
    ignored: int = 0        # readable objects with nothing to plot (no step, a summary, ...)
    first_bad: list[int] = field(default_factory=list)  # line numbers of the first few bad lines
    plottable: int = 0      # train points and evals kept
    torn_tail: bool = False  # the file ended in a line without its newline (replay)

    def describe(self) -> str:
        if not self.bad:
            return ""
        where = ", ".join(str(n) for n in self.first_bad[:3])
        return f"{self.bad:,} bad line{'s' if self.bad != 1 else ''} skipped (line {where}{'…' if self.bad > 3 else ''})"


class LineParser:
    """Turns complete lines of a log into items: ``TrainBlock``s and records.

    ``bulk``: consecutive train lines become one ``TrainBlock`` (a whole-file
    load); otherwise each becomes a ``TrainStep`` (the few lines a followed
    file grows by per poll, which the app applies one by one).

    ``cutoffs`` applies the resume rule on a second pass: entry k is the
    lowest resume step at or after the k-th resumed ``run_start``; a record
    read before it with a step above that is superseded and dropped.
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
        self._rows: list[tuple] = []
        self._pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # arrays pending before _rows
        self._npieces = 0                # points in _pieces
        self._last: dict | bytes | None = None  # the last train line kept (bytes: not parsed yet)
        self._mark: tuple[int, int] | None = None  # (rows pending, item index) at the last state record
        self._items: list[Item] = []

    def feed(self, lines: list[bytes]) -> list[Item]:
        items: list[Item] = []
        self._items = items
        rows = self._rows  # (step, loss, lr) of consecutive train lines
        loads, JSONError, fields = orjson.loads, orjson.JSONDecodeError, _TRAIN_FIELDS
        num_or_none, bulk, cut = _NUM_OR_NONE, self.bulk, self._cut
        lineno = self.lineno
        blank = 0
        for raw in lines:
            lineno += 1
            if not raw:
                blank += 1
                continue
            try:
                d = loads(raw)
            except JSONError:
                if raw.isspace():
                    blank += 1
                elif lineno == 1 and raw.startswith(_BOM):
                    self.lineno = 0
                    self.counts.lines -= 1
                    items.extend(self.feed([raw[3:]]))
                    rows = self._rows
                else:
                    self._bad(lineno)
                continue
            # The hot path: one of our train lines, three numbers kept, no object built.
            if bulk and type(d) is dict:
                try:
                    t, s, l, r = fields(d)
                except KeyError:
                    pass
                else:
                    if t == "train" and type(s) is int and type(l) in num_or_none and type(r) in num_or_none:
                        if cut is None or s <= cut:
                            rows.append((s, l, r))
                            self._last = d
                        continue
            self._other(d, lineno)
            cut = self._cut
        self.counts.lines += len(lines) - blank
        self.lineno = lineno
        self._flush()
        self._items = []
        return items

    def feed_chunk(self, buf: bytes) -> list[Item]:
        """Complete lines, each ending in a newline, as one buffer: the same
        items and counts as ``feed(buf.split(b"\\n")[:-1])``, faster.

        The fast path decodes the whole chunk with msgspec; it is taken only
        when every line decoded (so none is bad), every line starts with ``{``
        and there is one value per line (so none is blank or holds two).
        Anything else goes line by line through ``feed``.
        """
        if not buf:
            return []
        got = self._decode(buf) if self.bulk else None
        if got is None:
            lines = buf.split(b"\n")
            if not lines[-1]:
                lines.pop()
            return self.feed(lines)
        rows, nl = got
        items: list[Item] = []
        self._items = items
        slow = [i for i, r in enumerate(rows) if type(r) is not _FastTrain]
        train = [r for r in rows if type(r) is _FastTrain] if slow else rows
        steps, losses, lrs = (_column(train, g) for g in (_get_step, _get_loss, _get_lr))
        lineno = self.lineno
        at = k = 0  # next row, next train point
        for i in slow + [len(rows)]:
            if i > at:  # rows at..i-1 are train points k..
                self._add_fast(buf, nl, at, steps[k:k + i - at], losses[k:k + i - at], lrs[k:k + i - at])
                k += i - at
            if i < len(rows):
                self._slow_line(buf[nl[i - 1] + 1 if i else 0:nl[i]], lineno + i + 1)
            at = i + 1
        self.counts.lines += len(rows)
        self.lineno = lineno + len(rows)
        self._flush()
        self._items = []
        return items

    def _decode(self, buf: bytes) -> tuple[list, np.ndarray] | None:
        """The chunk's lines as fast structs and the offsets of its newlines;
        None when the per-line path must read it."""
        if buf[-1] != _NL or (self.lineno == 0 and buf.startswith(_BOM)):
            return None
        try:
            rows = _FAST.decode_lines(buf)
        except msgspec.DecodeError:  # not JSON, not ours, a wrong type: line by line
            return None
        a = np.frombuffer(buf, np.uint8)
        nl = np.flatnonzero(a == _NL)
        # decode_lines skips blank lines and reads "{..}{..}" as two: insist on
        # one object per line, each line starting with "{".
        if len(rows) != len(nl) or a[0] != _BRACE or not (a[nl[:-1] + 1] == _BRACE).all():
            return None
        return rows, nl

    def _add_fast(self, buf: bytes, nl: np.ndarray, first: int, steps: np.ndarray, losses: np.ndarray,
                  lrs: np.ndarray) -> None:
        """Train points of rows ``first``.. (fast path), after the resume cutoff."""
        last = len(steps) - 1
        if self._cut is not None:
            keep = steps <= self._cut
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

    def _slow_line(self, raw: bytes, lineno: int) -> None:
        """A line of a fast chunk that is not a train line: as ``feed`` reads it
        (it starts with "{" and is not blank, so no blank or BOM case)."""
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._bad(lineno)
            return
        if type(d) is dict:  # the hot path of feed, for a line the decoder tagged otherwise
            try:
                t, s, l, r = _TRAIN_FIELDS(d)
            except KeyError:
                pass
            else:
                if t == "train" and type(s) is int and type(l) in _NUM_OR_NONE and type(r) in _NUM_OR_NONE:
                    if self._cut is None or s <= self._cut:
                        self._rows.append((s, l, r))
                        self._last = d
                    return
        self._other(d, lineno)

    def _other(self, d: Any, lineno: int) -> None:
        """Everything but a well-formed train line of ours."""
        c, cut, items = self.counts, self._cut, self._items
        if type(d) is not dict:
            self._bad(lineno)
            return
        t = d.get("type")
        ours = type(t) is str and t in RECORD_TYPES
        rec = typed_record(d) if ours else None
        if rec is None and ours and t != "train":  # a train line short of fields reads as a flat one
            self._bad(lineno)
            return
        if rec is not None:
            if isinstance(rec, RunStart) and rec.resumed:
                self._flush()  # order matters here: the points read before the resume
                if rec.step < self.max_step:
                    self.supersedes = True
                self.resumes.append(rec.step)
                if self.cutoffs is not None:
                    k = len(self.resumes)
                    self._cut = self.cutoffs[k] if k < len(self.cutoffs) else None
            elif cut is not None and rec.step > cut:
                return
            if isinstance(rec, (RunStart, RunEnd)):
                self._flush()
            elif isinstance(rec, _STATE_RECORDS):
                self._mark = (self._npieces + len(self._rows), len(items))
            self.max_step = max(self.max_step, rec.step)
            if isinstance(rec, TrainStep) or (isinstance(rec, Eval) and math.isfinite(rec.val_loss)):
                c.plottable += 1
            items.append(rec)
            return
        got = generic(d)
        if got is None:
            c.ignored += 1
        elif got is False:
            self._bad(lineno)
        elif isinstance(got, Eval):
            if cut is None or got.step <= cut:
                self.max_step = max(self.max_step, got.step)
                c.plottable += 1
                items.append(got)
        elif cut is not None and got[0] > cut:
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
                before.last = self._full(last, before.steps[-1])
                return
        block = TrainBlock(s, l, r)
        block.last = self._full(last, s[-1])
        self._items.append(block)

    @staticmethod
    def _full(last: dict | bytes | None, step: float) -> TrainStep | None:
        """The last train line as a full record, when it is the block's last point."""
        if isinstance(last, bytes):
            last = orjson.loads(last)
        if last is not None and last.get("step") == step:
            return typed_record(last)  # type: ignore[return-value]
        return None

    def _bad(self, lineno: int) -> None:
        self.counts.bad += 1
        if len(self.counts.first_bad) < 10:
            self.counts.first_bad.append(lineno)


def _arrays(rows: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.array(rows, dtype=np.float64)  # None (a null loss or lr) becomes NaN
    return a[:, 0], a[:, 1], a[:, 2]


def _first(d: dict, keys: tuple[str, ...]) -> Any:
    for k in keys:
        v = d.get(k)
        if v is not None:
            return v
    return None


def generic(d: dict) -> tuple[int, float, float] | Eval | None | bool:
    """A flat record from someone else's logger: (step, train loss, lr) for a
    train point, an ``Eval`` for a validation loss, None when it has nothing to
    plot, False when a step or loss has the wrong type (a bad line)."""
    step = _first(d, STEP_KEYS)
    if step is None:
        return None
    if type(step) is float and step.is_integer():
        step = int(step)
    if type(step) is not int:
        return False
    if any(k in d for k in SUMMARY_KEYS):
        return None
    train, lr, val = _first(d, TRAIN_KEYS), _first(d, LR_KEYS), _first(d, VAL_KEYS)
    for v in (train, lr, val):
        if v is not None and type(v) not in _NUM:
            return False
    if val is not None:
        return Eval(step=step, val_loss=float(val), train_loss=NAN if train is None else float(train),
                    elapsed_s=NAN, time=NAN)
    if train is None and lr is None:
        return None
    return step, NAN if train is None else float(train), NAN if lr is None else float(lr)


_CHECKS: dict[type, list[tuple[str, frozenset, bool]]] = {}


def _checks(cls: type) -> list[tuple[str, frozenset, bool]]:
    """Per field of a record class: (name, accepted types, null means NaN)."""
    got = _CHECKS.get(cls)
    if got is None:
        got = []
        for f in dataclasses.fields(cls):
            ann = str(f.type)
            optional = "None" in ann
            base = ann.split("|")[0].strip()
            kinds = {"float": {int, float}, "int": {int}, "bool": {bool}, "str": {str}}.get(base)
            if kinds is None:
                kinds = {dict} if base.startswith("dict") else {object}
            if optional or base == "float":  # null in a plain float field reads as NaN
                kinds = kinds | {type(None)}
            got.append((f.name, frozenset(kinds), base == "float" and not optional))
        _CHECKS[cls] = got
    return got


def typed_record(d: dict) -> Record | None:
    """``records.from_dict`` plus a type check of every field, so a string
    where a loss belongs is a bad line here, not a crash in a widget."""
    rec = from_dict(d)
    if rec is None:
        return None
    for name, kinds, null_is_nan in _checks(type(rec)):
        v = getattr(rec, name)
        if object in kinds:
            continue
        if type(v) not in kinds:
            return None
        if v is None and null_is_nan:
            setattr(rec, name, NAN)
    return rec


# --- reading a file incrementally -------------------------------------------

class Tail:
    """Reads a file from where it left off, one complete line at a time.

    Notices when the file was truncated (smaller than our offset), replaced
    (the path now names another inode: log rotation, a rerun) or rewritten in
    place (its first bytes changed): ``changed()`` is then true and the owner
    reads it again from the start with ``reopen()``.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None
        self.ino: tuple[int, int] | None = None
        self.offset = 0
        self.partial = b""
        self.head = b""
        self.size = 0

    def open(self) -> bool:
        """Open the file; False while it does not exist."""
        self.close()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return False
        except PermissionError:
            raise LogError(f"cannot read {self.path}: permission denied") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise LogError(f"{self.path} is not a regular file")
        self.fd, self.ino, self.size = fd, (st.st_dev, st.st_ino), st.st_size
        self.offset, self.partial, self.head = 0, b"", b""
        if is_binary(os.pread(fd, 8192, 0)):
            self.close()
            raise LogError(f"{self.path} is a binary file, not a JSONL log")
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def changed(self) -> bool:
        if self.fd is None:
            return False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # moved away: keep reading the old one until a new file appears
        if (st.st_dev, st.st_ino) != self.ino:
            return True
        if st.st_size < self.offset:
            return True
        if st.st_size > self.offset and self.head:
            if os.pread(self.fd, len(self.head), 0) != self.head:
                return True
        self.size = st.st_size
        return False

    def read(self, limit: int = CHUNK) -> list[bytes] | None:
        """The complete lines of up to ``limit`` new bytes; None when nothing new."""
        buf = self.read_chunk(limit)
        if buf is None:
            return None
        lines = buf.split(b"\n")
        lines.pop()  # b"" after the last newline
        return lines

    def read_chunk(self, limit: int = CHUNK) -> bytes | None:
        """The complete lines of up to ``limit`` new bytes as one buffer, each
        ending in a newline (b"" when no line is complete yet); None when
        nothing new."""
        assert self.fd is not None
        data = os.pread(self.fd, limit, self.offset)
        if not data:
            return None
        if len(self.head) < HEAD and self.offset < HEAD:
            self.head = (self.head + data)[:HEAD]
        self.offset += len(data)
        self.size = max(self.size, self.offset)
        end = data.rfind(b"\n") + 1
        if not end:
            self.partial += data
            out = b""
        else:
            out = self.partial + data[:end] if self.partial else data[:end] if end < len(data) else data
            self.partial = data[end:]
        if len(self.partial) > MAX_LINE:  # no newline in sight: junk, not a line
            self.partial = b""
            out += b"\0\n"  # counted as one bad line
        return out

    def take_partial(self) -> bytes:
        """The unterminated last line (replay: the file is finished)."""
        p, self.partial = self.partial, b""
        return p

    @property
    def progress(self) -> float:
        return min(1.0, self.offset / self.size) if self.size else 1.0


# --- one log turned into a RunSeries -----------------------------------------

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


def preview(path: Path, name: str, points: int = PREVIEW_POINTS) -> RunSeries | None:
    """A quick look at a big log: ``points`` train lines sampled evenly through
    the file (a few ms), shown while the full read runs."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        parser = LineParser(bulk=True)
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
    for it in parser.feed(lines):
        if isinstance(it, TrainBlock):
            order = np.argsort(it.steps, kind="stable")
            series.extend_train(it.steps[order], it.losses[order], it.lrs[order])
    if not len(series.loss) and not len(series.lr_curve):
        return None
    series.state = "starting"
    series.detail = "preview"
    return series


class Feed:
    """One log file: located, loaded whole into a ``RunSeries``, then followed.

    Used from one thread at a time: before the app starts (small files load
    at once) and then from the watcher thread.
    """

    def __init__(self, index: int, arg: Path, follow: bool):
        self.index = index
        self.arg = arg
        self.follow = follow
        self.name = display_name(arg)
        self.path: Path | None = None
        self.tail: Tail | None = None
        self.counts = ReadCounts()
        self.parser: LineParser | None = None
        self.loaded = False
        self.loading = False
        self.error: str | None = None
        self.resets = 0

    # state as words for the status line
    def describe(self) -> str:
        if self.error:
            return f"{self.name}: {self.error}"
        if self.tail is None:
            return f"waiting for {self.arg}"
        if self.loading:
            return f"loading {self.name} {self.tail.progress:.0%}"
        bits = [self.counts.describe()]
        if self.counts.torn_tail:
            bits.append("last line incomplete")
        if self.loaded and not self.counts.plottable:
            bits.append("nothing to plot yet" if self.follow else "nothing to plot")
        text = ", ".join(b for b in bits if b)
        return f"{self.name}: {text}" if text else ""

    def open(self) -> bool:
        """Find and open the file; False while it does not exist (follow)."""
        if self.tail is not None:
            return True
        path = locate(self.arg)
        if path is None:
            return False
        tail = Tail(path)
        if not tail.open():
            return False
        self.path, self.tail = path, tail
        return True

    def load(self, stop: threading.Event | None = None) -> RunSeries | None:
        """Read the whole file as it is now into a fresh series (None if stopped)."""
        assert self.tail is not None
        self.loading = True
        try:
            series, parser = self._read_all(stop, None)
            if series is not None and parser.supersedes:
                # A resumed run rewrote steps an earlier session had logged:
                # read again, dropping what the resume superseded.
                cut = _suffix_min(parser.resumes)
                self.tail.open()
                series, parser = self._read_all(stop, cut)
        finally:
            self.loading = False
        if series is None:
            return None
        self.parser = LineParser(bulk=False, counts=self.counts)
        self.parser.max_step, self.parser.lineno = parser.max_step, parser.lineno
        self.parser.resumes = parser.resumes
        self.loaded = True
        series.bad_lines = self.counts.bad
        if not self.follow and not series.total_steps and not series.ended:
            # Someone else's log (no run_start/run_end): read to its end, it is a finished file.
            series.state, series.total_steps = "finished", series.step
        return series

    def _read_all(self, stop: threading.Event | None, cutoffs: list[int] | None
                  ) -> tuple[RunSeries | None, LineParser]:
        assert self.tail is not None
        self.counts = ReadCounts()
        parser = LineParser(bulk=True, counts=self.counts, cutoffs=cutoffs)
        series = RunSeries(self.name)
        while True:
            if stop is not None and stop.is_set():
                return None, parser
            buf = self.tail.read_chunk(CHUNK)
            if buf is None:
                break
            apply_items(series, parser.feed_chunk(buf))
        if not self.follow:
            rest = self.tail.take_partial()
            if rest.strip():
                before = self.counts.bad
                apply_items(series, parser.feed([rest]))
                if self.counts.bad > before:  # a torn write, not a bad line
                    self.counts.bad, self.counts.lines = before, self.counts.lines - 1
                    self.counts.first_bad = self.counts.first_bad[:before]
                    self.counts.torn_tail = True
        return series, parser

    def read_new(self) -> list[Item] | None:
        """Records appended since the last read; None when the file was
        truncated, replaced or resumed over and must be loaded again."""
        assert self.tail is not None and self.parser is not None
        if self.tail.changed():
            return None
        items: list[Item] = []
        while True:
            lines = self.tail.read(CHUNK)
            if not lines:
                break
            resumes = len(self.parser.resumes)
            items.extend(self.parser.feed(lines))
            if self.parser.supersedes and len(self.parser.resumes) > resumes:
                return None
            if len(items) > 200_000:
                break
        return items

    def reopen(self) -> bool:
        """Start again from the start of whatever file the path names now."""
        self.resets += 1
        self.loaded = False
        self.counts = ReadCounts()
        if self.tail is not None:
            self.tail.close()
        self.tail = None
        return self.open()

    def close(self) -> None:
        if self.tail is not None:
            self.tail.close()


def _suffix_min(resumes: list[int]) -> list[int]:
    """Entry k: the lowest resume step at or after resume k (the cutoff for
    records read before resume k)."""
    out = list(resumes)
    for k in range(len(out) - 2, -1, -1):
        out[k] = min(out[k], out[k + 1])
    return out


def load_series(path: Path, name: str | None = None) -> tuple[RunSeries, ReadCounts]:
    """Read a whole log at once (replay): the series and what was read."""
    feed = Feed(0, path, follow=False)
    if not feed.open():
        raise LogError(f"{path} does not exist")
    series = feed.load()
    assert series is not None
    if name:
        series.name = name
    feed.close()
    return series, feed.counts


# --- the watcher thread --------------------------------------------------------

Message = tuple[str, int, Any]   # ("series", i, RunSeries) | ("items", i, [Item]) | ("error", i, str)


class Watcher(threading.Thread):
    """Loads every feed not loaded yet; in follow mode, then tails them all.

    Results go to ``out`` as messages for the UI thread; the thread never
    touches a series the UI can see.  When the UI falls behind, it waits.
    """

    def __init__(self, feeds: list[Feed], out: queue.Queue, follow: bool,
                 on_post: Callable[[], None] | None = None):
        super().__init__(name="log-watcher", daemon=True)
        self.feeds = feeds
        self.out = out
        self.follow = follow
        self.stop_event = threading.Event()
        self.on_post = on_post

    def post(self, msg: Message) -> None:
        self.out.put(msg)
        if self.on_post is not None:
            self.on_post()

    def run(self) -> None:
        stop = self.stop_event
        while not stop.is_set():
            busy = False
            for feed in self.feeds:
                if stop.is_set():
                    return
                if feed.error:
                    continue
                try:
                    busy |= self._step(feed)
                except (LogError, OSError) as e:
                    feed.error = str(e)
                    feed.loading = False
                    self.post(("error", feed.index, feed.error))
            if not self.follow and all(f.loaded or f.error for f in self.feeds):
                return
            while self.out.qsize() > 50 and not stop.is_set():  # the UI is behind: let it catch up
                stop.wait(FOLLOW_SLEEP_S)
            if not busy:
                stop.wait(FOLLOW_SLEEP_S)

    def _step(self, feed: Feed) -> bool:
        if feed.tail is None and not feed.open():
            return False
        if not feed.loaded:
            series = feed.load(self.stop_event)
            if series is not None:
                self.post(("series", feed.index, series))
            return True
        if not self.follow:
            return False
        items = feed.read_new()
        if items is None:  # truncated, replaced or resumed over: read it all again
            if feed.reopen():
                series = feed.load(self.stop_event)
                if series is not None:
                    self.post(("series", feed.index, series))
            else:
                self.post(("series", feed.index, RunSeries(feed.name)))
            return True
        if items:
            self.post(("items", feed.index, items))
            return True
        return False

    def stop(self) -> None:
        self.stop_event.set()


# --- the source the viewer shows --------------------------------------------------

class LogSource:
    """N log files as the dashboard's record source (no Textual here).

    ``prepare()`` checks every path (``LogError`` for the user) and loads
    small files at once, so the first frame is complete; big files show a
    sampled preview first and load in the watcher thread.  ``poll()`` (UI
    thread) swaps in loaded series and returns the records appended since.
    """

    can_steer = False
    SYNC_BYTES = 8 << 20  # files up to this size load before the first frame

    def __init__(self, paths: list[Path], follow: bool = False):
        self.follow = follow
        self.feeds = [Feed(i, Path(p), follow) for i, p in enumerate(paths)]
        self.runs: list[RunSeries] = [RunSeries(f.name) for f in self.feeds]
        self.queue: queue.Queue = queue.Queue()
        self.watcher: Watcher | None = None
        self.swapped = False   # a whole series was replaced since the UI last looked
        self.resets = 0        # series replaced by a re-read (truncation, replacement, resume)
        self.on_reset: Callable[[int], None] | None = None  # called (UI thread) before such a swap shows
        self._loaded_once = [False] * len(self.feeds)
        _unique_names(self.runs)

    def prepare(self) -> None:
        for feed in self.feeds:
            if locate(feed.arg) is not None or not self.follow:
                resolve(feed.arg)  # a LogError naming what is wrong and the fix
                feed.open()
        for feed in self.feeds:
            if feed.tail is None:
                continue  # follow: waited for by the watcher
            if feed.tail.size <= self.SYNC_BYTES:
                series = feed.load()
                assert series is not None
                self._install(feed.index, series)
            else:
                if not self.follow and not has_plottable(feed.tail.path):
                    raise _nothing_to_plot(feed.tail.path, None)
                pv = preview(feed.tail.path, feed.name)
                if pv is not None:
                    self._install(feed.index, pv, final=False)
            if not self.follow and feed.loaded and not feed.counts.plottable:
                raise _nothing_to_plot(feed.tail.path, feed.counts)

    def start(self) -> None:
        if self.watcher is None:
            self.watcher = Watcher(self.feeds, self.queue, self.follow)
            self.watcher.start()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    def close(self) -> None:
        self.stop()
        if self.watcher is not None:
            self.watcher.join(timeout=2)
        for f in self.feeds:
            f.close()

    @property
    def done(self) -> bool:
        return self.watcher is None or not self.watcher.is_alive()

    @property
    def result(self) -> Any:
        return None

    def send(self, command: Any) -> None:
        pass  # a log cannot be steered

    def _install(self, i: int, series: RunSeries, final: bool = True) -> None:
        old = self.runs[i]
        # Widgets redraw when a version moves: never let a fresh series repeat one.
        series.version += old.version + 1
        series.evals_version += old.evals_version + 1
        series.samples_seen += old.samples_seen + 1
        if final and self._loaded_once[i] or len(series.evals) < len(old.evals):
            self.resets += 1
            if self.on_reset is not None:
                self.on_reset(i)
        self._loaded_once[i] |= final
        self.runs[i] = series
        self.swapped = True
        _unique_names(self.runs)

    def poll(self) -> list[tuple[int, Record]]:
        out: list[tuple[int, Record]] = []
        while len(out) < 50_000:
            try:
                kind, i, payload = self.queue.get_nowait()
            except queue.Empty:
                break
            if kind == "series":
                # Records queued before the swap are part of the old series.
                self._install(i, payload)
                out = [(j, r) for j, r in out if j != i]
            elif kind == "items":
                for it in payload:
                    if isinstance(it, TrainBlock):  # a big append: apply it directly
                        apply_items(self.runs[i], [it])
                        self.swapped = True
                    else:
                        if isinstance(it, TrainStep) and self.runs[i].state == "starting":
                            self.runs[i].state = "running"
                        out.append((i, it))
            self.runs[i].bad_lines = self.feeds[i].counts.bad
        return out

    def status_text(self) -> str:
        bits = [d for f in self.feeds if (d := f.describe())]
        if self.follow:
            n = len(self.feeds)
            bits.insert(0, "following" + (f" {n} files" if n > 1 else ""))
        return " · ".join(bits)


def _unique_names(runs: list[RunSeries]) -> None:
    seen: dict[str, int] = {}
    for r in runs:
        if r.name in seen:
            seen[r.name] += 1
            r.name = f"{r.name}#{seen[r.name]}"
        else:
            seen[r.name] = 1


def has_plottable(path: Path, limit: int = 1 << 30) -> bool:
    """True as soon as the log holds one train point or eval (reads no more)."""
    parser = LineParser(bulk=True)
    tail = Tail(path)
    if not tail.open():
        return False
    try:
        read = 0
        while read < limit:
            lines = tail.read(1 << 20)
            if lines is None:
                break
            read += 1 << 20
            parser.feed(lines)
            if parser.counts.plottable:
                return True
        parser.feed([tail.take_partial()])
        return parser.counts.plottable > 0
    finally:
        tail.close()


def _nothing_to_plot(path: Path, counts: ReadCounts | None) -> LogError:
    detail = ""
    if counts is not None:
        detail = f" ({counts.lines:,} lines: {counts.bad:,} unreadable, {counts.ignored:,} without a step and a loss)"
    return LogError(f"{path} has no plottable record{detail}; expected JSON lines with a step "
                    f"({', '.join(STEP_KEYS)}) and a loss ({', '.join(TRAIN_KEYS + VAL_KEYS)}) or lr")

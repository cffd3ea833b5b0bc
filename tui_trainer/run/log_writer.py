"""The run log: records as JSONL, one per line, flushed per line.

A crash at any instant leaves a file whose every complete line is valid strict
JSON (no bare NaN); at worst the last line is torn, and readers skip it.  The
writer is a sink like any other; the reader (``tui_trainer/logs/``: the viewer's,
and ``logs.read_records`` for scripts and tests) reads a log back.
"""
from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any, Iterable, Protocol

from ..records import Record

LOG_NAME = "losses.jsonl"


def dumps(record: Record | dict[str, Any]) -> str:
    d = record.to_dict() if isinstance(record, Record) else record
    # allow_nan=False: a NaN that slipped past to_dict is a bug, not a line.
    return json.dumps(d, allow_nan=False, separators=(",", ":"))


class Sink(Protocol):
    """Where a run's records go (``run.Run.emit``): this JSONL log, the headless
    printer, the dashboard's queue."""

    def emit(self, record: Record) -> None: ...


class LogWriteError(OSError):
    """The run log could not be written (disk full, I/O error): the run must
    end, and say why, rather than train on unrecorded."""


class JsonlSink:
    """Appends each record to ``path`` as one line, written whole at once.

    One ``os.write`` per line (no buffer that could be half flushed): a line
    is in the kernel as soon as ``emit`` returns, which is what survives a
    crash of this process.  fsync happens on checkpoints and at close, not per
    line: it only adds survival of a machine crash, at about twice the
    per-step cost.  When a write fails (the disk is full), the file is cut
    back to its last whole line, the sink stops writing, and ``emit`` raises
    ``LogWriteError`` once: the log stays readable and the run can end
    ``failed`` with the reason.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        # O_NONBLOCK: a FIFO put in the log's place fails the open (or the check
        # below) instead of hanging it until some reader comes.
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                       | getattr(os, "O_NONBLOCK", 0), 0o644)
        self.failed: OSError | None = None
        st = os.fstat(self._fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(self._fd)
            self._fd = None
            raise LogWriteError(errno.EINVAL, f"the run log {self.path} is not a regular file; "
                                "move it aside, then start again")
        size = st.st_size
        # A torn last line (from a kill during a write) must not glue itself to
        # the first record we append on resume.
        if size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    self._write(b"\n")
                    size += 1
        self.good = size  # bytes up to the end of the last whole line

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def emit(self, record: Record) -> None:
        if self._fd is None or self.failed is not None:
            return
        data = (dumps(record) + "\n").encode("utf-8")
        try:
            self._write(data)
            if record.type in ("checkpoint", "run_end"):
                os.fsync(self._fd)
        except OSError as e:
            self.failed = e
            try:
                os.ftruncate(self._fd, self.good)  # no torn line left behind
            except OSError:
                pass
            raise LogWriteError(e.errno, f"cannot write the run log {self.path} ({e.strerror})") from None
        self.good += len(data)

    def abandon(self) -> None:
        """In a child after ``fork``: close this process's copy of the file,
        writing nothing; the parent goes on writing the log."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None


def effective_records(records: Iterable[Any]) -> list[Any]:
    """The records that still count, after resumes (dicts or ``Record``s).

    In file order, each resumed ``run_start`` at step S drops the earlier
    records whose step is greater than S.  The rule lives with the log
    reader (``logs/resumes.py``), which applies it when it reads a log; this
    name is kept for scripts that read it from here (``tui_trainer.runlog``).
    """
    from ..logs.resumes import effective_records as rule  # here, not at the top: logs/ imports LOG_NAME
    return rule(records)

"""The run log: records as JSONL, one per line, flushed per line.

A crash at any instant leaves a file whose every complete line is valid strict
JSON (no bare NaN); at worst the last line is torn, and the reader here skips
it.  The writer is a sink like any other; the reader is what the viewer, resume
and the tests use to read a log back.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from .records import Record

LOG_NAME = "losses.jsonl"


def dumps(record: Record | dict[str, Any]) -> str:
    d = record.to_dict() if isinstance(record, Record) else record
    # allow_nan=False: a NaN that slipped past to_dict is a bug, not a line.
    return json.dumps(d, allow_nan=False, separators=(",", ":"))


class JsonlSink:
    """Appends each record to ``path`` as one line, flushed at once.

    fsync happens on checkpoints and at close, not per line: flushing hands the
    line to the kernel, which is what survives a crash of this process; fsync
    only adds survival of a machine crash, at about twice the per-step cost.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        # A torn last line (from a kill during a write) must not glue itself to
        # the first record we append on resume.
        needs_newline = False
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        self._f = open(self.path, "a", encoding="utf-8")
        if needs_newline:
            self._f.write("\n")
            self._f.flush()

    def emit(self, record: Record) -> None:
        self._f.write(dumps(record) + "\n")
        self._f.flush()
        if record.type in ("checkpoint", "run_end"):
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()


@dataclass
class ReadStats:
    lines: int = 0
    bad: int = 0
    torn_tail: bool = False
    bad_lines: list[int] = field(default_factory=list)  # first few line numbers


def iter_jsonl(path: str | os.PathLike[str], stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Yield each JSON object in the file; count, never raise on, bad lines.

    A final line without a newline is a write in progress or a torn write: it
    is skipped (and noted in ``stats.torn_tail``) rather than reported bad.
    """
    stats = stats if stats is not None else ReadStats()
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    if tail.strip():
        stats.torn_tail = True
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        stats.lines += 1
        try:
            obj = json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError):
            obj = None
        if not isinstance(obj, dict):
            stats.bad += 1
            if len(stats.bad_lines) < 10:
                stats.bad_lines.append(i)
            continue
        yield obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def read_records(path: str | os.PathLike[str], stats: ReadStats | None = None) -> list[dict[str, Any]]:
    return list(iter_jsonl(path, stats))


def _field(r: Any, name: str, default: Any = None) -> Any:
    return r.get(name, default) if isinstance(r, dict) else getattr(r, name, default)


def effective_records(records: Iterable[Any]) -> list[Any]:
    """The records that still count, after resumes (dicts or ``Record``s).

    A resumed session appends to the same file, starting with a ``run_start``
    whose ``resumed`` is true and whose ``step`` S is the checkpoint it
    continued from.  Whatever an earlier session wrote with a step above S
    (steps trained after that checkpoint, before a crash or kill) is
    superseded: the resumed session trains those steps again.  So, reading in
    file order, each resumed ``run_start`` drops the earlier records whose
    step is greater than S; records at or below S are kept.  The file itself
    is never rewritten.
    """
    out: list[Any] = []
    for r in records:
        if _field(r, "type") == "run_start" and _field(r, "resumed"):
            s = _field(r, "step")
            if isinstance(s, int):
                out = [x for x in out if not isinstance(_field(x, "step"), int) or _field(x, "step") <= s]
        out.append(r)
    return out

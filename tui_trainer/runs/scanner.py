"""Scanning a folder of runs: each folder's log found, stat'ed, its lock
tested, its head and tail read again only when it changed."""
from __future__ import annotations

import dataclasses
import math
import os
import stat
from pathlib import Path
from typing import Any

from ..logs.formats import read as read_object
from ..logs.parsing import BLANK, decode
from ..logs.paths import is_binary
from ..records import RunStart, clean_text
from ..run.folder import is_live
from ..run.log_writer import LOG_NAME
from .evals import apply_search, search_evals
from .labels import label
from .summary import NAN, Entry, RunSummary
from .tail import read_tail, status_of

HEAD_BYTES = 1 << 13     # the first line (run_start) is read from this much, more if it is longer
HEAD_MAX = 1 << 22


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
        self._entries: dict[bytes, Entry] = {}
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
                entry = Entry(RunSummary(path, clean_text(os.fsdecode(raw))))
            _refresh(entry)
            if evals and entry.summary.ok:
                search_evals(entry)
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


def summarise(path: str | os.PathLike[str]) -> RunSummary:
    """One run folder read as the browser reads each of its rows (status,
    step, best val...); ``problem`` says why it is not a run."""
    path = Path(path)
    entry = Entry(RunSummary(path, clean_text(path.name or str(path))))
    _refresh(entry)
    if entry.summary.ok:
        search_evals(entry)
    s = dataclasses.replace(entry.summary)
    label([s])
    return s


def _refresh(entry: Entry) -> None:
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


def _reset(entry: Entry, problem: str = "") -> None:
    old = entry.summary
    entry.summary = RunSummary(old.path, old.folder, run_name=old.folder, problem=problem,
                               status="" if not problem else "skipped")
    entry.scanned, entry.ident, entry.evals, entry.resumes, entry.total = 0, None, [], [], 0


def _read(entry: Entry, fd: int, size: int, live: bool) -> None:
    s = entry.summary
    head = os.pread(fd, HEAD_BYTES, 0)
    if is_binary(head[:8192]):
        _reset(entry, problem=f"{LOG_NAME} is a binary file")
        return
    s.problem, s.size = "", size
    first = _first_object(fd, head, size)
    start = read_object(first) if first is not None else None
    if isinstance(start, RunStart):
        s.foreign = False
        s.run_name = clean_text(start.run_name) or s.folder
        s.started = start.time if math.isfinite(start.time) else NAN
        s.config, s.total_steps = dict(start.config), start.total_steps
        s.parent, s.parent_name, s.fork_step = parent_of(start.parent)
    else:
        s.foreign, s.run_name, s.config = first is not None, s.folder, {}
        s.parent, s.parent_name, s.fork_step = "", "", None
    tail = read_tail(s, fd, size)
    s.status = status_of(s, tail, live, first is None)
    if entry.ident is not None:
        apply_search(entry)  # what the last search found still holds for the bytes it covered


def parent_of(parent: Any) -> tuple[str, str, int | None]:
    """(folder, name, step) of a fork's ``run_start.parent`` (untrusted: odd values read as no fork)."""
    if not isinstance(parent, dict):
        return "", "", None
    folder, name, step = parent.get("folder"), parent.get("name"), parent.get("step")
    if not isinstance(folder, str) or type(step) is not int or step < 0:
        return "", "", None
    return folder, clean_text(name) if isinstance(name, str) else clean_text(Path(folder).name), step


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

"""A fork's ancestry, read for the viewer: ``view FORK`` shows the parent's
curves up to the fork step (faint, ``RunSeries.faint``) before the fork's own.

A fork's first line is its ``run_start``, whose ``parent`` names the run it
came from and the step (``fork.py``).  The parent's log is read up to that
step as any resume's history is (``history.read_history``: the records past
it are dropped); a parent that is itself a fork adds its own parent, and so
on (at most ``MAX_DEPTH``).  A parent that was moved or deleted is no error:
the fork shows alone, with a note naming what is missing.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from ..run.log_writer import LOG_NAME
from ..curves.series import RunSeries
from .history import read_history

MAX_DEPTH = 8
HEAD_MAX = 1 << 20  # a run_start line is a few KB


def fork_parent(log: Path) -> tuple[Path, str, int] | None:
    """(parent folder, parent name, fork step) from the log's first line, or
    None when it is no fork (or the line does not read: untrusted input)."""
    try:
        fd = os.open(log, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not hang the viewer
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        d = json.loads(os.pread(fd, HEAD_MAX, 0).split(b"\n", 1)[0])
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    p = d.get("parent") if isinstance(d, dict) and d.get("type") == "run_start" else None
    if not isinstance(p, dict):
        return None
    folder, name, step = p.get("folder"), p.get("name"), p.get("step")
    if not isinstance(folder, str) or not folder or type(step) is not int or step < 0:
        return None
    return Path(folder), name if isinstance(name, str) and name else Path(folder).name, step


def ancestors(log: Path, shown: set[str] = frozenset()) -> tuple[list[RunSeries], str]:
    """The prefix series of ``log``'s ancestors, oldest first, each cut at the
    step its child was forked at and marked faint; and a note ("" if none)
    when an ancestor's log cannot be read.  ``shown``: resolved paths of logs
    shown whole already (``view PARENT FORK``), where the lineage stops."""
    out: list[RunSeries] = []
    seen = {str(log.resolve()), *shown}
    at = fork_parent(log)
    limit: int | None = None
    while at is not None and len(out) < MAX_DEPTH:
        folder, name, step = at
        step = step if limit is None else min(step, limit)
        parent_log = folder / LOG_NAME
        try:
            key = str(parent_log.resolve())
            size = parent_log.stat().st_size if parent_log.is_file() else -1
        except (OSError, RuntimeError):
            size, key = -1, str(parent_log)
        if size < 0:
            return out[::-1], f"parent {name} ({folder}) is missing: its curve up to step {step} is not shown"
        if key in seen:
            break  # shown whole already, or a loop of parents: each is drawn once
        seen.add(key)
        try:
            series = read_history(parent_log, size, step, f"{name}@{step}")
        except Exception:  # noqa: BLE001 - an unreadable parent leaves the fork viewable
            series = None
        if series is None:
            return out[::-1], f"parent {name} ({folder}) cannot be read: its curve is not shown"
        series.faint, series.name = True, f"{name}@{step}"
        out.append(series)
        limit, at = step, fork_parent(parent_log)
    return out[::-1], ""

"""A fork's ancestry, read for the viewer: ``view FORK`` shows the parent's
curves up to the fork step (faint, ``RunSeries.faint``) before the fork's own.

A fork's first line is its ``run_start``, whose ``parent`` names the run it
came from and the step (``fork.py``).  The parent's log is read up to that
step as any resume's history is (``history.read_history``: the records past
it are dropped); a parent that is itself a fork adds its own parent, and so
on (at most ``MAX_DEPTH``).  A parent that was moved or deleted is no error:
the fork shows alone, with a note naming what is missing.
Forks shown together (``view FORK_A FORK_B``) share their common ancestors:
each is read once, up to the latest step any of them left it at (``prefixes``).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..records import json_object
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
        d = json_object(os.pread(fd, HEAD_MAX, 0).split(b"\n", 1)[0])
    except OSError:
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


@dataclass(frozen=True)
class Link:
    """One ancestor of a fork: its log (``key``: the log's resolved path), its
    name, and the step its child left it at (where its prefix is cut)."""
    key: str
    log: Path
    name: str
    step: int


def chain(log: Path, shown: set[str] = frozenset()) -> tuple[list[Link], str]:
    """``log``'s ancestors, nearest first, without reading more than their
    first lines; and a note ("" if none) when one was moved or deleted (the
    chain stops there).  ``shown``: resolved paths of logs shown whole already
    (``view PARENT FORK``), where the chain stops."""
    out: list[Link] = []
    seen = {str(log.resolve()), *shown}
    at = fork_parent(log)
    limit: int | None = None
    while at is not None and len(out) < MAX_DEPTH:
        folder, name, step = at
        step = step if limit is None else min(step, limit)
        parent_log = folder / LOG_NAME
        try:
            key = str(parent_log.resolve())
            there = parent_log.is_file()
        except (OSError, RuntimeError, ValueError):  # ValueError: a NUL in a hostile log's folder
            key, there = str(parent_log), False
        if not there:
            return out, f"parent {name} ({folder}) is missing: its curve up to step {step} is not shown"
        if key in seen:
            break  # shown whole already, or a loop of parents: each is drawn once
        seen.add(key)
        out.append(Link(key, parent_log, name, step))
        limit, at = step, fork_parent(parent_log)
    return out, ""


def read_prefix(link: Link) -> RunSeries | None:
    """The ancestor's curves up to ``link.step``, faint, named ``name@step``;
    None when its log cannot be read (untrusted: never an error)."""
    try:
        size = link.log.stat().st_size
        series = read_history(link.log, size, link.step, f"{link.name}@{link.step}")
    except Exception:  # noqa: BLE001 - an unreadable parent leaves the fork viewable
        return None
    if series is None:
        return None
    series.faint, series.name = True, f"{link.name}@{link.step}"
    return series


def ancestors(log: Path, shown: set[str] = frozenset()) -> tuple[list[RunSeries], str]:
    """The prefix series of ``log``'s ancestors, oldest first, each cut at the
    step its child was forked at and marked faint; and a note ("" if none)
    when an ancestor's log cannot be read.  ``shown``: resolved paths of logs
    shown whole already (``view PARENT FORK``), where the lineage stops."""
    (series,), (note,) = prefixes([log], shown)
    return series, note


def prefixes(logs: list[Path | None], shown: set[str] = frozenset()
             ) -> tuple[list[list[RunSeries]], list[str]]:
    """``ancestors`` of several logs shown together: an ancestor they share
    (siblings, ``view FORK_A FORK_B``) is read and drawn once, up to the
    latest step any of them left it at, so the siblings start from one curve
    on one x axis (each marks its own fork point).  Per log: its ancestors'
    series (oldest first; a shared one under the first log that has it) and
    its note ("" if none)."""
    chains, notes = [], []
    for log in logs:
        links, note = chain(log, shown) if log is not None else ([], "")
        chains.append(links)
        notes.append(note)
    cut: dict[str, int] = {}
    for links in chains:
        for link in links:
            cut[link.key] = max(cut.get(link.key, link.step), link.step)
    read: set[str] = set()
    out: list[list[RunSeries]] = []
    for i, links in enumerate(chains):
        mine: list[RunSeries] = []
        for link in links:
            if link.key in read:
                continue
            read.add(link.key)
            series = read_prefix(Link(link.key, link.log, link.name, cut[link.key]))
            if series is None:
                notes[i] = notes[i] or f"parent {link.name} ({link.log.parent}) cannot be read: its curve is not shown"
                break
            mine.append(series)
        out.append(mine[::-1])
    return out, notes

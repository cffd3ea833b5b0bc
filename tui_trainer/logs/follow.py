"""Following log files as they grow: one ``Feed`` per file, one watcher thread for all.

A feed waits for its file, loads it whole (``load.read_whole``), then reads
what is appended.  Truncation, replacement (a new inode), a rewritten head
and a resume that supersedes steps already shown all mean: read it again
from the start.  The watcher thread does this for every feed and posts the
results to the UI thread as messages; it never touches a series the UI can
see.  A feed that fails (unreadable, or anything unexpected) keeps its error
for the status line, and the watcher carries on with the others.

Every ``LOOK_S`` the watcher also looks whether each log is still there
(``Feed.gone``: a deleted file or folder is said, not followed in silence)
and whether a process holds its run's lock (``Feed.holder``, the only
ground for calling a run running), with or without ``--follow``.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..run.folder import fcntl, is_live  # fcntl None: no locks here (Windows)
from ..curves.series import RunSeries
from .load import read_whole
from .parsing import Item, LineParser, ReadCounts
from .paths import LogError, display_name, locate
from .tail import CHUNK, Tail, open_tail

FOLLOW_SLEEP_S = 0.1  # poll interval when nothing new arrived (records show within 0.5 s)
LOOK_S = 0.5          # how often each log is looked for, and its run's lock tested


def failure(e: BaseException) -> str:
    """An exception as one line of the status text."""
    if isinstance(e, (LogError, OSError)):
        return str(e)
    text = " ".join(str(e).split())[:200]
    return f"stopped reading: {type(e).__name__}{': ' + text if text else ''}"


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
        self.gone = ""                    # why the log is no longer there ("file deleted"); "" while it is
        self.holder: bool | None = None   # a process holds the run's lock (None: not looked, or no locks here)
        self.looked = -math.inf           # time.monotonic() of the last look

    def describe(self) -> str:
        """The feed's state as words for the status line."""
        if self.error:
            return f"{self.name}: {self.error}"
        if self.gone:
            return f"{self.name}: LOG GONE ({self.gone})"
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

    def look(self) -> bool:
        """Look again whether the log is still there and whether a process
        holds its run's lock; True when either changed.  Nothing to look at
        before the log was first found."""
        self.looked = time.monotonic()
        if self.path is None:
            return False
        folder = self.path.parent
        gone = "" if self.path.exists() else "file deleted" if folder.is_dir() else "folder missing"
        holder = self.holder
        if not gone:  # a gone folder's lock says nothing: keep what was last seen
            holder = is_live(folder) if fcntl is not None else None
        changed = (gone, holder) != (self.gone, self.holder)
        self.gone, self.holder = gone, holder
        return changed

    def fail(self, e: BaseException) -> str:
        self.error = failure(e)
        self.loading = False
        return self.error

    def open(self) -> bool:
        """Find and open the file; False while it does not exist (follow)."""
        if self.tail is not None:
            return True
        path = locate(self.arg)
        if path is None:
            return False
        tail = open_tail(path)
        if not tail.open():
            return False
        self.path, self.tail = path, tail
        return True

    def load(self, stop: threading.Event | None = None) -> RunSeries | None:
        """Read the whole file as it is now into a fresh series (None if stopped)."""
        assert self.tail is not None
        self.loading = True
        try:
            got = read_whole(self.tail, self.name, self.follow, stop)
        finally:
            self.loading = False
        if got is None:
            return None
        series, parser = got
        self.counts = parser.counts
        self.parser = LineParser(bulk=False, counts=self.counts)
        self.parser.max_step, self.parser.lineno = parser.max_step, parser.lineno
        self.parser.resumes = parser.resumes
        self.loaded = True
        return series

    def read_new(self) -> list[Item] | None:
        """Records appended since the last read; None when the file was
        truncated, replaced or resumed over and must be loaded again."""
        assert self.tail is not None and self.parser is not None
        if self.tail.changed() or self._moved():
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

    def _moved(self) -> bool:
        """The path now names another file: a Hugging Face output folder's
        newer checkpoint (``locate``).  A log that is gone is not moved."""
        now = locate(self.arg)
        return now is not None and now != self.path

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


# ("series", i, RunSeries) | ("items", i, [Item]) | ("error", i, str) | ("look", i, None): feed i's gone or holder changed
Message = tuple[str, int, Any]


class Watcher(threading.Thread):
    """Loads every feed not loaded yet; in follow mode, then tails them all.

    Results go to ``out`` as messages for the UI thread.  When the UI falls
    behind, it waits.
    """

    def __init__(self, feeds: list[Feed], out: queue.Queue, follow: bool,
                 on_post: Callable[[], None] | None = None):
        super().__init__(name="log-watcher", daemon=True)
        self.feeds = feeds
        self.out = out
        self.follow = follow
        self.stop_event = threading.Event()
        self.on_post = on_post
        self.loaded = False  # every feed has been loaded once (or failed): without --follow, all that is left is looking

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
                    if time.monotonic() - feed.looked >= LOOK_S and feed.look():
                        self.post(("look", feed.index, None))
                except Exception as e:  # noqa: BLE001 - whatever it is, it is this feed's, shown, not fatal
                    self.post(("error", feed.index, feed.fail(e)))
            self.loaded = self.loaded or all(f.loaded or f.error for f in self.feeds)
            while self.out.qsize() > 50 and not stop.is_set():  # the UI is behind: let it catch up
                stop.wait(FOLLOW_SLEEP_S)
            if not busy:
                stop.wait(FOLLOW_SLEEP_S if self.follow or not self.loaded else LOOK_S)

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

"""A resumed run's history: its log as it was before this session, read back.

The live dashboard of ``train --resume`` shows the whole run, not only the
steps since the resume.  What the earlier sessions wrote is read from the
log up to ``end``, the log's size when this session began: the session's own
records (from its ``run_start`` on, the seam) come live, so nothing is read
twice.  The records the resume supersedes (steps above the checkpoint it
continues from) are dropped as the viewer drops them (``resumes.py``).
"""
from __future__ import annotations

import threading
from pathlib import Path

from ..curves.series import RunSeries
from .load import read_whole
from .tail import CHUNK, Tail


class BoundedTail(Tail):
    """A ``Tail`` that reads nothing past byte ``end``."""

    def __init__(self, path: Path, end: int):
        super().__init__(path)
        self.end = end

    def read_chunk(self, limit: int = CHUNK) -> bytes | None:
        left = self.end - self.offset
        return super().read_chunk(min(limit, left)) if left > 0 else None


def read_history(path: Path, end: int, resumed_at: int, name: str,
                 stop: threading.Event | None = None) -> RunSeries | None:
    """The first ``end`` bytes of the log at ``path`` as a series, less what a
    resume at step ``resumed_at`` supersedes; None when there is no such log
    (or ``stop`` was set).  Raises ``LogError`` for a file that is not a log."""
    tail = BoundedTail(path, end)
    if end <= 0 or not tail.open():
        return None
    try:
        got = read_whole(tail, name, follow=False, stop=stop, then_resumed=resumed_at)
    finally:
        tail.close()
    return got[0] if got is not None else None

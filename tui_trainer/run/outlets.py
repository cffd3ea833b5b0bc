"""What a run opens while it trains, and closes in reverse: the JSONL log,
the control socket (``tui-trainer attach``), the signal handlers, and the
lock on its folder it holds from the start.  ``run.Run`` has one ``Outlets``;
torch is not imported here.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from .folder import RunLock


class Outlets:
    """A run's open files, socket, signal handlers and lock (see the module docstring)."""

    def __init__(self, lock: RunLock | None = None) -> None:
        self.lock = lock
        self.log: Any = None  # log_writer.JsonlSink
        self.control: Any = None  # the control channel's server
        self.signals: Any = None  # signals.RunSignals
        self._closing = threading.Lock()

    def take_lock(self, lock: RunLock) -> None:
        """The lock of a folder given after the run was made (``Run.take_folder``)."""
        assert self.lock is None, "a run's folder is locked once"
        self.lock = lock

    def open_log(self, folder: Path) -> Any:
        from .log_writer import LOG_NAME, JsonlSink

        self.log = JsonlSink(folder / LOG_NAME)
        return self.log

    def open_control(self, run: Any, folder: Path) -> None:
        from ..control.channel import start_for_run

        self.control = start_for_run(run, folder)

    def install_signals(self, run: Any) -> None:
        if self.signals is None:
            from .signals import RunSignals

            self.signals = RunSignals(run).install()

    def close(self) -> None:
        """Close in reverse, then drop the lock.  Safe to call twice, and from
        another thread; a Ctrl-C arriving meanwhile waits until the socket and
        lock are gone (or it would leave a stale socket behind)."""
        with self._closing:
            if self.signals is not None:
                self.signals.hold()
            try:
                if self.control is not None:
                    self.control.close()
                    self.control = None
                if self.log is not None:
                    self.log.close()
                if self.lock is not None:
                    self.lock.release()
                    self.lock = None
            finally:
                if self.signals is not None:
                    self.signals.uninstall()

    def abandon(self) -> None:
        """In a child process after ``fork``: close our copies of the log, the
        socket and the lock without a byte written, a file unlinked or the lock
        released (the parent holds them all), and give back the signal handlers."""
        self._closing = threading.Lock()  # one another thread held at the fork stays held forever here
        for part, how in ((self.log, "abandon"), (self.control, "abandon"), (self.lock, "release")):
            if part is not None:
                try:
                    getattr(part, how)()  # our copies only: closing a copy unlocks nothing
                except Exception:
                    pass
        self.log = self.control = self.lock = None
        if self.signals is not None:
            try:
                self.signals.uninstall()
            except Exception:
                pass
            self.signals = None

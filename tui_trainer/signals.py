"""How a training process answers signals.

- SIGINT (Ctrl-C) and SIGTERM: stop after the current step; the engine then
  writes a final checkpoint and a ``run_end`` record ("stopped").
- A second SIGINT or SIGTERM: leave at once.  ``KeyboardInterrupt`` is raised
  in the main thread; a headless run (the engine runs in the main thread)
  writes a ``run_end`` with status "killed" on its way out and the process
  exits 130.  Every line already in the log was flushed when written, and
  checkpoints are atomic, so the run stays resumable from its last save.
- SIGHUP (the SSH connection dropped): the run carries on.  Whichever of
  stdin, stdout and stderr were the lost terminal are pointed at /dev/null, so
  later prints neither fail with EIO nor kill the process, and the trainer
  turns headless (divergence now stops the run instead of pausing for a
  person who is gone).  The JSONL log and checkpoints keep being written:
  reconnect and ``tui-trainer view --follow RUN_DIR``, or ``--resume`` it
  once it ends.  With the dashboard, hangup callbacks registered in
  ``on_hangup`` run (the dashboard closes itself there); ``cli`` then
  waits for the trainer thread to finish before the process exits.
- With the dashboard, the first SIGINT/SIGTERM also runs ``on_stop``
  callbacks: the dashboard closes, and its way out stops the trainer after
  the step (final checkpoint, run_end) and waits for it.  (Ctrl-C typed at
  the dashboard is a key, not a signal: the dashboard handles it.)

Handlers can only be installed from the main thread; elsewhere ``RunSignals``
does nothing, so tests and embedders that drive a Trainer from a worker
thread are unaffected.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SIGHUP = getattr(signal, "SIGHUP", None)  # not on Windows


def detach_terminal() -> list[int]:
    """Point the standard fds that are a (now gone) terminal at /dev/null.
    Returns the fds redirected.  A redirected log file is left alone."""
    moved = []
    try:
        null = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return moved
    try:
        for fd in (0, 1, 2):
            try:
                if os.isatty(fd):
                    os.dup2(null, fd)
                    moved.append(fd)
            except OSError:
                # isatty on a hung-up terminal can fail too: it is gone either way
                try:
                    os.dup2(null, fd)
                    moved.append(fd)
                except OSError:
                    pass
    finally:
        os.close(null)
    return moved


class RunSignals:
    """Install the handlers above for one ``trainer`` while in the ``with`` block;
    the previous handlers come back on exit."""

    def __init__(self, trainer: Any, *, hangup: bool = True):
        self.trainer = trainer
        self.hangup = hangup and SIGHUP is not None
        self.hung_up = threading.Event()
        self.on_hangup: list[Callable[[], Any]] = []
        self.on_stop: list[Callable[[], Any]] = []  # after the first SIGINT/SIGTERM
        self.stop_count = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "RunSignals":
        # The dashboard registers its ways out here.
        self.trainer.on_hangup = self.on_hangup
        self.trainer.on_stop_signal = self.on_stop
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in STOP_SIGNALS:
            self._old[sig] = signal.signal(sig, self._on_stop)
        if self.hangup:
            self._old[SIGHUP] = signal.signal(SIGHUP, self._on_hangup)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._old.clear()

    def _on_stop(self, signum: int, frame: Any) -> None:
        self.stop_count += 1
        if self.stop_count > 1:
            raise KeyboardInterrupt  # the second one: leave now
        self.trainer.request_stop()
        _run_all(self.on_stop)
        try:
            name = signal.Signals(signum).name
            print(f"{name}: stopping after this step (again to quit at once)", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    def _on_hangup(self, signum: int, frame: Any) -> None:
        if self.hung_up.is_set():
            return
        self.hung_up.set()
        detach_terminal()
        t = self.trainer
        t.interactive = False
        if getattr(t, "paused", False) and getattr(t, "diverged", False):
            t.request_stop()  # nobody is left to look at a diverged, paused run
        _run_all(self.on_hangup)


def _run_all(callbacks: list[Callable[[], Any]]) -> None:
    for cb in list(callbacks):
        try:
            cb()
        except Exception:
            pass


class TerminalSink:
    """Wraps a sink that prints to the terminal (``ConsoleSink``) so that a
    terminal that vanished (EIO/EPIPE before our SIGHUP handler even ran)
    silences the printing instead of failing the run: the JSONL log is the
    record, terminal lines are a courtesy."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.lost = False

    def emit(self, record: Any) -> None:
        if self.lost:
            return
        try:
            self.inner.emit(record)
        except OSError:
            self.lost = True
            detach_terminal()

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
  once it ends.  With the dashboard, hangup callbacks registered with
  ``on_hangup`` run (the dashboard closes itself there); ``cli`` then
  waits for the trainer thread to finish before the process exits.
  Which fds were the terminal is noted when the handlers are installed:
  after a real hangup ``isatty`` on the dead pty can answer False.
- With the dashboard, the first SIGINT/SIGTERM also runs ``on_stop``
  callbacks (``on_stop``): the dashboard closes, and its way out stops the trainer after
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


def terminal_fds() -> list[int]:
    """The standard fds that are a terminal now (checked while it is alive:
    after a real hangup ``isatty`` on the dead pty can say False)."""
    out = []
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                out.append(fd)
        except OSError:
            pass
    return out


def detach_terminal(fds: list[int] | None = None) -> list[int]:
    """Point the standard fds that were a (now gone) terminal at /dev/null.
    ``fds``: the ones known to have been a terminal (``terminal_fds`` at
    start); without it, those that still say so.  Returns the fds redirected.
    A redirected log file is left alone."""
    moved = []
    try:
        null = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return moved
    try:
        for fd in (0, 1, 2):
            if fds is not None:
                gone = fd in fds
            else:
                try:
                    gone = os.isatty(fd)
                except OSError:
                    gone = True  # isatty on a hung-up terminal can fail too: it is gone either way
            if gone:
                try:
                    os.dup2(null, fd)
                    moved.append(fd)
                except OSError:
                    pass
    finally:
        os.close(null)
    return moved


class RunSignals:
    """Signal handling for one ``run`` (a ``run.Run``) between ``install``
    and ``uninstall``; the previous handlers come back after.

    A handler only sets flags and schedules: the loop acts at its next safe
    point (``Run.between_steps``).  Ways out a UI needs are registered with
    ``on_hangup(callback)`` and ``on_stop(callback)``.
    """

    def __init__(self, run: Any, *, hangup: bool = True):
        self.run = run
        self.hangup = hangup and SIGHUP is not None
        self.hung_up = run.hung_up if hasattr(run, "hung_up") else threading.Event()
        self._on_hangup: list[Callable[[], Any]] = []
        self._on_stop: list[Callable[[], Any]] = []  # after the first SIGINT/SIGTERM
        self.stop_count = 0
        self._old: dict[int, Any] = {}
        self._ttys: list[int] = []

    def on_hangup(self, callback: Callable[[], Any]) -> None:
        self._on_hangup.append(callback)

    def on_stop(self, callback: Callable[[], Any]) -> None:
        self._on_stop.append(callback)

    def install(self) -> "RunSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        self._ttys = terminal_fds()
        for sig in STOP_SIGNALS:
            self._old[sig] = signal.signal(sig, self._stop_signal)
        if self.hangup:
            self._old[SIGHUP] = signal.signal(SIGHUP, self._hangup_signal)
        return self

    def hold(self) -> None:
        """While a run winds down: a stop signal waits (is ignored) instead of
        interrupting the teardown halfway.  ``uninstall`` ends it."""
        if threading.current_thread() is not threading.main_thread() or not self._old:
            return
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    def uninstall(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may touch handlers; the process is leaving anyway
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._old.clear()

    def __enter__(self) -> "RunSignals":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.uninstall()

    def _stop_signal(self, signum: int, frame: Any) -> None:
        self.stop_count += 1
        if self.stop_count > 1:
            raise KeyboardInterrupt  # the second one: leave now
        self.run.request_stop()
        _run_all(self._on_stop)
        try:
            name = signal.Signals(signum).name
            print(f"{name}: stopping after this step (again to quit at once)", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    def _hangup_signal(self, signum: int, frame: Any) -> None:
        if self.hung_up.is_set():
            return
        detach_terminal(self._ttys or None)
        if hasattr(self.run, "hang_up"):
            self.run.hang_up()
        else:
            self.hung_up.set()
        _run_all(self._on_hangup)


class StopBeforeStart(KeyboardInterrupt):
    """SIGINT or SIGTERM before training began (``StartupSignals``): the
    message to show and the exit status, 128 + the signal's number."""

    def __init__(self, signum: int):
        super().__init__(f"{signal.Signals(signum).name}: stopped before training began")
        self.status = 128 + signum


class StartupSignals:
    """While a process starts (importing torch, loading the data, building the
    model, before ``RunSignals`` takes over): SIGINT and SIGTERM raise
    ``StopBeforeStart`` in the main thread, so the way out (``finally``
    blocks) removes what was begun, and a blocking call the signal interrupts
    cannot swallow it.  There is nothing trained yet to stop after."""

    def __init__(self) -> None:
        self._old: dict[int, Any] = {}

    def install(self) -> "StartupSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._raise)
        return self

    def uninstall(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._old.clear()

    def __enter__(self) -> "StartupSignals":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.uninstall()

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise StopBeforeStart(signum)


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
        self.ttys = terminal_fds()

    def emit(self, record: Any) -> None:
        if self.lost:
            return
        try:
            self.inner.emit(record)
        except OSError:
            self.lost = True
            detach_terminal(self.ttys or None)

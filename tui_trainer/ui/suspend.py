"""Ctrl-Z: the dashboard suspends, as every full-screen terminal program does.

Textual reads the terminal raw, so Ctrl-Z is a key, not a signal: its
binding calls ``Suspender.suspend``, which

- writes a ``pause`` record with reason ``suspended`` when this process
  trains the run (a live dashboard), so the time stopped shows in the log as
  a pause and the rate and ETA leave it out (``series.RunSeries``);
- stops drawing (``App._begin_batch``: no frame is written until the
  dashboard is back in the foreground);
- sends itself SIGTSTP (``App.action_suspend_process``): Textual's Linux
  driver restores the terminal and stops the process; the shell prompt returns.

On SIGCONT (``fg`` or ``bg``) the run goes on and a ``resume`` record is
written.  Textual's own SIGCONT handler would restart the screen at once, and
a process in the background that touches the terminal is stopped again
(SIGTTOU): ``bg`` would stop training too.  So the handler here restarts the
screen only once this process group has the terminal again, checking every
half second: after ``bg`` training goes on without drawing, and ``fg``
redraws the dashboard whole.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

from textual.app import App
from textual.binding import Binding

from ..control.commands import Command
from ..records import Paused, Resumed

BINDING = Binding("ctrl+z", "suspend_process", "suspend", show=False)
POLL_S = 0.5
SETTLE_S = 2.0  # the longest Ctrl-Z waits for the loop to pause at its next safe point


class Suspender:
    def __init__(self, app: Any, install: bool = False):
        self.app = app
        self.suspended = False     # drawing stopped by a Ctrl-Z, until the terminal is ours again
        self.noted = False         # a pause record written for this suspension, not yet resumed
        self._timer: Any = None
        self._installed = False
        if install:
            self.install()

    def can_suspend(self) -> bool:
        driver = getattr(self.app, "_driver", None)
        return (sys.platform != "win32" and driver is not None and not self.app.is_headless
                and getattr(driver, "can_suspend", False) and hasattr(driver, "fileno"))

    def install(self) -> None:
        """Take SIGCONT over from the driver (see the module docstring)."""
        if self._installed or not self.can_suspend():
            return
        loop = asyncio.get_running_loop()

        def on_cont(*_: Any) -> None:
            try:
                loop.call_soon_threadsafe(self.continued)
            except RuntimeError:  # the app has ended (its loop is closed): nothing to bring back
                pass

        signal.signal(signal.SIGCONT, on_cont)
        self._installed = True

    def suspend(self) -> None:
        if not self.can_suspend():
            self.app.notify("Ctrl-Z: this terminal cannot suspend the dashboard", timeout=3)
            return
        self.install()
        self.note(paused=True)
        if not self.suspended:
            self.suspended = True
            self.app._begin_batch()  # no frame drawn while stopped or in the background
        App.action_suspend_process(self.app)  # Textual's: SIGTSTP to this process

    def continued(self) -> None:
        """SIGCONT: training goes on; the screen comes back once in the foreground."""
        self.note(paused=False)
        if self.suspended and not self.poll() and self._timer is None:
            self._timer = self.app.set_interval(POLL_S, self.poll)

    def poll(self) -> bool:
        """Restart the screen if the terminal is this process group's again."""
        if not self.suspended:
            return True
        if not self.in_foreground():
            return False
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.suspended = False
        try:
            self.app._driver.resume_application_mode()
        finally:
            self.app._end_batch()
            self.app.refresh(layout=True)
            self.app.screen.refresh(layout=True)
        return True

    def in_foreground(self) -> bool:
        try:
            return os.tcgetpgrp(self.app._driver.fileno) == os.getpgrp()
        except (OSError, AttributeError, ValueError):
            return True  # no terminal to ask: try

    def note(self, paused: bool) -> None:
        """A pause (reason ``suspended``) or its resume in the log of the run
        this process trains; nothing for a run another process trains.

        The run pauses on its loop's thread (``Run.suspend``), which first
        brings the steps still in flight to the log: the pause is written
        after the steps it follows, at the step trained, and the process is
        stopped only once the loop waits there (at most ``SETTLE_S``: a loop
        busy with an eval pauses when it is done, after the ``fg``)."""
        source = self.app.source if self.app.mode == "live" else None
        trainer = getattr(source, "trainer", None)
        if trainer is None or paused == self.noted:
            return
        run = getattr(source, "run", None)
        if callable(getattr(run, "suspend", None)):
            if paused and (run.paused or run.stopping or getattr(source, "end", None) is not None):
                return  # already paused by a person (that pause goes on), or no longer training
            try:
                if paused:
                    run.suspend()
                    deadline = time.monotonic() + SETTLE_S
                    while not run.paused and time.monotonic() < deadline and not run.stopping:
                        time.sleep(0.005)
                else:
                    run.send(Command.RESUME)
            except Exception:  # noqa: BLE001 - a run that cannot be asked must not keep the terminal
                return
            self.noted = paused
            return
        if not hasattr(trainer, "emit"):
            return
        if paused and getattr(trainer, "paused", False):
            return  # already paused by a person: that pause goes on
        step = getattr(trainer, "step", 0)
        try:
            trainer.emit(Paused(step=step, reason="suspended") if paused else Resumed(step=step))
        except Exception:  # a record that cannot be written must not keep the terminal
            return
        self.noted = paused

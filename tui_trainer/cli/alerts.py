"""Alerts: ``--notify`` and ``--on-event`` (train, attach, view --follow).

``AlertSink`` is a sink (``run.Sink``): it reads the records going by and
turns four of them into events:

- ``end``: the run ended, any way (``run_end``; its status in ``TUI_TRAINER_STATUS``);
- ``diverged``: the run paused itself because its steps kept going non-finite;
- ``nonfinite``: a step's loss or gradient was NaN/inf (the first ``bad_step`` of a streak);
- ``best``: a new best val (only with ``--notify-best``).

On each, ``--notify`` rings the terminal bell and sends a desktop
notification by terminal escape (OSC 9 and OSC 777, which tmux and common
terminals pass on), and ``--on-event CMD`` runs CMD through the shell with
the event's figures in ``TUI_TRAINER_*`` environment variables, never in
its command line.  CMD runs on a thread of its own, one at a time: it never
delays a step; one that hangs is killed after ``--on-event-timeout``
seconds, and one that fails is reported in one line.

These escapes are the one deliberate exception to ``terminal.printable``:
``TerminalOut`` writes them to the controlling terminal itself, and the text
inside them passes ``printable`` first and loses any BEL/ESC left, so a run
name cannot end the sequence early.  Under the dashboard Textual owns the
terminal: ``TerminalOut(deferred=True)`` queues them and the app writes them
through its driver (``ui.app``).

No Textual here.
"""
from __future__ import annotations

import math
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..records import BadStep, Eval, Paused, Record, RunEnd, RunStart, TrainStep
from ..terminal import printable

BEL, ESC = "\x07", "\x1b"
DEFAULT_TIMEOUT_S = 30.0
MAX_PENDING = 16  # events waiting for CMD; more are dropped, with one line said
TITLE = "tui-trainer"


def osc_text(value: Any, limit: int = 200) -> str:
    """Text safe inside an OSC: printable, one line, no BEL/ESC/';' to end it early."""
    s = printable(value, newlines=False).replace(BEL, "").replace(ESC, "")
    return s.replace(";", ",")[:limit]


def escapes(title: str, body: str) -> str:
    """The bell, then the notification as OSC 9 and OSC 777."""
    t, b = osc_text(title), osc_text(body)
    return f"{BEL}{ESC}]9;{t}: {b}{BEL}{ESC}]777;notify;{t};{b}{BEL}"


class TerminalOut:
    """Where alerts go on the screen.  Direct: written at once to the
    controlling terminal (``/dev/tty``, else standard output when it is a
    terminal; neither: nothing).  Deferred (a dashboard): queued for the app
    to write; ``undefer`` writes what is left directly once the app is gone."""

    def __init__(self, deferred: bool = False):
        self.deferred = deferred
        self._q: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()

    def put(self, kind: str, text: str) -> None:
        """``kind``: "escape" (terminal bytes) or "say" (a line for a person)."""
        if self.deferred:
            self._q.put((kind, text))
        elif kind == "escape":
            write_terminal(text)
        else:
            say(text)

    def take(self) -> list[tuple[str, str]]:
        out = []
        while True:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                return out

    def undefer(self) -> None:
        self.deferred = False
        for kind, text in self.take():
            self.put(kind, text)


def write_terminal(text: str) -> None:
    """``text`` (the escapes built by ``escapes``) to the controlling terminal."""
    data = text.encode("utf-8", "replace")
    try:
        fd = os.open("/dev/tty", os.O_WRONLY | os.O_NOCTTY)
    except OSError:
        fd = None
    try:
        if fd is not None:
            os.write(fd, data)
            return
        out = sys.__stdout__
        if out is not None and out.isatty():
            out.flush()
            os.write(out.fileno(), data)
    except (OSError, ValueError, AttributeError):
        pass  # no terminal to ring: the --on-event command still runs
    finally:
        if fd is not None:
            os.close(fd)


def say(line: str) -> None:
    try:
        print(printable(line, newlines=False), file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


class AlertSink:
    """Records in, alerts out (see the module's docstring)."""

    def __init__(self, run_dir: Path | str | None, *, notify: bool = False, best: bool = False,
                 command: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                 out: TerminalOut | None = None):
        self.run_dir = run_dir
        self.notify = notify
        self.best_alerts = best
        self.command = command
        self.timeout = timeout
        self.out = out or TerminalOut()
        self.name = Path(run_dir).name if run_dir else "run"
        self.best: float | None = None
        self.train_loss: float | None = None
        self.total: int | None = None
        self.hooks = HookRunner(command, timeout, self.out) if command else None

    def seed_best(self, vals: list[float]) -> None:
        """The best val of the history already shown (attach, follow): only a better one is news."""
        finite = [v for v in vals if v is not None and math.isfinite(v)]
        if finite and self.best is None:
            self.best = min(finite)

    def emit(self, r: Record) -> None:
        if isinstance(r, RunStart):
            self.name, self.total = r.run_name or self.name, r.total_steps
        elif isinstance(r, TrainStep):
            self.train_loss = r.train_loss
        elif isinstance(r, Eval) and r.val_loss is not None and math.isfinite(r.val_loss):
            if self.best is None or r.val_loss < self.best:
                news = self.best is not None
                self.best = r.val_loss
                if news and self.best_alerts:
                    self.fire("best", r.step, f"new best val {r.val_loss:.4f} at step {r.step}",
                              val_loss=r.val_loss)
        elif isinstance(r, BadStep) and r.consecutive == 1:
            self.fire("nonfinite", r.step, f"step {r.step} went non-finite (skipped)",
                      train_loss=r.train_loss)
        elif isinstance(r, Paused) and r.reason == "diverged":
            self.fire("diverged", r.step, f"diverged at step {r.step}: paused")
        elif isinstance(r, RunEnd):
            val = "" if r.val_loss is None else f", val {r.val_loss:.4f}"
            self.fire("end", r.step, f"run {r.status} at step {r.step}{val}", status=r.status,
                      val_loss=r.val_loss, error=r.error)

    def fire(self, event: str, step: int, text: str, **figures: Any) -> None:
        if self.notify:
            self.out.put("escape", escapes(f"{TITLE} {self.name}", text))
        if self.hooks is not None:
            env = {"TUI_TRAINER_EVENT": event, "TUI_TRAINER_RUN": str(self.run_dir or ""),
                   "TUI_TRAINER_NAME": self.name, "TUI_TRAINER_STEP": str(step),
                   "TUI_TRAINER_MESSAGE": text}
            if self.total is not None:
                env["TUI_TRAINER_TOTAL_STEPS"] = str(self.total)
            if self.best is not None:
                env["TUI_TRAINER_BEST_VAL"] = repr(self.best)
            figures.setdefault("train_loss", self.train_loss)
            for k, v in figures.items():
                if v is not None:
                    env[f"TUI_TRAINER_{k.upper()}"] = v if isinstance(v, str) else repr(v)
            self.hooks.submit(event, {k: printable(v, newlines=False) for k, v in env.items()})

    def close(self) -> None:
        """Wait for the last command (at most its timeout), then leave."""
        if self.hooks is not None:
            self.hooks.close()


class HookRunner:
    """Runs ``--on-event``'s command, one at a time, on a thread of its own."""

    def __init__(self, command: str, timeout: float, out: TerminalOut,
                 popen: Callable[..., subprocess.Popen] = subprocess.Popen):
        self.command = command
        self.timeout = timeout
        self.out = out
        self.popen = popen
        self._q: queue.Queue[tuple[str, dict[str, str]] | None] = queue.Queue()
        self._dropped = 0
        self.child: subprocess.Popen | None = None
        self.log: list[str] = []  # what was said, newest last (tests read it)
        self._thread = threading.Thread(target=self._work, name="on-event", daemon=True)
        self._thread.start()

    def submit(self, event: str, env: dict[str, str]) -> None:
        if self._q.qsize() >= MAX_PENDING and event != "end":
            self._dropped += 1
            return
        self._q.put((event, env))

    def _say(self, line: str) -> None:
        self.log.append(line)
        self.out.put("say", line)

    def _work(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            event, env = item
            if self._dropped:
                self._say(f"--on-event: {self._dropped} event(s) skipped: the command was still busy")
                self._dropped = 0
            self._run(event, env)

    def _run(self, event: str, env: dict[str, str]) -> None:
        try:
            child = self.child = self.popen(
                self.command, shell=True, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            self._say(f"--on-event ({event}): could not start the command: {e}")
            return
        try:
            _, err = child.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill(child)
            self._say(f"--on-event ({event}): the command ran over {self.timeout:g}s and was killed "
                      "(raise --on-event-timeout if it needs longer)")
            return
        finally:
            self.child = None
        if child.returncode != 0:
            last = (err or b"").decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            tail = f": {last[0][:200]}" if last[0] else ""
            self._say(f"--on-event ({event}): the command failed (exit status {child.returncode}){tail}")

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=self.timeout + 2.0)
        child = self.child
        if child is not None:  # still busy past its time: the run does not wait
            _kill(child)


def _kill(child: subprocess.Popen) -> None:
    """The command and whatever it started (its own session)."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        try:
            child.kill()
        except OSError:
            pass
    try:
        child.communicate(timeout=5)
    except (subprocess.TimeoutExpired, OSError, ValueError):
        pass


def alert_sink(args: Any, run_dir: Path | str | None, *, deferred: bool = False) -> AlertSink | None:
    """The sink the flags ask for (``add_alert_flags``), or None."""
    notify = bool(getattr(args, "notify", False) or getattr(args, "notify_best", False))
    command = getattr(args, "on_event", None)
    if not notify and not command:
        return None
    return AlertSink(run_dir, notify=notify, best=bool(getattr(args, "notify_best", False)), command=command,
                     timeout=getattr(args, "on_event_timeout", DEFAULT_TIMEOUT_S),
                     out=TerminalOut(deferred=deferred))

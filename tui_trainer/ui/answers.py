"""Every key gets a visible answer: a toast (``app.say``) and a note at the
end of the status line for a few seconds (``NOTE_S``).

This holds that note, the stop prompt that waits for a second press (q or x
within ``CONFIRM_S``), and what a record of the steered run says about a
command asked for from this window or another one (a pause, a forced eval, a
manual checkpoint, a refusal, the end).  What the run answers a typed
request is ``command_line.TypedCommands``'.
"""
from __future__ import annotations

import math
from typing import Any

from ..curves.pauses import compile_failed
from ..fmt import fmt_int, fmt_loss
from ..records import Ack, Checkpoint, Eval, LrJump, Paused, Record, Resumed, RunEnd, RunStart, Status
from . import safe
from .status_line import StatusLine

CONFIRM_S = 3.0        # a second q (live) or x (attach) within this stops the run
NOTE_S = 8.0           # how long an answer stays on the status line


class Answers:
    """The app's status-line note and stop prompt, and the toasts records earn."""

    def __init__(self, app: Any):
        self.app = app  # the DashboardApp: its clock, say, source, mode and state
        self._note: tuple[str, float] = ("", -math.inf)  # (text, shown until)
        self._asked_at = -math.inf  # when a stop was first asked for (confirm window)
        self._prompt = ""           # its words on the status line

    # --- the note ---
    def set_note(self, text: str, seconds: float = NOTE_S) -> None:
        app = self.app
        self._note = (text, app.clock() + seconds)
        if app.is_running and app.main.query(StatusLine):
            app.main.query_one(StatusLine).show(app.runs, self.note_text())

    def note_text(self) -> str:
        app = self.app
        bits = [app.source.status_text()]
        if app.mode == "attach" and app.state == "offline":
            bits.append("no live run: view only")
        text, until = self._note
        if text and app.clock() < until:
            bits.append(text)
        return " · ".join(b for b in bits if b)

    # --- the stop prompt ---
    def confirmed(self, short: str, prompt: str) -> bool:
        """True on the second ask within ``CONFIRM_S``; the first shows the
        prompt (``short`` on the status line, ``prompt`` as a toast)."""
        app = self.app
        now = app.clock()
        if now - self._asked_at <= CONFIRM_S:
            self._asked_at = -math.inf
            self._note = ("", -math.inf)
            return True
        self._asked_at, self._prompt = now, short
        self.set_note(short, CONFIRM_S)
        app.say(prompt, warn=True, timeout=CONFIRM_S)
        app.update_view()
        return False

    def drop_prompt(self) -> None:
        """A stop prompt means nothing once the run cannot be stopped."""
        if self._asked_at > -math.inf:
            self._asked_at = -math.inf
            if self._note[0] == self._prompt:
                self._note = ("", -math.inf)

    # --- what records say ---
    def record(self, r: Record) -> None:
        """What a record says about a command (from here or another window), as a toast."""
        app = self.app
        app.typed.record(r)  # a change, a requested sample
        step = fmt_int(r.step)
        if isinstance(r, Paused) and r.reason != "diverged":
            self.tell(f"paused at step {step}")
        elif isinstance(r, Resumed):
            self.tell(f"resumed at step {step}")
        elif isinstance(r, Eval) and r.forced:
            self.tell(f"eval at step {step}: val {fmt_loss(r.val_loss)}, train {fmt_loss(r.train_loss)}")
        elif isinstance(r, Checkpoint) and r.reason == "manual":
            name = safe.plain(r.path, 200, newlines=False).rsplit("/", 1)[-1]
            self.tell(f"✓ checkpoint saved at step {step}", f"✓ checkpoint saved at step {step}: {name}")
        elif isinstance(r, LrJump):
            self.set_note(f"lr jumps at step {step}")
            app.say(r.message, warn=True)
        elif isinstance(r, Status) and compile_failed(r):  # --compile asked for and not had: said, not only logged
            app.say(safe.plain(r.detail, 200, newlines=False), warn=True)
        elif isinstance(r, RunStart) and isinstance(r.device, str) and "; " in r.device:
            # The device's notes (a switch asked for and off, a CPU run's memory): headless prints them on its
            # first line; the dashboard shows no device, so they are said here.
            app.say(safe.plain(r.device.split("; ", 1)[1], 500, newlines=False), warn=True, timeout=12)
        elif isinstance(r, Ack) and not r.ok:
            self.tell(f"✗ {safe.plain(r.command, 40)} refused", f"{r.command} refused: {r.message}", ok=False)
        elif isinstance(r, RunEnd):
            after = {"live": "; q quits", "attach": "; q closes"}.get(app.mode, "")
            self.tell(f"run {safe.plain(r.status, 20)} at step {step}{after}")

    def tell(self, short: str, text: str = "", ok: bool = True) -> None:
        self.set_note(short)
        self.app.say(text or short, ok=ok)

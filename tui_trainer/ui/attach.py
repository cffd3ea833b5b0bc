"""``tui-trainer attach RUN_DIR``: the dashboard on a run another process is training.

The panes follow RUN_DIR/losses.jsonl exactly as ``view --follow`` does; the
steering keys (p, e, c, and x to stop the run) go over the run's control
channel (``control.py``), and the answer shows in the status line.  Quitting
only closes this window: the run goes on, and any number of viewers may be
attached at once.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Static

from ..control import ControlClient
from ..commands import Command
from .viewer import FileSource, ViewerApp
from .widgets import HELP, HelpScreen

CONFIRM_S = 3.0  # x must be pressed twice within this to stop the run

ATTACH_NOTE = """\
[b]Attached[/b] to a run in another process: p, e, c and x x (stop the
  run) go over its control channel; the answer shows at the top right
  of the status line.  q only closes this window: the run goes on.

"""


class AttachHelp(HelpScreen):
    def compose(self):
        with Vertical(id="help-box"):
            yield Static(ATTACH_NOTE + HELP.replace("quit cleanly (final checkpoint)", "close (the run goes on)"),
                         id="help-text")


class AttachSource(FileSource):
    """A followed log that can be steered: commands go over the control socket.

    ``send`` never blocks the UI: each request runs in a short thread of its
    own (a run stopped with SIGSTOP would otherwise freeze the screen for the
    client's timeout), and the answer is shown when it arrives.
    """

    can_steer = True

    def __init__(self, run_dir: Path, client: ControlClient | None = None):
        super().__init__([run_dir], follow=True)
        self.run_dir = run_dir
        # Requests run off the UI thread, so a generous timeout costs nothing.
        self.client = client or ControlClient(run_dir, timeout=10.0)
        self.note = "" if self.client.available() else "no live run: view only"
        self._lock = threading.Lock()
        self.answers: list[dict[str, Any]] = []  # every answer, newest last (tests read it)
        self.on_answer: Callable[[str, bool], Any] | None = None  # called from the request thread

    def send(self, command: Command | str) -> None:
        cmd = Command(command).value
        self.note = f"{cmd}…"  # short: the status line is one line at 80 columns
        threading.Thread(target=self._request, args=(cmd,), name=f"attach-{cmd}", daemon=True).start()

    def _request(self, cmd: str) -> None:
        if cmd == Command.TOGGLE_PAUSE.value:
            # Several viewers may be attached, so a blind flip could undo
            # another's: ask the run whether it is paused, then say which.
            status = self.client.send("status")
            if status.get("ok"):
                paused = status.get("state") == "paused"
            else:
                paused = bool(self.runs) and self.runs[0].state in ("paused", "diverged")
            cmd = "resume" if paused else "pause"
        answer = self.client.send(cmd)
        ok = bool(answer.get("ok"))
        with self._lock:
            self.answers.append(answer)
            self.note = f"✓ {cmd} @{answer.get('step')}" if ok else f"✗ {cmd}"
        if ok:
            again = " (already asked)" if answer.get("coalesced") else ""
            message = f"{cmd}: acknowledged at step {answer.get('step')}{again}"
        else:
            message = f"{cmd} refused: {answer.get('error', 'no answer')}"
        if self.on_answer is not None:
            self.on_answer(message, ok)

    def status_text(self) -> str:
        base = super().status_text().replace("following", "attached", 1)
        if self.note:
            base = base.replace("attached", "", 1).strip(" ·")
        return " · ".join(b for b in (base, self.note) if b)


class AttachApp(ViewerApp):
    """The viewer with the steering keys live, and x to stop the run."""

    BINDINGS = [Binding("x", "stop_run", "stop run")]

    def __init__(self, source: AttachSource):
        super().__init__(source, title=f"tui-trainer · attached to {source.run_dir.name}")
        self.steering = source
        self._stop_asked_at = -1e9
        source.on_answer = self._show_answer

    def _show_answer(self, message: str, ok: bool) -> None:
        """The control channel's answer, as a toast (called from the request thread)."""
        try:
            self.call_from_thread(self.notify, message, severity="information" if ok else "error",
                                  timeout=4 if ok else 8)
        except RuntimeError:
            pass  # the app is closing

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop_run":
            return super().check_action("pause", parameters)
        return super().check_action(action, parameters)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(AttachHelp())

    def action_stop_run(self) -> None:
        if not self.check_action("stop_run", ()):
            return
        now = time.monotonic()
        if now - self._stop_asked_at > CONFIRM_S:
            self._stop_asked_at = now
            self.steering.note = "x again: stop"
            self.notify("Press x again to stop the run. (q only closes this window; the run goes on.)",
                        timeout=CONFIRM_S)
        else:
            self._stop_asked_at = -1e9
            self.steering.send("stop")
        self.update_view()


def run_attach(run_dir: Path, mouse: bool = True) -> int:
    """Attach until q; a bad folder raises ``UserError`` (exit 2) before any screen."""
    source = AttachSource(run_dir)
    try:
        source.prepare()
        AttachApp(source).run(mouse=mouse)
    finally:
        source.close()
    return 0

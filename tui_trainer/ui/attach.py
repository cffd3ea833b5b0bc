"""``tui-trainer attach RUN_DIR``: the dashboard on a run another process is training.

The panes follow RUN_DIR/losses.jsonl exactly as ``view --follow`` does; the
app is given ``ChannelSteering``, so the steering keys (p, e, c, and x twice
to stop the run) go over the run's control channel (``control.py``) and its
answers show as toasts and on the status line.  q only closes this window:
the run goes on, and any number of windows may be attached at once.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from ..control.commands import Command
from ..control.channel import QUERIES, ControlClient
from ..fmt import fmt_int
from .sources import Answer
from .app import DashboardApp
from .safe import name, plain
from .viewer import FileSource, watch_alerts

RECHECK_S = 2.0  # how often to look again whether the run's socket is there


class AttachSource(FileSource):
    """RUN_DIR's log, followed."""

    def __init__(self, run_dir: Path):
        super().__init__([run_dir], follow=True)
        self.run_dir = run_dir

    def status_text(self) -> str:
        return super().status_text().replace("following", "attached", 1)


class ChannelSteering:
    """Steering over the run's control channel.

    ``send`` never blocks the UI: each request runs in a short thread of its
    own (a run stopped with SIGSTOP would otherwise freeze the screen for the
    client's timeout); the answer waits in ``take_answers`` for the UI thread.
    """

    mode = "attach"

    def __init__(self, run_dir: Path, source: FileSource, client: ControlClient | None = None):
        self.source = source  # the log's view of the run: is it paused?
        # Requests run off the UI thread, so a generous timeout costs nothing.
        self.client = client or ControlClient(run_dir, timeout=10.0)
        self._lock = threading.Lock()
        self._pending: list[Answer] = []
        self.answers: list[dict[str, Any]] = []  # every raw answer to a command, newest last (tests read it)
        self._available = self.client.available()
        self._checked = time.monotonic()

    def can_send(self) -> bool:
        if time.monotonic() - self._checked > RECHECK_S:
            self._available, self._checked = self.client.available(), time.monotonic()
        return self._available

    def send(self, command: Command) -> None:
        cmd = Command(command).value
        threading.Thread(target=self._request, args=(cmd,), name=f"attach-{cmd}", daemon=True).start()

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        """One request over the channel and its answer (blocks up to the
        client's timeout: the dashboard calls it from a thread of its own)."""
        answer = self.client.send(req)  # type: ignore[arg-type]  (control.request takes a dict too)
        if not answer.get("ok"):
            answer["cmd"] = req.get("cmd")
            self._checked = -1e9  # look again: the run may have ended
        if req.get("cmd") not in QUERIES:  # a status query is the window's own, not a command sent
            with self._lock:
                self.answers.append(answer)
        return answer

    def take_answers(self) -> list[Answer]:
        with self._lock:
            out, self._pending = self._pending, []
        return out

    def _request(self, cmd: str) -> None:
        if cmd == Command.TOGGLE_PAUSE.value:
            # Several windows may be attached, so a blind flip could undo
            # another's: ask the run whether it is paused, then say which.
            status = self.client.send("status")
            if status.get("ok"):
                paused = status.get("state") == "paused"
            else:
                runs = self.source.runs
                paused = bool(runs) and runs[0].state in ("paused", "diverged")
            cmd = "resume" if paused else "pause"
        answer = self.client.send(cmd)
        with self._lock:
            self.answers.append(answer)
            self._pending.append(describe(cmd, answer))
        if not answer.get("ok"):
            self._checked = -1e9  # look again: the run may have ended


def describe(cmd: str, answer: dict[str, Any]) -> Answer:
    """The channel's answer in words.  Its step is when the command was
    queued; the run applies it after that step, and its log says when."""
    if answer.get("ok"):
        step = answer.get("step")
        at = f" at step {fmt_int(step)}" if isinstance(step, int) else ""
        again = " (already asked)" if answer.get("coalesced") else ""
        return Answer(f"{cmd} requested{at}{again}; the run applies it after that step",
                      f"✓ {cmd} requested{at}")
    error = plain(answer.get("error", "no answer"), 300, newlines=False)
    return Answer(f"{cmd} refused: {error}", f"✗ {cmd} refused", ok=False)


def attach_app(source: AttachSource, steering: ChannelSteering | None = None) -> DashboardApp:
    """The dashboard over ``source`` steering the run over its channel."""
    steering = steering or ChannelSteering(source.run_dir, source)
    return DashboardApp(source, source.runs, steering=steering,
                        title=f"tui-trainer · attached to {name(source.run_dir.name, 40)}")


def run_attach(run_dir: Path, mouse: bool = True, alerts: Any = None) -> int:
    """Attach until q; a bad folder raises ``UserError`` (exit 2) before any screen.
    ``alerts``: an ``alerts.AlertSink`` for the records that arrive."""
    source = AttachSource(run_dir)
    try:
        source.prepare()
        watch_alerts(source, alerts)
        app = attach_app(source)
        app.run(mouse=mouse)
        app.typed.print_forks()  # the :fork commands, to copy once the window is gone
    finally:
        source.close()
        if alerts is not None:
            alerts.out.undefer()
            alerts.close()
    return 0

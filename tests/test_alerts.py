"""--notify and --on-event (tui_trainer/alerts.py): the events, the escapes
that reach the terminal, and a command that hangs, fails or meets a hostile
run name."""
from __future__ import annotations

import fcntl
import json
import os
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

from tui_trainer.cli.alerts import AlertSink, HookRunner, TerminalOut, escapes
from tui_trainer.records import BadStep, Eval, Paused, RunEnd, RunStart

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--context-length", "16", "--batch-size", "4",
        "--eval-batches", "1", "--sample-tokens", "4", "--warmup-steps", "2", "--threads", "1",
        "--steps", "3", "--eval-every", "3"]
HOSTILE = "ev\x1b]0;pwn\x07il$(touch PWNED)`touch PWNED2`;touch PWNED3"
WAIT_S = 120  # generous: the machine is shared


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _train(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui_trainer", "train", "--headless", *TINY, *flags],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=WAIT_S)


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]


# --- the events ---
def _sink(**kw) -> tuple[AlertSink, TerminalOut]:
    out = TerminalOut(deferred=True)
    return AlertSink("runs/r", out=out, **kw), out


def _escapes(out: TerminalOut) -> list[str]:
    return [t for k, t in out.take() if k == "escape"]


def test_events_end_diverged_first_nonfinite_and_best_when_asked():
    sink, out = _sink(notify=True)
    sink.emit(RunStart(step=0, run_name="r", config={}, n_params=1, device="cpu", total_steps=9))
    sink.emit(Eval(step=1, val_loss=3.0, train_loss=None, elapsed_s=0))
    sink.emit(Eval(step=2, val_loss=2.0, train_loss=None, elapsed_s=0))
    assert _escapes(out) == []  # a better val, but --notify-best was not given
    sink.emit(BadStep(step=3, train_loss=float("nan"), grad_norm=None, consecutive=1))
    sink.emit(BadStep(step=4, train_loss=float("nan"), grad_norm=None, consecutive=2))
    got = _escapes(out)
    assert len(got) == 1 and "step 3 went non-finite" in got[0]  # once per streak, not per step
    sink.emit(Paused(step=5, reason="diverged"))
    sink.emit(Paused(step=6, reason="user"))
    got = _escapes(out)
    assert len(got) == 1 and "diverged at step 5" in got[0]
    sink.emit(RunEnd(step=7, status="stopped", elapsed_s=1.0))
    got = _escapes(out)
    assert len(got) == 1 and "run stopped at step 7" in got[0]

    best, out = _sink(notify=True, best=True)
    best.seed_best([float("nan"), 2.5])  # the history already shown: only a better val is news
    best.emit(Eval(step=1, val_loss=2.6, train_loss=None, elapsed_s=0))
    assert _escapes(out) == []
    best.emit(Eval(step=2, val_loss=2.4, train_loss=None, elapsed_s=0))
    got = _escapes(out)
    assert len(got) == 1 and "new best val 2.4000" in got[0]


def test_the_text_inside_the_escape_cannot_end_it():
    e = escapes("tui-trainer " + HOSTILE, "body\x07\x1b\\;\x9c")
    assert e.count("\x1b") == 2 and e.count("\x07") == 3  # the bell, and each OSC's own end
    assert e.startswith("\x07\x1b]9;") and "\x1b]777;notify;" in e
    title, body = e.split("\x1b]777;notify;")[1].rstrip("\x07").split(";")
    assert "\\x1b" in title and "\\x07" in body and "\\x9c" in body  # shown, not obeyed


# --- --on-event ---
def test_a_hanging_command_is_killed_after_its_timeout(tmp_path):
    pidfile = tmp_path / "hook.pid"
    runner = HookRunner(f"echo $$ > {pidfile}; exec sleep 60", 1.0, TerminalOut(deferred=True))
    runner.submit("end", {"TUI_TRAINER_EVENT": "end"})
    runner.close()  # returns once the command is killed
    assert any("ran over 1s and was killed" in line for line in runner.log)
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive


def test_on_event_timeout_must_be_positive(tmp_path):
    p = _train(tmp_path, "--on-event", "true", "--on-event-timeout", "0")
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "above 0" in p.stderr
    assert not (tmp_path / "outputs").exists()


# --- --notify on a terminal ---
def _under_pty(tmp_path: Path, args: list[str]) -> tuple[int, bytes]:
    """Run ``args`` with a pty as its terminal (stdin, stdout, stderr and controlling terminal)."""
    master, slave = os.openpty()

    def own_terminal() -> None:  # in the child, after setsid: the pty becomes its controlling terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(), stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True, preexec_fn=own_terminal)
    os.close(slave)
    data = b""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every copy of the pty's other end is closed
                break
            if not chunk:
                break
            data += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=WAIT_S), data


def _pty_train(tmp_path: Path, *flags: str) -> tuple[int, bytes]:
    return _under_pty(tmp_path, [sys.executable, "-m", "tui_trainer", "train", "--headless", *TINY,
                                 "--name", HOSTILE, *flags])


def test_notify_rings_the_terminal_at_the_end_and_a_hanging_command_is_cut_short(tmp_path):
    rc, data = _pty_train(tmp_path, "--notify", "--on-event", "exec sleep 60", "--on-event-timeout", "2")
    assert rc == 0, data[-2000:]
    (log,) = tmp_path.rglob("losses.jsonl")
    end = _records(log.parent)[-1]
    assert end["type"] == "run_end" and end["status"] == "finished"
    assert b"--on-event (end): the command ran over 2s and was killed" in data
    assert b"\x07\x1b]9;tui-trainer ev\\x1b]0,pwn\\x07il$(touch PWNED)" in data
    assert b"run finished at step 3" in data.split(b"\x1b]9;")[1]
    assert b"\x1b]777;notify;tui-trainer ev" in data
    # Our two escapes are the only ones: the name's ESC and BEL reached the terminal as text.
    assert data.count(b"\x1b") == 2 and data.count(b"\x07") == 3
    assert not [f for f in tmp_path.rglob("PWNED*")]


def test_a_failing_command_is_logged_and_a_hostile_name_is_never_run(tmp_path):
    hook = 'printf "%s|%s|%s|%s" "$TUI_TRAINER_EVENT" "$TUI_TRAINER_STATUS" "$TUI_TRAINER_STEP" ' \
           '"$TUI_TRAINER_NAME" > got.txt; echo oops >&2; exit 3'
    rc, data = _pty_train(tmp_path, "--on-event", hook)
    assert rc == 0, data[-2000:]
    assert b"--on-event (end): the command failed (exit status 3): oops" in data
    event, status, step, name = (tmp_path / "got.txt").read_text().split("|", 3)
    assert (event, status, step) == ("end", "finished", "3")
    assert "$(touch PWNED)" in name and "\x1b" not in name  # the name arrives as text, escaped
    assert not [f for f in tmp_path.rglob("PWNED*")]
    assert b"\x07" not in data and b"\x1b" not in data  # without --notify nothing rings


# --- view --follow, attach: the records that arrive, not the history ---
def test_follow_alerts_on_arriving_records_only(tmp_path):
    from runmaker import write_run

    from tui_trainer.run.log_writer import JsonlSink
    from tui_trainer.ui.viewer import FileSource, watch_alerts

    run = write_run(tmp_path / "r", steps=20, end=None)  # history: evals, no end yet
    sink, out = _sink(notify=True, best=True)
    src = FileSource([run], follow=True)
    src.prepare()
    watch_alerts(src, sink)
    src.start()
    try:
        log = JsonlSink(run / "losses.jsonl")
        log.emit(Eval(step=21, val_loss=9.0, train_loss=None, elapsed_s=1.0))  # worse than the history's best
        log.emit(RunEnd(step=21, status="finished", elapsed_s=1.0))
        log.close()
        got: list[str] = []
        deadline = time.monotonic() + WAIT_S
        while not got and time.monotonic() < deadline:
            src.poll()
            got = _escapes(out)
            time.sleep(0.05)
    finally:
        src.close()
    assert len(got) == 1 and "run finished at step 21" in got[0]  # no alert for the history's evals
    assert src.alert_out is out


def test_the_dashboard_writes_alerts_through_its_driver():
    from tui_trainer.ui.sources import RecordSource
    from tui_trainer.ui.app import DashboardApp

    class Driver:  # a terminal's driver: what the app writes, in order with its frames
        is_headless = False
        is_inline = False
        written: list[str] = []

        def write(self, data: str) -> None:
            self.written.append(data)

    source = RecordSource()
    source.alert_out = out = TerminalOut(deferred=True)
    app = DashboardApp(source, [])
    app._driver = Driver()
    out.put("escape", escapes("t", "b"))
    out.put("say", "--on-event (end): the command failed (exit status 3)")
    said: list[str] = []
    app.say = lambda text, ok=True, **kw: said.append(text)  # type: ignore[method-assign]
    app._alerts()
    assert Driver.written == [escapes("t", "b")]
    assert said == ["--on-event (end): the command failed (exit status 3)"]

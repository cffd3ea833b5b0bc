"""``tui-trainer run -- python train.py ...``: start your own training script
and watch it in the dashboard, in one command.

1. The script starts in this terminal, its output showing as usual, with
   ``TUI_TRAINER_LAUNCH`` naming a file in a private temporary folder.
2. When it calls ``tui_trainer.init``, its output moves to ``output.log`` in
   the run folder and the folder's path is written to that file
   (``api.announce``).
3. The dashboard attaches to that run (``ui.attach.run_attach``): p, e, c and
   x x steer it over its socket.  q closes the dashboard; the script goes on
   in this terminal with its output showing again, and Ctrl-C stops it after
   its step (twice: at once).
4. When the script ends, its exit status is ours.

Ctrl-C reaches the script: it stays in the terminal's foreground process
group, so a Ctrl-C typed outside the dashboard signals it directly, while
this process only notes it; SIGTERM sent to this process is passed on.  A
script that never calls ``init`` runs to its end as if started by hand.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from .api import LAUNCH_DIR_PREFIX, LAUNCH_ENV, LAUNCH_FILE, OUTPUT_NAME
from ..errors import UserError

POLL_S = 0.1


def launch(command: Sequence[str], *, mouse: bool = True) -> int:
    """Run ``command`` with the dashboard on the run it starts; its exit status."""
    command = list(command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise UserError("tui-trainer run needs the command to start, e.g. tui-trainer run -- python train.py")
    shown = shlex.join(command)
    if not has_terminal():
        raise UserError(f"tui-trainer run needs a terminal (stdin and stdout); without one start the "
                        f"script itself ({shown}) and watch it with tui-trainer attach RUN_DIR")
    with tempfile.TemporaryDirectory(prefix=LAUNCH_DIR_PREFIX) as tmp:  # owner-only (api.launch_file)
        where = Path(tmp) / LAUNCH_FILE
        # A handler, not SIG_IGN: handlers are reset at exec, so the script
        # gets Ctrl-C's default (KeyboardInterrupt, or its run's handling).
        old_int = signal.signal(signal.SIGINT, _note)
        try:
            try:
                child = subprocess.Popen(command, env={**os.environ, LAUNCH_ENV: os.fspath(where)})
            except OSError as e:
                raise UserError(f"cannot start {command[0]!r} ({e.strerror or e}); "
                                "check the command after --") from None
            old_term = signal.signal(signal.SIGTERM, lambda *_: _pass_on(child, signal.SIGTERM))
            try:
                return _watch(child, where, shown, mouse)
            finally:
                signal.signal(signal.SIGTERM, old_term)
        finally:
            signal.signal(signal.SIGINT, old_int)


def has_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _note(signum: int, frame: Any) -> None:
    """SIGINT while the script runs: it got the Ctrl-C too and decides."""


def _pass_on(child: subprocess.Popen, signum: int) -> None:
    if child.poll() is None:
        child.send_signal(signum)


def _watch(child: subprocess.Popen, where: Path, shown: str, mouse: bool) -> int:
    while not where.exists():  # the script is starting: its output shows here as usual
        if child.poll() is not None:
            return _status(child.returncode)  # it ended without starting a run
        time.sleep(POLL_S)
    folder = Path(where.read_text(encoding="utf-8").strip())
    output = folder / OUTPUT_NAME
    from ..ui.attach import run_attach

    try:
        run_attach(folder, mouse=mouse)
    except UserError as e:  # the run ended or vanished before the dashboard came up
        print(f"tui-trainer: {e}", file=sys.stderr, flush=True)
    if child.poll() is None:
        print(f"tui-trainer: dashboard closed; {shown} goes on (pid {child.pid}), its output below "
              f"and in {output}.\nCtrl-C stops it after its step (twice: at once); "
              f"tui-trainer attach {folder} opens the dashboard again.", file=sys.stderr, flush=True)
        _echo(output, child)
    code = child.wait()
    print(f"tui-trainer: {shown} {describe_end(folder, code)}; its output: {output}",
          file=sys.stderr, flush=True)
    return _status(code)


def _echo(path: Path, child: subprocess.Popen) -> None:
    """Show what the script writes to ``path`` from now on, until it ends."""
    try:
        f = open(path, "rb")
    except OSError:
        return
    with f:
        f.seek(0, os.SEEK_END)
        while True:
            ended = child.poll() is not None
            chunk = f.read()
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            if ended:
                return
            if not chunk:
                time.sleep(POLL_S)


def describe_end(folder: Path, code: int) -> str:
    from ..run.folder import last_end

    end = last_end(folder)
    run = f"its run {end.get('status')} at step {end.get('step')}" if end else "its run has no run_end"
    try:
        how = f"exited with status {code}" if code >= 0 else f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        how = f"was killed by signal {-code}"
    return f"{how} ({run})"


def _status(code: int) -> int:
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell says

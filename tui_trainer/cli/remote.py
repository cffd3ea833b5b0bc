"""``tui-trainer attach``'s side of the channel, apart from the dashboard: is
a folder a run that is going (``check_attachable``, answered at once), is
there a terminal to draw on (``need_terminal``), and the scripted requests
``--set`` and ``--sample`` (printing the JSON answers, or the sample)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import UserError
from ..records import json_object
from ..terminal import printable

EXIT_OK, EXIT_FAILED = 0, 1


def send_settings(run_dir: str, assignments: list[str]) -> int:
    import json

    from ..control.channel import request
    from ..control.settings import parse_assignment

    ok = True
    for text in assignments:
        try:
            key, value = parse_assignment(text)
        except ValueError as e:
            raise UserError(f"--set {e}") from None
        answer = request(run_dir, {"cmd": "set", "key": key, "value": value})
        print(json.dumps(answer), flush=True)
        ok = ok and bool(answer.get("ok"))
    return EXIT_OK if ok else EXIT_FAILED


SAMPLE_WAIT_S = 300.0


def sample_request(prompt: str, rid: str, *, tokens: int | None = None, temperature: float | None = None,
                   top_k: int | None = None) -> dict:
    """The ``sample`` request, with the id its answer will carry in the log."""
    req = {"cmd": "sample", "prompt": prompt, "tokens": tokens, "temperature": temperature, "top_k": top_k,
           "id": rid}
    return {k: v for k, v in req.items() if v is not None}


def read_sample(log: Path, start: int, rid: str, wait_s: float = SAMPLE_WAIT_S) -> dict:
    """The ``sample`` record with id ``rid`` that the run appends to its log
    after byte ``start`` (it is drawn on the training thread between steps).
    A refusal (its ``ack``), the run's end or no sample within ``wait_s`` is
    a ``UserError`` saying which."""
    deadline = time.monotonic() + wait_s
    buf = b""
    with open(log, "rb") as f:
        f.seek(start)
        while time.monotonic() < deadline:
            chunk = f.read()
            if not chunk:
                time.sleep(0.1)  # the log is a file: polled, as tail -f does
                continue
            *lines, buf = (buf + chunk).split(b"\n")
            for raw in lines:
                rec = json_object(raw)
                if rec is None:
                    continue
                if rec.get("type") == "sample" and rec.get("id") == rid:
                    return rec
                if rec.get("type") == "ack" and rec.get("id") == rid:
                    raise UserError(f"the run could not draw the sample: {rec.get('message')}")
                if rec.get("type") == "run_end":
                    raise UserError(f"the run ended ({rec.get('status')}) before it drew the sample")
    raise UserError(f"no sample within {wait_s:.0f}s; is the run stuck in a long step?")


def request_sample(run_dir: str, prompt: str, *, tokens: int | None = None, temperature: float | None = None,
                   top_k: int | None = None) -> int:
    """Ask for a sample, then read it from the run's log and print it: prompt and continuation."""
    import json
    import os

    from ..control.channel import request
    from ..run.log_writer import LOG_NAME

    log = Path(run_dir) / LOG_NAME
    start = log.stat().st_size if log.exists() else 0
    rid = f"{os.getpid()}-{time.monotonic_ns()}"
    answer = request(run_dir, sample_request(prompt, rid, tokens=tokens, temperature=temperature, top_k=top_k))
    if not answer.get("ok"):  # one line, as every refusal: the answer's own words, which name the fix
        why = answer.get("error") or json.dumps(answer)
        print(f"error: the run refused the sample: {printable(str(why), newlines=False)}", file=sys.stderr)
        return EXIT_FAILED
    rec = read_sample(log, start, rid)
    print(printable(rec.get("text", "")), flush=True)  # a sample may hold any byte
    return EXIT_OK


def check_attachable(folder: Path) -> None:
    """Answer at once when ``folder`` is not a run that is going: a typo, a
    parent folder of runs, a run that has ended."""
    from ..run.folder import is_live, last_end, runs_in
    from ..run.log_writer import LOG_NAME

    if not folder.exists():
        raise UserError(f"{folder} does not exist; pass the folder a run is writing (outputs/run-...)")
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; pass the folder a run is writing (outputs/run-...)")
    if not (folder / LOG_NAME).exists() and not is_live(folder):
        runs = runs_in(folder)
        if runs:
            more = f" and {len(runs) - 3} more" if len(runs) > 3 else ""
            raise UserError(f"{folder} is a folder of runs ({', '.join(runs[:3])}{more}), not a run; "
                            f"attach to one: tui-trainer attach {folder / runs[-1]}")
        raise UserError(f"{folder} is not a run folder (no {LOG_NAME}); pass the folder a run is writing")
    if is_live(folder):
        return
    end = last_end(folder)
    if end is not None:
        raise UserError(f"run {folder} has ended ({end.get('status')} at step {end.get('step')}); "
                        f"replay it with tui-trainer view {folder}")
    raise UserError(f"run {folder} is not running (no run_end: it was killed or crashed); replay it with "
                    f"tui-trainer view {folder}, or continue it with tui-trainer train --resume {folder}")


def need_terminal(command: str, script: str) -> None:
    """The dashboard needs a terminal on both ends: without one (nohup, a
    redirect, cron) it would draw escape codes into a file forever."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError(f"{command} needs a terminal (stdin and stdout); over SSH use ssh -t; "
                        f"from a script: {script}")

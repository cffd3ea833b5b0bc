"""Runs without a screen: ``tui-trainer ls`` and ``tui-trainer status``.

``ls [DIR]`` prints the runs browser's rows (``runs.rows``) as an aligned
table, or one JSON object a line with ``--json``; the folders that are not
runs come after the table, with the reason.  ``status RUN`` prints one run's
figures, from its control channel while a process holds its lock, else from
its log; its exit status says how the run stands, so a shell can wait on it::

    until tui-trainer status outputs/run-x >/dev/null; [ $? -ne 3 ]; do sleep 60; done

No tty is needed, nothing here imports Textual or torch, and every line
goes through ``terminal.printable`` (``cli.main`` wraps the streams).
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fmt import fmt_count, fmt_duration, fmt_loss
from ..run.log_writer import LOG_NAME
from ..terminal import printable

EXIT_FINISHED, EXIT_ENDED, EXIT_LIVE = 0, 1, 3
LIVE_STATES = ("running", "paused", "stopping", "starting")
RATE_TAIL = 1 << 18       # the rate is read from the last records of the log: this many bytes
SAMPLE_SHOWN = 300        # characters of the last sample in the text form


def dumps(obj: Any) -> str:
    """Strict JSON on one line (``allow_nan=False``: a NaN that slipped through fails loudly, never prints)."""
    return json.dumps(obj, allow_nan=False)


def cmd_ls(args: argparse.Namespace) -> int:
    from ..run.folder import DEFAULT_ROOT
    from ..runs import Scanner, settings_diff
    from ..runs.rows import as_json, newest_first, table

    folder = Path(args.dir) if args.dir else DEFAULT_ROOT
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise UserError(f"{folder} {what}; pass a folder of runs (default ./{DEFAULT_ROOT})")
    if (folder / LOG_NAME).exists():
        raise UserError(f"{folder} is a run, not a folder of runs; tui-trainer status {folder}")
    scanner = Scanner(folder)
    summaries = scanner.scan()
    if scanner.error:
        raise UserError(f"{scanner.error}; check the folder's permissions")
    runs = newest_first([s for s in summaries if s.ok])
    if args.family:  # the runs browser's order when sorted by its run column: a parent, then its forks
        runs.sort(key=lambda s: s.family or s.label.lower())
    skipped = [s for s in summaries if not s.ok]
    settings = list(settings_diff(runs))
    if args.json:
        for s in runs + skipped:
            print(dumps(as_json(s, settings)))
        return 0
    if runs:
        print("\n".join(table(runs, settings)))
    else:
        print(f"no runs in {folder}")
    if skipped:
        print(f"\nskipped {len(skipped)}:")
        for s in skipped:
            print(f"  {printable(s.folder, newlines=False)}  ({printable(s.problem, newlines=False)})")
    return 0


def run_folder(path: str) -> Path:
    """The run folder ``path`` names (a run folder, or its log file); a bad one is a ``UserError`` (exit 2)."""
    p = Path(path)
    if p.is_file() and p.name == LOG_NAME:
        p = p.parent
    if not p.exists():
        raise UserError(f"{p} does not exist; pass a run folder (outputs/run-...)")
    if not p.is_dir():
        raise UserError(f"{p} is not a run folder; pass the folder a run writes (outputs/run-...)")
    if not (p / LOG_NAME).is_file():
        from ..run.folder import runs_in

        if runs_in(p, limit=1):
            raise UserError(f"{p} is a folder of runs, not a run; list them with tui-trainer ls {p}")
        raise UserError(f"{p} is not a run folder (no {LOG_NAME}); pass the folder a run writes")
    return p


def recent_rates(log: Path) -> tuple[float, float]:
    """(steps/s, tokens/s) of the last records of the log, as the dashboard
    smooths them (``RunSeries.rates``: medians over the recent steps)."""
    from ..logs.parsing import LineParser
    from ..records import TrainStep, Status
    from ..curves.series import RunSeries

    try:
        fd = os.open(log, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return math.nan, math.nan
    try:
        size = os.fstat(fd).st_size
        off = max(0, size - RATE_TAIL)
        buf = os.pread(fd, size - off, off)
    finally:
        os.close(fd)
    lines = buf.split(b"\n")[1 if off else 0:-1]  # whole lines only
    series = RunSeries()
    for it in LineParser(bulk=False).feed(lines):
        if isinstance(it, (TrainStep, Status)):
            series.apply(it)
    return series.rates()


def figures(folder: Path) -> dict[str, Any]:
    """The run's figures, as ``status --json`` prints them (strict JSON, null where unknown)."""
    from ..control.channel import ControlError, request
    from ..logs import load_series
    from ..runs import summarise

    summary = summarise(folder)
    if not summary.ok:
        raise UserError(f"{folder} cannot be read: {summary.problem}")
    series, _ = load_series(folder)
    state, step, total = summary.status, summary.step, summary.total_steps
    settings = None
    source = "log"
    if summary.live:
        try:
            answer = request(folder, "status", timeout=3.0)
        except ControlError:
            answer = {}
        if answer.get("ok"):
            source = "control"
            state = answer.get("state") or state
            step = answer["step"] if isinstance(answer.get("step"), int) else step
            total = answer["total_steps"] if isinstance(answer.get("total_steps"), int) else total
            settings = answer.get("settings") if isinstance(answer.get("settings"), dict) else None
        if series.diverged:
            state = "diverged"  # paused by the divergence guard: waiting for a person, not training
    sps, tps = recent_rates(folder / LOG_NAME)
    eta = max(0, total - step) / sps if state == "running" and total and sps > 0 else math.nan
    last = series.evals[-1] if series.evals else None
    sample = series.sample()
    num = _number
    return {
        "run": series.name, "folder": str(folder), "state": state, "source": source,
        "step": step, "total_steps": total or None,
        "steps_per_s": num(sps), "tokens_per_s": num(tps), "eta_s": num(eta),
        "train_loss": num(summary.train_loss), "smoothed_loss": num(series.smoothed_loss),
        "last_val": num(last.val) if last else None, "last_val_step": last.step if last else None,
        "best_val": num(summary.best_val), "best_step": summary.best_step, "best_bpb": num(summary.best_bpb),
        "tokens": summary.tokens or None, "elapsed_s": num(summary.elapsed_s),
        "last_sample": {"step": sample[0], "text": sample[1]} if sample else None,
        "changes": {k: _plain(v) for k, v in series.changes.items()},
        "settings": {k: num(v) for k, v in settings.items()} if settings else None,
        "error": series.error,
    }


def exit_status(state: str) -> int:
    """0 finished, 3 while it runs or is paused, 1 for any other end."""
    if state == "finished":
        return EXIT_FINISHED
    return EXIT_LIVE if state in LIVE_STATES else EXIT_ENDED


def cmd_status(args: argparse.Namespace) -> int:
    folder = run_folder(args.run)
    f = figures(folder)
    if args.json:
        print(dumps(f))
    else:
        print("\n".join(status_lines(f)))
    return exit_status(f["state"])


def status_lines(f: dict[str, Any]) -> list[str]:
    """The figures as ``key: value`` lines, stable enough to grep."""
    def line(key: str, value: str) -> str:
        return f"{key + ':':<10}{printable(value, newlines=False)}"

    step = f"{f['step']}/{f['total_steps']}" if f["total_steps"] else str(f["step"])
    rate = (f"{fmt_count(f['steps_per_s'])} steps/s, {fmt_count(f['tokens_per_s'])} tok/s"
            if f["steps_per_s"] is not None or f["tokens_per_s"] is not None else "-")
    val = "-" if f["last_val"] is None else f"{fmt_loss(f['last_val'])} at step {f['last_val_step']}"
    best = "-" if f["best_val"] is None else f"{fmt_loss(f['best_val'])} at step {f['best_step']}"
    out = [line("run", f["run"]), line("folder", f["folder"]), line("state", f["state"]), line("step", step),
           line("rate", rate), line("eta", fmt_duration(f["eta_s"]) if f["eta_s"] is not None else "-"),
           line("train", f"{fmt_loss(f['train_loss'])} (smoothed {fmt_loss(f['smoothed_loss'])})"),
           line("last val", val), line("best val", best),
           line("time", fmt_duration(f["elapsed_s"]) if f["elapsed_s"] is not None else "-")]
    if f["changes"]:
        out.append(line("changed", ", ".join(f"{k}={v}" for k, v in f["changes"].items())))
    if f["error"]:
        out.append(line("error", f["error"]))
    if f["last_sample"]:
        text = f["last_sample"]["text"]
        text = text if len(text) <= SAMPLE_SHOWN else text[:SAMPLE_SHOWN - 1] + "…"
        out.append(line("sample", f"(step {f['last_sample']['step']}) {text}"))
    return out


def _number(v: Any) -> float | int | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return v if isinstance(v, int) or math.isfinite(v) else None


def _plain(v: Any) -> Any:
    """A changed setting's value for JSON: numbers finite or null, anything else as text."""
    if isinstance(v, (bool, str)) or v is None:
        return v
    if isinstance(v, (int, float)):
        return _number(v)
    return str(v)

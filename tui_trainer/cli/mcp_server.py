"""``tui-trainer mcp [DIR]``: a Model Context Protocol server over stdio, so
a coding agent on the box can watch runs and steer a live one.

Read tools: ``list_runs``, ``run_status``, ``metric_series`` (downsampled),
``recent_samples``, ``diff_settings``.  Steering tools: ``set_setting``,
``pause``, ``resume``, ``eval_now``, ``checkpoint``, ``sample`` - each a
request over the run's control channel (``control.request``), checked by the
run exactly as ``attach``'s are, and marked ``"source": "mcp"`` so a change
lands in the run's log as a ``change`` record with source ``mcp``.

A run is named by its folder relative to DIR; a name that leaves DIR (``..``,
an absolute path, a symlink pointing out) is refused, and so is every
steering tool on a run that is not live, with the reason.  ``--read-only``
leaves the steering tools out.  A refusal is the tool's error, never a crash.

Needs the optional ``mcp`` package (``pip install 'tui-trainer[mcp]'``).
No Textual here.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import time
from pathlib import Path
from typing import Any

from ..errors import UserError
from .remote import read_sample, sample_request
from ..run.log_writer import LOG_NAME

MAX_POINTS = 2000
SAMPLE_WAIT_S = 120.0


class Refused(Exception):
    """A tool's answer is no: the reason goes back to the agent as the tool's error."""


def run_path(root: Path, run: str) -> Path:
    """The run folder ``run`` names inside ``root``; anything outside it is refused."""
    if not isinstance(run, str) or not run or "\x00" in run:
        raise Refused("name a run by its folder inside the served folder (see list_runs)")
    rel = Path(run)
    if rel.is_absolute() or ".." in rel.parts:
        raise Refused(f"{run!r} is outside the served folder; name a run as list_runs shows it")
    base = root.resolve()
    p = (base / rel).resolve()
    if p == base or base not in p.parents:
        raise Refused(f"{run!r} is outside the served folder; name a run as list_runs shows it")
    if not (p / LOG_NAME).is_file():
        raise Refused(f"{run!r} is not a run (no {LOG_NAME}); see list_runs")
    return p


def _records(folder: Path) -> list[dict[str, Any]]:
    from ..logs.jsonl import read_records

    return read_records(folder / LOG_NAME)


def _finite(v: Any) -> Any:
    return v if not isinstance(v, float) or math.isfinite(v) else None


def downsample(points: list[tuple[int, float]], n: int) -> list[tuple[int, float]]:
    """At most ``n`` points, evenly spread, the first and last kept."""
    n = max(2, n)
    if len(points) <= n:
        return points
    idx = sorted({round(i * (len(points) - 1) / (n - 1)) for i in range(n)})
    return [points[i] for i in idx]


class Tools:
    """What the tools do, without the protocol (tests call it directly too)."""

    def __init__(self, root: Path, read_only: bool = False):
        self.root = root
        self.read_only = read_only

    # --- reading ---
    def list_runs(self) -> list[dict[str, Any]]:
        from ..runs import Scanner, settings_diff
        from ..runs.rows import as_json, newest_first

        scanner = Scanner(self.root)
        summaries = scanner.scan()
        if scanner.error:
            raise Refused(scanner.error)
        runs = newest_first([s for s in summaries if s.ok])
        settings = list(settings_diff(runs))
        out = []
        for s in runs:
            row = as_json(s, settings)
            row["run"] = os.path.relpath(Path(s.path).resolve(), self.root.resolve())  # what the tools take
            out.append(row)
        return out

    def run_status(self, run: str) -> dict[str, Any]:
        from .listing import figures

        folder = run_path(self.root, run)
        try:
            f = figures(folder)
        except UserError as e:
            raise Refused(str(e)) from None
        f["folder"] = run
        return f

    def metric_series(self, run: str, metric: str = "train_loss", max_points: int = 200) -> dict[str, Any]:
        folder = run_path(self.root, run)
        if not 2 <= max_points <= MAX_POINTS:
            raise Refused(f"max_points is 2 to {MAX_POINTS}, not {max_points}")
        from ..logs import effective_records

        from ..records import Eval, TrainStep

        kind = Eval.type if metric in ("val_loss", "eval_train_loss") else TrainStep.type
        field = "train_loss" if metric == "eval_train_loss" else metric
        points: list[tuple[int, float]] = []
        for r in effective_records(_records(folder)):
            if r.get("type") != kind or not isinstance(r.get("step"), int):
                continue
            v = r.get(field, r.get("extra", {}).get(field) if isinstance(r.get("extra"), dict) else None)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                points.append((r["step"], float(v)))
        if not points:
            raise Refused(f"{run} has no {metric!r} values; try train_loss, val_loss, lr, grad_norm, "
                          "tokens_per_sec or one of the loop's own metrics")
        kept = downsample(points, max_points)
        return {"run": run, "metric": metric, "points_in_log": len(points),
                "steps": [s for s, _ in kept], "values": [v for _, v in kept]}

    def recent_samples(self, run: str, n: int = 5) -> list[dict[str, Any]]:
        folder = run_path(self.root, run)
        samples = [r for r in _records(folder) if r.get("type") == "sample"]
        return [{"step": r.get("step"), "text": r.get("text"), "prompt": r.get("prompt"),
                 "requested": bool(r.get("requested"))} for r in samples[-max(1, min(n, 100)):]]

    def diff_settings(self, run_a: str, run_b: str) -> dict[str, Any]:
        def config(run: str) -> dict[str, Any]:
            for r in _records(run_path(self.root, run)):
                if r.get("type") == "run_start" and isinstance(r.get("config"), dict):
                    return r["config"]
            raise Refused(f"{run} has no run_start record: its settings are unknown")

        a, b = config(run_a), config(run_b)
        return {k: {"a": _finite(a.get(k)), "b": _finite(b.get(k))}
                for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}

    # --- steering: the control channel, as attach sends it ---
    def _live(self, run: str) -> Path:
        from ..run.folder import is_live, last_end

        if self.read_only:
            raise Refused("this server is read-only (tui-trainer mcp --read-only)")
        folder = run_path(self.root, run)
        if not is_live(folder):
            end = last_end(folder)
            why = f"it has ended ({end.get('status')} at step {end.get('step')})" if end else \
                "no process is running it (killed or crashed)"
            raise Refused(f"run {run} is not live: {why}; steering needs a running run")
        return folder

    def send(self, run: str, req: dict[str, Any]) -> dict[str, Any]:
        from ..control.channel import ControlError, request

        folder = self._live(run)
        try:
            answer = request(folder, {**req, "source": "mcp"})
        except ControlError as e:
            raise Refused(str(e)) from None
        if not answer.get("ok"):
            raise Refused(f"{req['cmd']} refused: {answer.get('error', 'no answer')}")
        return answer

    def sample(self, run: str, prompt: str, tokens: int | None = None, temperature: float | None = None,
               top_k: int | None = None) -> dict[str, Any]:
        folder = self._live(run)
        log = folder / LOG_NAME
        start = log.stat().st_size
        rid = f"mcp-{os.getpid()}-{time.monotonic_ns()}"
        self.send(run, sample_request(prompt, rid, tokens=tokens, temperature=temperature, top_k=top_k))
        try:
            rec = read_sample(log, start, rid, SAMPLE_WAIT_S)
        except UserError as e:
            raise Refused(str(e)) from None
        return {"step": rec.get("step"), "prompt": prompt, "text": rec.get("text")}


def build_server(tools: Tools) -> Any:
    """The MCP server with the tools registered (``mcp`` 2.x ``MCPServer``, or 1.x ``FastMCP``)."""
    try:
        from mcp.server import MCPServer as Server
        from mcp.server.mcpserver.exceptions import ToolError
    except ImportError:
        from mcp.server.fastmcp import FastMCP as Server
        from mcp.server.fastmcp.exceptions import ToolError
    raw = Server("tui-trainer", instructions=(
        "Watch and steer tui-trainer runs in one folder. Runs are named as list_runs shows them. "
        "Steering goes through each run's control channel and is written to its log (source mcp)."))
    t = tools

    class _Tools:  # ``server.tool()``, with a refusal as the tool's error (its reason kept), not a crash
        @staticmethod
        def tool() -> Any:
            def register(fn: Any) -> Any:
                @functools.wraps(fn)
                def guarded(*args: Any, **kw: Any) -> Any:
                    try:
                        return fn(*args, **kw)
                    except Refused as e:
                        raise ToolError(str(e)) from None
                return raw.tool()(guarded)
            return register

    server = _Tools()

    @server.tool()
    def list_runs() -> list[dict[str, Any]]:
        """The runs in the served folder, newest first: status, step/total, best val, tokens, settings that differ."""
        return t.list_runs()

    @server.tool()
    def run_status(run: str) -> dict[str, Any]:
        """One run's figures: state, step/total, rate, ETA, last and best val, last sample, pending changes."""
        return t.run_status(run)

    @server.tool()
    def metric_series(run: str, metric: str = "train_loss", max_points: int = 200) -> dict[str, Any]:
        """A metric's values by step (train_loss, val_loss, lr, grad_norm, tokens_per_sec, ...), at most max_points."""
        return t.metric_series(run, metric, max_points)

    @server.tool()
    def recent_samples(run: str, n: int = 5) -> list[dict[str, Any]]:
        """The run's last n samples (generated text), oldest first."""
        return t.recent_samples(run, n)

    @server.tool()
    def diff_settings(run_a: str, run_b: str) -> dict[str, Any]:
        """The settings two runs started with that differ: {key: {a, b}}."""
        return t.diff_settings(run_a, run_b)

    if not tools.read_only:
        @server.tool()
        def set_setting(run: str, key: str, value: float | str) -> dict[str, Any]:
            """Change a live setting of a running run (lr_scale, max_lr, min_lr, steps, eval_every,
            checkpoint_every, grad_clip, weight_decay, pause_at); checked by the run, applied after its step."""
            return t.send(run, {"cmd": "set", "key": key, "value": value})

        @server.tool()
        def pause(run: str) -> dict[str, Any]:
            """Pause a running run after its current step."""
            return t.send(run, {"cmd": "pause"})

        @server.tool()
        def resume(run: str) -> dict[str, Any]:
            """Resume a paused run."""
            return t.send(run, {"cmd": "resume"})

        @server.tool()
        def eval_now(run: str) -> dict[str, Any]:
            """Run an eval (and a sample) now; the result lands in the run's log."""
            return t.send(run, {"cmd": "eval"})

        @server.tool()
        def checkpoint(run: str) -> dict[str, Any]:
            """Save a checkpoint now."""
            return t.send(run, {"cmd": "checkpoint"})

        @server.tool()
        def sample(run: str, prompt: str, tokens: int | None = None, temperature: float | None = None,
                   top_k: int | None = None) -> dict[str, Any]:
            """Generate from prompt on the run's weights as they are now; waits for the text."""
            return t.sample(run, prompt, tokens, temperature, top_k)

    return raw


def cmd_mcp(args: argparse.Namespace) -> int:
    from ..run.folder import DEFAULT_ROOT

    root = Path(args.dir) if args.dir else DEFAULT_ROOT
    if not root.is_dir():
        raise UserError(f"{root} is not a folder of runs; pass one: tui-trainer mcp outputs")
    try:
        import mcp  # noqa: F401
    except ImportError:
        raise UserError("tui-trainer mcp needs the mcp package; pip install 'tui-trainer[mcp]'") from None
    build_server(Tools(root, read_only=args.read_only)).run("stdio")
    return 0

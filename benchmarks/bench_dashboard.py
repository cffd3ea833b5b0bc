"""What the live dashboard costs training: tokens/sec with it up versus headless.

One process, interleaved: each round trains the same short run headless (the
loop in this thread, writing the JSONL log) and with the dashboard (the loop
in the app's training thread, the app hosted headless by ``run_test``, its
timers draining the queue and redrawing plots as in a terminal), in
alternating order.  Tokens/sec is measured from the run's own records between
the first and last step past warm-up; the UI thread's CPU share is its thread
CPU time over wall time in the same steady-state stretch.

A second figure is better matched on a busy machine: one long run with the
app up throughout, alternating every ``--phase`` steps between the app doing
its job (polling, status, plots) and its poll timer paused (the app idle, as
good as headless); adjacent phases are compared, so load that drifts over
seconds cancels out.

Headless Textual still lays out and renders every widget (plotext included);
it skips only encoding the frame for, and writing it to, a terminal.

    python benchmarks/bench_dashboard.py [--rounds 5] [--steps 400] [--shape small|tiny] [--phase 60]

Timings on a shared machine are noisy: read medians and spread, not one run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from headless_dashboard import live_trainer  # benchmarks/
from tui_trainer.config import make_config
from tui_trainer.train.engine import Trainer
from tui_trainer.records import Record, TrainStep
from tui_trainer.run.log_writer import LOG_NAME, JsonlSink
from tui_trainer.curves.series import RunSeries
from tui_trainer.ui.app import DashboardApp, TrainerSource

SHAPES = {
    # ~10-30 ms steps on a laptop CPU core: a realistic small CPU run.
    "small": dict(n_layer=2, n_head=4, n_embd=64, context_length=64, batch_size=8),
    # ~1-3 ms steps: hundreds of records a second, the worst case for the UI.
    # the demo's own settings (TrainConfig defaults)
    "demo": dict(),
    "tiny": dict(n_layer=1, n_head=2, n_embd=32, context_length=16, batch_size=4),
}


class Steps:
    """A sink keeping (perf_counter, tokens) per train step, for steady-state throughput."""

    def __init__(self) -> None:
        self.points: list[tuple[float, int, int]] = []

    def emit(self, r: Record) -> None:
        if isinstance(r, TrainStep):
            self.points.append((time.perf_counter(), r.step, r.tokens))

    def tokens_per_sec(self, warm: float = 0.2) -> float:
        pts = self.points[int(len(self.points) * warm):]
        (t0, _, k0), (t1, _, k1) = pts[0], pts[-1]
        return (k1 - k0) / (t1 - t0)


def make_trainer(args, out: Path) -> tuple[Trainer, Any, Steps, JsonlSink]:
    cfg = make_config(dict(SHAPES[args.shape], steps=args.steps, eval_every=10**9, warmup_steps=10,
                           threads=args.threads, out=str(out)))
    out.mkdir(parents=True)
    steps, log = Steps(), JsonlSink(out / LOG_NAME)
    trainer, run = live_trainer(cfg, out, [log, steps])
    return trainer, run, steps, log


def run_headless(args, out: Path) -> tuple[float, float]:
    trainer, _, steps, log = make_trainer(args, out)
    try:
        trainer.run()
    finally:
        log.close()
    return steps.tokens_per_sec(), float("nan")


def run_dashboard(args, out: Path) -> tuple[float, float]:
    trainer, run, steps, log = make_trainer(args, out)
    source = TrainerSource(trainer, run=run)
    app = DashboardApp(source, [RunSeries(run.name)])
    ui: dict[str, tuple[float, float]] = {}

    async def drive() -> None:
        async with app.run_test(size=tuple(args.size)) as pilot:
            while not source.done:
                n = len(steps.points)
                # Sampled on the UI thread itself: thread_time is this thread's CPU.
                if "a" not in ui and n >= args.steps * 0.2:
                    ui["a"] = (time.thread_time(), time.perf_counter())
                if "b" not in ui and n >= args.steps * 0.9:
                    ui["b"] = (time.thread_time(), time.perf_counter())
                await pilot.pause(0.25)  # as rarely as the app's own poll: this loop is not the app
            assert threading.current_thread() is threading.main_thread()

    try:
        asyncio.run(drive())
    finally:
        source.stop()
        source.join()
        log.close()
    (c0, w0), (c1, w1) = ui["a"], ui["b"]
    return steps.tokens_per_sec(), (c1 - c0) / (w1 - w0)


def run_phases(args, out: Path, pairs: int) -> tuple[list[float], list[float]]:
    """One run; the UI alternately working and paused every ``args.phase`` steps.
    Returns (working/paused tok/s ratio per adjacent pair, UI CPU share while working)."""
    steps_total = args.phase * (2 * pairs + 1)
    a = argparse.Namespace(**{**vars(args), "steps": steps_total})
    trainer, run, steps, log = make_trainer(a, out)
    source = TrainerSource(trainer, run=run)
    app = DashboardApp(source, [RunSeries(run.name)])
    marks: list[tuple[int, bool]] = []   # (step index where a phase starts, UI working?)
    cpu: list[float] = []

    async def drive() -> None:
        async with app.run_test(size=tuple(args.size)) as pilot:
            working, since = True, (time.thread_time(), time.perf_counter())
            marks.append((0, True))
            while not source.done:
                n = len(steps.points)
                if n >= marks[-1][0] + args.phase:
                    c, w = time.thread_time(), time.perf_counter()
                    if working:
                        cpu.append((c - since[0]) / (w - since[1]))
                        app.poll_timer.pause()
                    else:
                        app.poll_timer.resume()
                    working, since = not working, (c, w)
                    marks.append((n, working))
                await pilot.pause(0.05)

    try:
        asyncio.run(drive())
    finally:
        source.stop()
        source.join()
        log.close()
    pts = steps.points
    rates = []
    for (i, on), (j, _) in zip(marks, marks[1:]):
        lo, hi = i + args.phase // 5, j - 1  # skip the first steps after a switch
        if hi > lo:
            rates.append((on, (pts[hi][2] - pts[lo][2]) / (pts[hi][0] - pts[lo][0])))
    ratios = [r_on / r_off for (on, r_on), (_, r_off) in zip(rates, rates[1:]) if on]
    ratios += [r_on / r_off for (_, r_off), (on, r_on) in zip(rates, rates[1:]) if on]
    return ratios, cpu


def _arm_in_subprocess(name: str) -> tuple[float, float]:
    """Each arm in a fresh process, as a user runs it: torch trained on the
    main thread first makes a later training thread in the same process ~30%
    slower (OpenMP thread teams), which would be charged to the dashboard."""
    argv = [a for a in sys.argv[1:]]
    out = subprocess.run([sys.executable, __file__, *argv, "--arm", name], check=True,
                         capture_output=True, text=True).stdout
    d = json.loads(out.strip().splitlines()[-1])
    return d["tok_s"], d["ui"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--shape", choices=sorted(SHAPES), default="small")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice, as a run)")
    p.add_argument("--size", type=int, nargs=2, default=(120, 40), metavar=("W", "H"))
    p.add_argument("--phase", type=int, default=60, help="steps per phase of the alternating run")
    p.add_argument("--pairs", type=int, default=8, help="working/paused phase pairs (0: skip)")
    p.add_argument("--arm", choices=("headless", "dashboard"), help=argparse.SUPPRESS)
    p.add_argument("--same-process", action="store_true",
                   help="run both arms in this process (confounded: see _arm_in_subprocess)")
    p.add_argument("--switch-interval", type=float, default=None,
                   help="sys.setswitchinterval for the run (default: what run_dashboard sets)")
    args = p.parse_args()
    from tui_trainer.ui.app import DASHBOARD_SWITCH_S
    # run_dashboard sets this for a live run; set it here too, for both arms.
    sys.setswitchinterval(args.switch_interval or DASHBOARD_SWITCH_S)

    arms = {"headless": run_headless, "dashboard": run_dashboard}
    if args.arm:  # one arm, in this (fresh) process; the parent reads the JSON line
        with tempfile.TemporaryDirectory() as tmp:
            tok_s, share = arms[args.arm](args, Path(tmp) / args.arm)
        print(json.dumps({"tok_s": tok_s, "ui": share}))
        return

    head, dash, ratios, cpu = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = ["headless", "dashboard"]
            if r % 2:
                order.reverse()
            got = {}
            for name in order:
                if args.same_process:
                    got[name] = arms[name](args, Path(tmp) / f"{name}-{r}")
                else:
                    got[name] = _arm_in_subprocess(name)
            h, (d, share) = got["headless"][0], got["dashboard"]
            head.append(h)
            dash.append(d)
            ratios.append(d / h)
            cpu.append(share)
            print(f"round {r + 1}: headless {h:,.0f} tok/s  dashboard {d:,.0f} tok/s  "
                  f"ratio {d / h:.3f}  UI thread {share:.1%} of a core", flush=True)

    def summary(xs: list[float], fmt: str) -> str:
        return f"median {format(statistics.median(xs), fmt)} (min {format(min(xs), fmt)}, max {format(max(xs), fmt)})"

    if not args.rounds:
        head = dash = ratios = cpu = [float("nan")]
    print(f"shape {args.shape}, {args.steps} steps, {args.rounds} rounds, torch threads {args.threads}, "
          f"app size {args.size[0]}x{args.size[1]}")
    print(f"headless tok/s:     {summary(head, ',.0f')}")
    print(f"dashboard tok/s:    {summary(dash, ',.0f')}")
    print(f"ratio dash/headless: {summary(ratios, '.3f')}  (target >= 0.95)")
    print(f"UI thread CPU:      {summary(cpu, '.1%')} of one core  (target < 10%)")
    if args.pairs:
        with tempfile.TemporaryDirectory() as tmp:
            ratios, share = run_phases(args, Path(tmp) / "phases", args.pairs)
        print(f"alternating run ({args.pairs} pairs of {args.phase}-step phases, UI working vs paused):")
        print(f"  ratio working/paused: {summary(ratios, '.3f')}  over {len(ratios)} adjacent pairs")
        print(f"  UI thread CPU while working: {summary(share, '.1%')} of one core")


if __name__ == "__main__":
    main()

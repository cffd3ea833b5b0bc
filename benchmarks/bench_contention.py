"""Throughput on a CPU shared with busy processes: the default against fixed settings.

    python benchmarks/bench_contention.py                       # loads 0, 1, 2 busy
    python benchmarks/bench_contention.py --code /tmp/base      # also that tree's package as "before"
    python benchmarks/bench_contention.py --spin 1000,30000     # also arms with GOMP_SPINCOUNT=N
    python benchmarks/bench_contention.py --loads 0,1 --windows 40 --window 10
    python benchmarks/bench_contention.py --busy torch --loads 1   # the neighbour is another torch job

Each arm is its own process (OpenMP reads its wait policy once, when torch
loads), training the demo shape (2 x 64 x 64, batch 32, context 64) with
``engine.Trainer``.  The arms take turns window by window: one arm trains
``--window`` steps while the others wait on a pipe, then the next; each arm's
window is timed from inside the engine's own loop (a sink), so start-up and
the waiting are not.  Short turns mean the neighbours on this shared machine
(other people's tests) land on every arm alike; the order rotates each round.

A load of K is K busy processes beside the arms for that load's turns:
pure-Python spin loops (``while True: pass``), or with ``--busy torch`` loops
of small torch ops with OpenMP's default wait, like another training run.
Every arm starts afresh for each load, so the losses of each load's runs can
be compared step by step.

Arms:
  after           this tree, nothing set: the product's own choice (the
                  command's ``threads.apply_wait_policy``, then the
                  engine's ``threads.ThreadGovernor``), started once the
                  busy processes run
  after-late      the same, started before them: the load arrives mid-run
                  (after ``--late-warmup`` steps on the idle machine)
  before          the tree given by ``--code`` (e.g. /tmp/base), nothing set
  before-late     the same, started before the busy processes
  default         torch's thread count, OpenMP's own default wait
  threads=K       ``--threads K``, OpenMP's own default wait
  passive         OMP_WAIT_POLICY=PASSIVE
  spin=N          GOMP_SPINCOUNT=N (``--spin``)

The fixed settings (all but after and before) are the reference: for each
load, "best" is the fastest of them.  They run this tree with the wait set
explicitly (an explicit setting wins over the product's choice); "default"
sets GOMP_SPINCOUNT=300000, libgomp's own spin when nothing is set.

Printed per load: median tokens/sec over windows, the spread, the ratio to
the best fixed setting, ``uptime``'s load, the thread counts the product's
own choice used (``threads.ThreadGovernor`` moves it); then whether runs
computed identical losses, bit for bit, across loads and wait policies: per
pinned thread count, with the automatic arms beside the full count pinned.  Figures on a shared machine are noisy: compare numbers from one
run only.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
LIBGOMP_DEFAULT_SPIN = "300000"  # libgomp's spin count when OMP_WAIT_POLICY is unset

# One arm: trains, and every `window` steps reports the window's time and
# losses on stdout, then waits for "go" (or "stop") on stdin.
WORKER = r"""
import json, sys, time
try:
    from tui_trainer.train.threads import apply_wait_policy  # what the command does first
    apply_wait_policy()
except ImportError:  # a tree from before threads.py
    pass
import torch
from tui_trainer.config import make_config
from tui_trainer.train.engine import Trainer

warmup, window, windows, threads, total = (int(a) for a in sys.argv[1:6])
values = dict(steps=total, eval_every=10**9, eval_batches=1, sample_tokens=1,  # one schedule for every arm
              warmup_steps=20, seed=1337)
if threads:
    values["threads"] = threads
cfg = make_config(values)
out = sys.stdout

class Turns:
    def __init__(self):
        self.t = None
        self.losses = []
        self.device = "?"

    def emit(self, r):
        if r.type == "run_start":
            self.device = r.device
        if r.type != "train":
            return
        self.losses.append(r.train_loss)
        if r.step < warmup or (r.step - warmup) % window:
            return
        now = time.perf_counter()
        msg = {"device": self.device, "threads": torch.get_num_threads(), "losses": self.losses}
        if self.t is not None:
            msg["seconds"] = now - self.t
        out.write(json.dumps(msg) + "\n")
        out.flush()
        self.losses = []
        if sys.stdin.readline().strip() != "go":
            raise SystemExit(0)
        self.t = time.perf_counter()

Trainer(cfg, None, [Turns()]).run()
"""


@dataclass
class Arm:
    name: str
    code: Path
    env: dict[str, str] = field(default_factory=dict)
    threads: int = 0
    reference: bool = True  # a fixed setting the product's choice is measured against
    early: bool = False  # started before the busy processes: the load arrives mid-run


def make_arms(code: Path | None, threads: list[int], spins: list[int], passive: bool) -> list[Arm]:
    fixed = {"GOMP_SPINCOUNT": LIBGOMP_DEFAULT_SPIN}
    arms = [Arm("after", ROOT, reference=False), Arm("after-late", ROOT, reference=False, early=True)]
    if code:
        arms += [Arm("before", code, reference=False), Arm("before-late", code, reference=False, early=True)]
    arms.append(Arm("default", ROOT, dict(fixed)))
    arms += [Arm(f"threads={k}", ROOT, dict(fixed), k) for k in threads]
    if passive:
        arms.append(Arm("passive", ROOT, {"OMP_WAIT_POLICY": "PASSIVE"}))
    arms += [Arm(f"spin={n}", ROOT, {"GOMP_SPINCOUNT": str(n)}) for n in spins]
    return arms


class Worker:
    def __init__(self, arm: Arm, warmup: int, window: int, windows: int, total: int):
        env = {k: v for k, v in os.environ.items() if k not in OMP_VARS}
        env.update(arm.env)
        env["PYTHONPATH"] = str(arm.code)
        self.arm = arm
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(warmup), str(window), str(windows),
                                      str(arm.threads), str(total)], env=env, cwd=arm.code,  # not this tree's cwd
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.losses: list[float] = []
        self.device = "?"
        self.threads: list[int] = []  # torch's thread count at the end of each window

    def read(self) -> dict:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise SystemExit(f"arm {self.arm.name} ended early (exit status {self.proc.wait()})")
        msg = json.loads(line)
        self.losses += msg["losses"]
        self.device = msg["device"]
        self.threads.append(msg["threads"])
        return msg

    def turn(self) -> float:
        self.proc.stdin.write("go\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self.read()["seconds"]

    def close(self) -> None:
        try:
            self.proc.stdin.write("stop\n")  # type: ignore[union-attr]
            self.proc.stdin.close()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


BUSY = {
    # A process that never waits: a script, a preprocessing job.
    "python": "while True: pass",
    # Another torch program with OpenMP's own default wait, as another
    # person's training run (or a second one of your own) would be: its
    # threads spin too, and two spinning teams on the same cores are the
    # worst case.
    "torch": ("import torch\nx = torch.randn(2048, 64)\nw = torch.randn(64, 256)\n"
              "while True:\n    (x @ w).relu_().sum()"),
}
BUSY_KIND = "python"


def start_busy(n: int) -> list[subprocess.Popen]:
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARS}
    return [subprocess.Popen([sys.executable, "-c", BUSY[BUSY_KIND]], env=env) for _ in range(n)]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def uptime() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def run_load(arms: list[Arm], load: int, args: argparse.Namespace) -> tuple[dict[str, list[float]], dict]:
    tokens = args.window * 32 * 64
    workers: list[Worker] = []
    busy: list[subprocess.Popen] = []
    tps: dict[str, list[float]] = {a.name: [] for a in arms}
    try:
        # One at a time, each through its warmup, so an arm choosing its wait
        # policy at start sees the busy processes and nothing of the others.
        for a in sorted(arms, key=lambda a: not a.early):
            if not a.early and not busy and load:
                busy = start_busy(load)
                time.sleep(1.0)
            warmup = args.late_warmup if a.early else args.warmup
            total = max(args.warmup, args.late_warmup) + args.window * args.windows
            workers.append(Worker(a, warmup, args.window, args.windows, total))
            workers[-1].read()
        if not busy and load:
            busy = start_busy(load)
            time.sleep(1.0)
        workers.sort(key=lambda w: arms.index(w.arm))
        loads = []
        for rnd in range(args.windows):
            shift = rnd % len(workers)
            for w in workers[shift:] + workers[:shift]:
                tps[w.arm.name].append(tokens / w.turn())
            if rnd % 10 == 0:
                loads.append(uptime())
        loads.append(uptime())
    finally:
        stop(busy)
        for w in workers:
            w.close()
    info = {a.name: {"losses": w.losses, "device": w.device, "threads": w.threads} for a, w in zip(arms, workers)}
    info["_uptime"] = loads  # type: ignore[assignment]
    return tps, info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loads", default="0,1,2", help="busy processes beside the run, comma-separated")
    p.add_argument("--windows", type=int, default=30, help="timed windows per arm and load")
    p.add_argument("--window", type=int, default=10, help="steps per window")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first, each arm")
    p.add_argument("--late-warmup", type=int, default=150,
                   help="untimed steps, on an idle machine, of the arms the load arrives at mid-run")
    p.add_argument("--code", type=Path, help="another copy of the package to run as 'before'")
    p.add_argument("--threads", help="fixed thread counts to try (default: 1..cpu count)")
    p.add_argument("--spin", default="", help="GOMP_SPINCOUNT values to try as arms")
    p.add_argument("--no-passive", action="store_true", help="leave out the OMP_WAIT_POLICY=PASSIVE arm")
    p.add_argument("--only", help="run only these arms (comma-separated names)")
    p.add_argument("--busy", choices=sorted(BUSY), default="python",
                   help="what each busy process runs: a pure-Python loop, or torch ops with OpenMP's default wait")
    args = p.parse_args(argv)
    global BUSY_KIND
    BUSY_KIND = args.busy

    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = [int(k) for k in args.threads.split(",")] if args.threads else list(range(1, ncpu + 1))
    spins = [int(n) for n in args.spin.split(",") if n]
    loads = [int(k) for k in args.loads.split(",")]
    arms = make_arms(args.code, threads, spins, not args.no_passive)
    if args.only:
        keep = args.only.split(",")
        arms = [a for a in arms if a.name in keep]
    print(f"{ncpu} CPUs; demo shape; {args.windows} windows of {args.window} steps per arm and load, "
          f"turns interleaved; loads {loads} ({args.busy} busy processes); arms: {', '.join(a.name for a in arms)}",
          flush=True)

    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))  # so busy loops and arms are stopped
    results: dict[int, tuple[dict[str, list[float]], dict]] = {}
    for load in loads:
        t = time.time()
        results[load] = run_load(arms, load, args)
        meds = ", ".join(f"{n} {statistics.median(v):,.0f}" for n, v in results[load][0].items())
        print(f"load {load} done in {time.time() - t:.0f}s: median tok/s {meds}", flush=True)
    report(arms, loads, results)


def report(arms: list[Arm], loads: list[int], results: dict) -> None:
    med = {(k, a.name): statistics.median(results[k][0][a.name]) for k in loads for a in arms}
    best = {k: max(med[(k, a.name)] for a in arms if a.reference) for k in loads}
    print()
    print("median tokens/sec over windows (ratio to the best fixed setting at that load)")
    print(f"{'arm':<12}" + "".join(f"{f'{k} busy':>21}" for k in loads))
    for a in arms:
        print(f"{a.name:<12}" + "".join(f"{med[(k, a.name)]:>12,.0f} ({med[(k, a.name)] / best[k]:.2f})"
                                       for k in loads))
    names = [a.name for a in arms]
    if "after" in names and "before" in names:
        print("after / before: " + ", ".join(f"{k} busy {med[(k, 'after')] / med[(k, 'before')]:.2f}"
                                             for k in loads))
    # Per-window ratios: the two windows of a pair ran a few seconds apart.
    for k in loads:
        tps = results[k][0]
        best_ref = max((a.name for a in arms if a.reference), key=lambda n: med[(k, n)])
        for a in arms:
            if not a.reference:
                r = [x / y for x, y in zip(tps[a.name], tps[best_ref])]
                print(f"{k} busy: {a.name} / {best_ref} per window: median {statistics.median(r):.2f} "
                      f"(spread {min(r):.2f}..{max(r):.2f})")
    print()
    for k in loads:
        tps, info = results[k]
        spread = ", ".join(f"{n} {min(v):,.0f}..{max(v):,.0f}" for n, v in tps.items())
        print(f"{k} busy: spread {spread}")
        print(f"{k} busy: {' | '.join(info['_uptime'])}")
    print()
    for a in arms:
        devices = [results[k][1][a.name]["device"] for k in loads]
        if len(set(devices)) == 1:
            print(f"{a.name:<12} {devices[0]}")
        else:
            print(f"{a.name:<12} " + " | ".join(f"{k} busy: {d}" for k, d in zip(loads, devices)))

    # The thread counts the product's own choice used (the governor moves it).
    print()
    for a in arms:
        if a.threads or a.env:
            continue  # pinned, or a wait set by hand: the count does not move
        for k in loads:
            used = results[k][1][a.name]["threads"][1:]  # the first report is the warmup's end
            counts = {n: used.count(n) for n in sorted(set(used))}
            print(f"{k} busy: {a.name} windows by thread count: "
                  + ", ".join(f"{n}: {c}" for n, c in counts.items()))

    # Reproducibility: this tree's losses depend on the pinned thread count
    # only; an automatic count computes what the full count pinned does, however
    # it moved (model.pin_gradient_threads).  Another tree's: its thread count.
    print()
    full = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    groups: dict[str, list[tuple[str, list[float]]]] = {}
    for k in loads:
        for a in arms:
            i = results[k][1][a.name]
            if a.code == ROOT:
                key = f"this tree, {a.threads or full} thread{'s' if (a.threads or full) > 1 else ''}, pinned or auto"
            else:
                key = f"{a.code}, {i['threads'][-1]} threads"
            groups.setdefault(key, []).append((f"{a.name}@{k}", i["losses"]))
    for key, runs in groups.items():
        common = min(len(losses) for _, losses in runs)
        same = all(losses[:common] == runs[0][1][:common] for _, losses in runs)
        arm_names = sorted({r.split("@")[0] for r, _ in runs})
        print(f"losses, {key}: {'identical' if same else 'DIFFER'} over "
              f"{common} steps across {len(runs)} runs ({len(loads)} loads; {', '.join(arm_names)})")


if __name__ == "__main__":
    main()

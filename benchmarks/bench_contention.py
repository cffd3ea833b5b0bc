"""Throughput on a CPU shared with busy processes: the default against fixed settings.

    python benchmarks/bench_contention.py                      # loads 0, 1, 2 busy; 3 rounds
    python benchmarks/bench_contention.py --code /tmp/base     # also the package in /tmp/base as "before"
    python benchmarks/bench_contention.py --spin 1000,30000    # also arms with GOMP_SPINCOUNT=N
    python benchmarks/bench_contention.py --loads 0,1 --rounds 5 --steps 200

Every arm is a fresh ``python -m tui_trainer train --headless`` process (the
OpenMP wait policy is read once, when torch loads), on the demo shape (2 x 64
x 64, batch 32, context 64).  Tokens/sec comes from the run's own log: tokens
over ``elapsed_s`` between the end of the warmup and the last step, so
start-up, the corpus load and the final eval are not timed.

A load of K is K pure-Python spin loops (``while True: pass``) running beside
the arm, one per busy process, started before and stopped after each round's
arms for that load.  Arms run in a rotated order each round, so a neighbour's
load (other people's tests on this shared machine) falls on all of them
alike; medians over rounds are printed with ``uptime``'s load at the time.

Arms:
  after           this tree, nothing set: the product's own choice
  before          the tree given by ``--code`` (e.g. /tmp/base), nothing set
  threads=K       ``--threads K``, OpenMP's own default wait (the reference)
  default         torch's thread count, OpenMP's own default wait (= before)
  passive         OMP_WAIT_POLICY=PASSIVE
  spin=N          GOMP_SPINCOUNT=N (``--spin``)

The reference arms need OpenMP's own default wait: with ``--code`` they run
that tree; otherwise this tree with GOMP_SPINCOUNT=300000, libgomp's own
default spin, set explicitly so the product's policy stands aside.

For each load the table gives tokens/sec and the ratio to the best fixed
setting at that load.  Then the reproducibility check: every run with the
same thread count computed the same losses, bit for bit, whatever the load
and wait policy.  Figures on a shared machine are noisy: compare numbers from
one run only.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
LIBGOMP_DEFAULT_SPIN = "300000"  # libgomp's spin count when OMP_WAIT_POLICY is unset


@dataclass
class Arm:
    name: str
    code: Path
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    reference: bool = True  # a fixed setting the product's choice is measured against


def make_arms(code: Path | None, threads: list[int], spins: list[int], passive: bool) -> list[Arm]:
    ref_code = code or ROOT
    default_env = {} if code else {"GOMP_SPINCOUNT": LIBGOMP_DEFAULT_SPIN}
    arms = [Arm("after", ROOT, reference=False)]
    if code:
        arms.append(Arm("before", code, reference=False))
    arms.append(Arm("default", ref_code, dict(default_env)))
    arms += [Arm(f"threads={k}", ref_code, dict(default_env), ["--threads", str(k)]) for k in threads]
    if passive:
        arms.append(Arm("passive", ref_code, {"OMP_WAIT_POLICY": "PASSIVE"}))
    arms += [Arm(f"spin={n}", ref_code, {"GOMP_SPINCOUNT": str(n)}) for n in spins]
    return arms


def run_arm(arm: Arm, steps: int, warmup: int, tmp: Path, max_seconds: float) -> dict:
    """One run of the arm; a run still going after ``max_seconds`` (a
    collapse) is stopped with SIGTERM and timed over the steps it made."""
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARS}
    env.update(arm.env)
    env["PYTHONPATH"] = str(arm.code)
    out = Path(tempfile.mkdtemp(dir=tmp))
    cmd = [sys.executable, "-m", "tui_trainer", "train", "--headless", "--steps", str(steps),
           "--eval-every", str(steps), "--eval-batches", "1", "--sample-tokens", "1",
           "--warmup-steps", "20", "--out", str(out / "run"), *arm.args]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cut = False
    try:
        _, err = proc.communicate(timeout=max_seconds)
    except subprocess.TimeoutExpired:
        cut = True
        proc.send_signal(signal.SIGTERM)  # stops after its current step, log complete
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    if proc.returncode != 0 and not cut:
        raise SystemExit(f"{arm.name} failed:\n{err[-2000:]}")
    log = out / "run" / "losses.jsonl"
    recs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    train = [r for r in recs if r["type"] == "train"]
    if len(train) < 2:
        return {"tps": 0.0, "losses": [], "device": recs[0]["device"] if recs else "?", "cut": cut}
    a, b = train[min(warmup, len(train) // 2) - 1], train[-1]
    return {"tps": (b["tokens"] - a["tokens"]) / (b["elapsed_s"] - a["elapsed_s"]),
            "losses": [r["train_loss"] for r in train], "device": recs[0]["device"], "cut": cut}


def start_busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop_busy(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def uptime() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loads", default="0,1,2", help="busy processes beside the run, comma-separated")
    p.add_argument("--rounds", type=int, default=3, help="runs of every arm at every load")
    p.add_argument("--steps", type=int, default=300, help="steps per run")
    p.add_argument("--warmup", type=int, default=30, help="untimed steps at the start of each run")
    p.add_argument("--code", type=Path, help="another copy of the package to run as 'before'")
    p.add_argument("--threads", help="fixed thread counts to try (default: 1..cpu count)")
    p.add_argument("--spin", default="", help="GOMP_SPINCOUNT values to try as arms")
    p.add_argument("--no-passive", action="store_true", help="leave out the OMP_WAIT_POLICY=PASSIVE arm")
    p.add_argument("--only", help="run only these arms (comma-separated names)")
    p.add_argument("--max-seconds", type=float, default=120,
                   help="stop a run that takes longer (a collapse) and time the steps it made")
    args = p.parse_args(argv)

    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = [int(k) for k in args.threads.split(",")] if args.threads else list(range(1, ncpu + 1))
    spins = [int(n) for n in args.spin.split(",") if n]
    loads = [int(k) for k in args.loads.split(",")]
    arms = make_arms(args.code, threads, spins, not args.no_passive)
    if args.only:
        keep = set(args.only.split(","))
        arms = [a for a in arms if a.name in keep]
    print(f"{ncpu} CPUs; demo shape, {args.steps} steps per run ({args.warmup} untimed); "
          f"loads {loads}; {args.rounds} rounds; arms: {', '.join(a.name for a in arms)}", flush=True)

    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))  # so the busy processes are stopped
    results: dict[tuple[int, str], list[dict]] = {}
    loadavg: dict[int, list[str]] = {k: [] for k in loads}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for load in loads:
                busy = start_busy(load)
                try:
                    time.sleep(0.5)
                    shift = (rnd + load) % len(arms)
                    for arm in arms[shift:] + arms[:shift]:
                        res = run_arm(arm, args.steps, args.warmup, Path(tmp), args.max_seconds)
                        results.setdefault((load, arm.name), []).append(res)
                        print(f"  round {rnd + 1} load {load} {arm.name:<12} {res['tps']:>9,.0f} tok/s  "
                              f"[{res['device']}]{' (cut short)' if res['cut'] else ''}", flush=True)
                    loadavg[load].append(uptime())
                finally:
                    stop_busy(busy)
    report(arms, loads, results, loadavg)


def report(arms: list[Arm], loads: list[int], results: dict, loadavg: dict) -> None:
    med = {key: statistics.median(r["tps"] for r in runs) for key, runs in results.items()}
    print()
    print("median tokens/sec (ratio to the best fixed setting at that load)")
    print(f"{'arm':<14}" + "".join(f"{f'{k} busy':>22}" for k in loads))
    best = {k: max(med[(k, a.name)] for a in arms if a.reference) for k in loads}
    for a in arms:
        cells = "".join(f"{med[(k, a.name)]:>13,.0f} ({med[(k, a.name)] / best[k]:.2f})" for k in loads)
        print(f"{a.name:<14}{cells}")
    names = {a.name for a in arms}
    if {"after", "before"} <= names:
        print("after / before: " + ", ".join(
            f"{k} busy {med[(k, 'after')] / med[(k, 'before')]:.2f}" for k in loads))
    for k in loads:
        spread = {a.name: (min(r['tps'] for r in results[(k, a.name)]),
                           max(r['tps'] for r in results[(k, a.name)])) for a in arms}
        print(f"{k} busy: spread " + ", ".join(f"{n} {lo:,.0f}..{hi:,.0f}" for n, (lo, hi) in spread.items()))
        print(f"{k} busy: {'; '.join(loadavg[k])}")

    # Reproducibility: the losses depend on the thread count only.
    default_threads = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                                     capture_output=True, text=True).stdout.strip()
    by_threads: dict[str, list[tuple[str, list[float]]]] = {}
    for (k, name), runs in results.items():
        arm = next(a for a in arms if a.name == name)
        key = arm.args[1] if arm.args else default_threads
        by_threads.setdefault(key, []).extend((f"{name}@{k}", r["losses"]) for r in runs)
    print()
    for key, runs in sorted(by_threads.items()):
        common = min(len(losses) for _, losses in runs)  # a run cut short has fewer
        same = all(losses[:common] == runs[0][1][:common] for _, losses in runs)
        print(f"losses with {key} threads: {'identical' if same else 'DIFFER'} across "
              f"{len(runs)} runs ({len({n.split('@')[1] for n, _ in runs})} loads, "
              f"{len({n.split('@')[0] for n, _ in runs})} arms, first {common} steps)")


if __name__ == "__main__":
    main()

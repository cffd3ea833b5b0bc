"""The demo: its wall time and final val loss, and a sweep to choose its size.

    python benchmarks/bench_demo.py            # run `tui-trainer train --headless` with the defaults
    python benchmarks/bench_demo.py --sweep    # compare a few shapes at one training-time budget
    python benchmarks/bench_demo.py --sweep --budget 30 --spec 2x64x64:32:3e-3 --spec 3x96x64:32:4e-3

The demo mode times the real command end to end (interpreter start, corpus
load, every eval and sample) and reads the final val loss back from its log.

The sweep trains each spec ``LAYERSxWIDTHxCONTEXT:BATCH:LR`` for as many steps
as fit ``--budget`` seconds at its measured speed, or ``...:LR:MTOKENS`` for a
fixed number of millions of tokens (the robust choice on a loaded machine:
estimate each shape's quiet-machine speed, e.g. from its FLOPs, and give it
the tokens the budget buys).  Speeds are measured first
with all specs taking turns, so a neighbour's load on this shared machine
slows them alike; each run then gets a full warmup + cosine schedule over its
step count, and its val loss is measured on the same number of held-out tokens.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tui_trainer.config import TrainConfig, make_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_SPECS = ["2x64x64:32:3e-3", "2x64x64:32:6e-3", "3x96x64:32:4e-3", "2x128x64:32:3e-3",
                 "4x128x64:32:3e-3"]


def run_demo(extra: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        cmd = [sys.executable, "-m", "tui_trainer", "train", "--headless", "--out", str(out), *extra]
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
            raise SystemExit(f"demo failed with exit code {proc.returncode}")
        recs = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    evals = [r for r in recs if r["type"] == "eval"]
    samples = [r for r in recs if r["type"] == "sample"]
    end = next(r for r in recs if r["type"] == "run_end")
    start = next(r for r in recs if r["type"] == "run_start")
    trains = [r for r in recs if r["type"] == "train"]
    tps = statistics.median(r["tokens_per_sec"] for r in trains)
    c = start["config"]
    print(f"demo: {c['n_layer']}x{c['n_embd']}x{c['context_length']} batch {c['batch_size']} "
          f"lr {c['max_lr']} steps {c['steps']} | {start['n_params']:,} params | {start['device']}")
    for e in evals:
        print(f"  eval {e['step']:>5} | val {e['val_loss']:.4f} | train {e['train_loss']:.4f} | {e['elapsed_s']:.1f}s")
    print(f"wall time {wall:.1f} s (process, end to end); run elapsed {end['elapsed_s']:.1f} s; "
          f"median step {tps:,.0f} tok/s; final val loss {end['val_loss']:.4f} nats/byte")
    if samples:
        print("final sample:\n" + samples[-1]["text"])


def parse_spec(spec: str) -> dict[str, Any]:
    shape, batch, lr = spec.split(":")[:3]
    n_layer, n_embd, ctx = (int(v) for v in shape.split("x"))
    return {"n_layer": n_layer, "n_embd": n_embd, "n_head": 4 if n_embd < 256 else n_embd // 64,
            "context_length": ctx, "batch_size": int(batch), "max_lr": float(lr)}


def measure_speeds(specs: list[str], rounds: int = 3, steps: int = 6) -> dict[str, float]:
    from tui_trainer.train.engine import Trainer

    trainers = {s: Trainer(make_config({**parse_spec(s), "steps": 10_000, "eval_every": 10_000,
                                         "warmup_steps": 10})) for s in specs}
    for tr in trainers.values():
        for _ in range(2):
            tr._train_step()
    tps: dict[str, list[float]] = {s: [] for s in specs}
    for _ in range(rounds):
        for s, tr in trainers.items():
            t = time.perf_counter()
            for _ in range(steps):
                tr._train_step()
            tps[s].append(steps * tr.cfg.batch_size * tr.cfg.context_length / (time.perf_counter() - t))
    return {s: statistics.median(v) for s, v in tps.items()}


def sweep(specs: list[str], budget: float, eval_tokens: int, warmup_frac: float, dtype: str,
          anchor: float | None) -> None:
    from tui_trainer.train.engine import Trainer

    timed = [s for s in specs if s.count(":") < 3]
    speeds = measure_speeds(timed) if timed else {s: float("nan") for s in specs}
    speeds.update({s: float("nan") for s in specs if s not in speeds})
    if anchor and timed:
        # The machine is shared: measured speeds are right relative to each
        # other, not in absolute terms.  Scale them so the first spec runs at
        # ``anchor`` tokens/sec, its speed on this machine when quiet.
        scale = anchor / speeds[specs[0]]
        speeds = {s: v * scale for s, v in speeds.items()}
    print(f"budget {budget:.0f} s of training per spec at {'anchored' if anchor else 'measured'} speeds "
          f"(spec 1 at {speeds[specs[0]]:,.0f} tok/s; a 4th field fixes millions of tokens instead); dtype {dtype}", flush=True)
    for s in specs:
        v = parse_spec(s)
        tokens_per_step = v["batch_size"] * v["context_length"]
        if s.count(":") == 3:  # an explicit budget in millions of tokens
            steps = max(20, int(float(s.split(":")[3]) * 1e6 / tokens_per_step))
        else:
            steps = max(20, int(budget * speeds[s] / tokens_per_step))
        eval_batches = max(1, eval_tokens // tokens_per_step)
        cfg = make_config({**v, "steps": steps, "eval_every": steps, "eval_batches": eval_batches,
                           "warmup_steps": max(1, int(warmup_frac * steps)), "dtype": dtype})
        tr = Trainer(cfg)
        t = time.perf_counter()
        end = tr.run()
        wall = time.perf_counter() - t
        print(f"{s:<20} {tr.model.num_params():>8,} params | {speeds[s]:>8,.0f} tok/s | {steps:>5} steps | "
              f"{steps * tokens_per_step / 1e6:5.2f} M tokens | val {end.val_loss:.4f} | {wall:5.1f} s wall",
              flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--spec", action="append", help="LAYERSxWIDTHxCONTEXT:BATCH:LR (repeatable)")
    p.add_argument("--budget", type=float, default=30.0, help="sweep: seconds of training per spec")
    p.add_argument("--eval-tokens", type=int, default=65536, help="sweep: held-out tokens in each val loss")
    p.add_argument("--warmup-frac", type=float, default=0.05)
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--anchor", type=float, help="sweep: quiet-machine tokens/sec of the first spec; "
                   "the others are scaled by their measured speed relative to it")
    p.add_argument("extra", nargs="*", help="demo mode: extra flags for tui-trainer train (after --)")
    args = p.parse_args(argv)
    if args.sweep:
        sweep(args.spec or DEFAULT_SPECS, args.budget, args.eval_tokens, args.warmup_frac, args.dtype, args.anchor)
    else:
        print(f"defaults: {TrainConfig().n_layer}x{TrainConfig().n_embd}x{TrainConfig().context_length}; "
              f"torch threads {torch.get_num_threads()}")
        run_demo(args.extra)


if __name__ == "__main__":
    main()

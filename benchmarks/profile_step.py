"""Profile the engine's training step: where the time goes, and what the host
work around the math costs.

    python benchmarks/profile_step.py                 # demo config
    python benchmarks/profile_step.py --n-layer 4 --n-embd 128 --context-length 128
    python benchmarks/profile_step.py --trace /tmp/step.json   # chrome://tracing / Perfetto file

Prints (1) torch.profiler's table of the ops over a few steps of the real
loop (commands drained, records emitted to a JSONL sink), sorted by self CPU
time, and (2) the per-step cost of each piece of host work the engine adds to
a bare loop, timed in isolation, as microseconds and as a share of a step.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tui_trainer.config import make_config  # noqa: E402
from tui_trainer.train.engine import Trainer  # noqa: E402
from tui_trainer.train.optim import cosine_with_warmup, set_lr  # noqa: E402
from tui_trainer.records import TrainStep  # noqa: E402
from tui_trainer.run.log_writer import JsonlSink  # noqa: E402


def per_call_us(fn: Callable[[], Any], n: int = 2000) -> float:
    fn()
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t) / n * 1e6)
    return min(runs)


def _enter_exit(ctx: Any) -> None:
    with ctx:
        pass


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("n_layer", "n_embd", "n_head", "context_length", "batch_size"):
        p.add_argument("--" + name.replace("_", "-"), type=int)
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--steps", type=int, default=10, help="profiled steps")
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--trace", help="also write a Chrome trace here")
    args = p.parse_args(argv)
    values = {k: v for k, v in vars(args).items()
              if k in ("n_layer", "n_embd", "n_head", "context_length", "batch_size") and v is not None}
    cfg = make_config({**values, "dtype": args.dtype, "steps": 10_000, "eval_every": 10_000, "warmup_steps": 10})

    with tempfile.TemporaryDirectory() as tmp:
        sink = JsonlSink(Path(tmp) / "losses.jsonl")
        tr = Trainer(cfg, None, [sink])
        for _ in range(5):
            tr._train_step()
        step_times = []
        for _ in range(20):
            t = time.perf_counter()
            tr._drain_commands()
            tr._train_step()
            step_times.append(time.perf_counter() - t)
        step_us = statistics.median(step_times) * 1e6

        with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            for _ in range(args.steps):
                with record_function("engine.step"):
                    tr._drain_commands()
                    tr._train_step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
        if args.trace:
            prof.export_chrome_trace(args.trace)
            print(f"trace written to {args.trace}")

        # The host work the engine adds around the math, one piece at a time.
        rec = TrainStep(step=1, train_loss=1.2345, lr=1e-3, tokens_per_sec=12345.6, grad_norm=0.5,
                        elapsed_s=1.0, tokens=1000)
        loss, norm = torch.tensor(1.5), torch.tensor(0.5)
        pieces = {
            "sampler.next (gather a batch)": tr.sampler.next,
            "lr schedule + set_lr": lambda: set_lr(tr.optimizer, cosine_with_warmup(
                100, cfg.warmup_steps, cfg.steps, cfg.max_lr, cfg.lr_floor)),
            "autocast context (enter+exit)": lambda: _enter_exit(tr.hw.autocast()),
            "loss+norm to host (stack.tolist)": lambda: torch.stack([loss, norm]).tolist(),
            "build TrainStep record": lambda: TrainStep(step=1, train_loss=1.2, lr=1e-3, tokens_per_sec=1.0,
                                                        grad_norm=0.5, elapsed_s=tr.elapsed, tokens=10),
            "JSONL emit (dumps+write+flush)": lambda: sink.emit(rec),
            "drain empty command queue": tr._drain_commands,
        }
        print(f"config {cfg.n_layer}x{cfg.n_embd}x{cfg.context_length} batch {cfg.batch_size} {tr.hw.describe()}: "
              f"median step {step_us / 1e3:.2f} ms")
        total = 0.0
        for name, fn in pieces.items():
            us = per_call_us(fn, n=200 if "sampler" in name else 2000)
            total += us
            print(f"  {name:<36} {us:8.1f} us  {us / step_us:7.3%} of a step")
        print(f"  {'all of the above':<36} {total:8.1f} us  {total / step_us:7.3%} of a step")
        sink.close()


if __name__ == "__main__":
    main()

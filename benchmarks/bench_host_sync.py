"""Host syncs per step and the engine's step time: the NaN guard decided on
the device (``train/guard.py``) against the old path, side by side in one run.

    python benchmarks/bench_host_sync.py                   # the demo's model and cadence
    python benchmarks/bench_host_sync.py --n-layer 4 --n-embd 128 --windows 10 --window 40

The old path is the guard's host path (``StepGuard.on_device = False``): the
loss and grad norm read with ``.tolist()`` before every optimizer step and
each step's record emitted at once, as ``engine._train_step`` did before.
Both arms are Trainers of the same config in this process; they take turns
window by window, so a neighbour's load on a shared machine lands on both
alike.  A window is ``--window`` steps launched through ``Trainer._train_step``
(the loop's own step, its settles at the log interval included) and a final
settle.  Reported: host syncs per step (counted by ``guard.HostSyncCounter``
in a separate window, since counting costs time) and the median seconds per
step, with the spread.  On a CPU every op is synchronous, so the sync itself
costs nothing here: what a GPU gains (the host queueing the next step while
the device runs) shows only there (``bench_gpu.py``).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tui_trainer.config import make_config  # noqa: E402
from tui_trainer.train.engine import Trainer  # noqa: E402
from tui_trainer.train import guard  # noqa: E402
from tui_trainer.train.guard import HostSyncCounter  # noqa: E402


class Null:
    def emit(self, r: object) -> None:
        pass


def window(t: Trainer, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        t._train_step()
    t._settle()
    return (time.perf_counter() - start) / n


def syncs_per_step(t: Trainer, n: int) -> float:
    """At the log interval only: the counter slows each step, and a step slower
    than ``guard.RECORDS_LAG_S`` / ``log_every`` would add a settle a second."""
    lag, guard.RECORDS_LAG_S = guard.RECORDS_LAG_S, math.inf
    while t.step % t.cfg.log_every:  # start on a log interval: n steps hold n / log_every of them
        t._train_step()
    try:
        with HostSyncCounter() as c:
            for _ in range(n):
                t._train_step()
            t._settle()
    finally:
        guard.RECORDS_LAG_S = lag
    return len(c.calls) / n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--window", type=int, default=20, help="steps per window")
    p.add_argument("--threads", type=int, default=max(1, min(2, torch.get_num_threads())))
    p.add_argument("--n-layer", type=int)
    p.add_argument("--n-embd", type=int)
    p.add_argument("--context-length", type=int)
    p.add_argument("--batch-size", type=int)
    a = p.parse_args(argv)
    values = {"steps": 1_000_000, "threads": a.threads, "device": "cpu"}
    values.update({k: v for k, v in (("n_layer", a.n_layer), ("n_embd", a.n_embd), ("context_length",
                                      a.context_length), ("batch_size", a.batch_size)) if v is not None})
    cfg = make_config(values)
    arms = {"device guard": Trainer(cfg, None, [Null()]), "host guard (old)": Trainer(make_config(values), None, [Null()])}
    arms["host guard (old)"].guard.on_device = False
    assert arms["device guard"].guard.on_device, "the device guard needs fused AdamW (--fused-adamw)"
    print(f"model {cfg.n_layer}x{cfg.n_embd}x{cfg.context_length} batch {cfg.batch_size}, log every "
          f"{cfg.log_every} steps, {a.threads} thread(s), {a.windows} windows of {a.window} steps per arm")
    for t in arms.values():
        window(t, 5)  # warm-up: the first steps allocate
    syncs = {name: syncs_per_step(t, 5 * cfg.log_every) for name, t in arms.items()}
    times: dict[str, list[float]] = {name: [] for name in arms}
    for i in range(a.windows):
        for name in (list(arms) if i % 2 == 0 else list(reversed(arms))):
            times[name].append(window(arms[name], a.window))
    print(f"{'':<18} {'syncs/step':>10} {'ms/step (median)':>17} {'spread':>18}")
    for name in arms:
        ts = times[name]
        print(f"{name:<18} {syncs[name]:>10.2f} {1e3 * statistics.median(ts):>17.2f} "
              f"{1e3 * min(ts):>8.2f}..{1e3 * max(ts):<8.2f}")
    ratios = [d / h for d, h in zip(*times.values())]
    print(f"device ÷ host step time: median of window pairs {statistics.median(ratios):.3f} "
          f"(spread {min(ratios):.2f}..{max(ratios):.2f}); syncs per step {syncs['device guard']:.2f} vs "
          f"{syncs['host guard (old)']:.2f}")


if __name__ == "__main__":
    main()

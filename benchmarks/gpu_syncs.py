"""Host syncs per step on a CUDA GPU, as CUDA itself reports them.

    python benchmarks/gpu_syncs.py            # 60 steps of the engine, log every 10

``torch.cuda.set_sync_debug_mode("warn")`` makes every operation that waits
for the GPU (a ``.item()``, a copy to the host, a blocking ``nonzero``)
warn; this counts those warnings per step, for steps inside a log interval
and for the steps that end one (where the loss and grad norm come to the host
in one copy), side by side.  On a machine without CUDA it says so and exits:
tests/test_host_sync.py counts the same calls on the CPU.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tui_trainer.config import make_config  # noqa: E402
from tui_trainer.train.engine import Trainer  # noqa: E402


def main() -> None:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to count here (tests/test_host_sync.py counts the calls on the CPU)")
        return
    cfg = make_config({"steps": 60, "log_every": 10, "eval_every": 1000, "checkpoint_every": 1000,
                       "device": "cuda", "out": "/tmp/gpu_syncs_run"})
    t = Trainer(cfg, None)
    real = t._train_step
    per_step: list[tuple[int, int]] = []

    def counted():
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                return real()
            finally:
                torch.cuda.set_sync_debug_mode("default")
                per_step.append((t.step, sum("synchroniz" in str(w.message) for w in seen)))

    t._train_step = counted
    end = t.run()
    inside = [n for s, n in per_step[5:] if s % cfg.log_every]
    ends = [n for s, n in per_step[5:] if not s % cfg.log_every]
    print(f"{end.status} at step {end.step}; syncs per step, after the first 5 steps:")
    print(f"  inside a log interval:   {sum(inside) / max(len(inside), 1):.2f} ({len(inside)} steps)")
    print(f"  ending a log interval:   {sum(ends) / max(len(ends), 1):.2f} ({len(ends)} steps)")


if __name__ == "__main__":
    main()

"""Run under torchrun by tests/test_distributed.py: one rank of a tiny
data-parallel run whose host syncs are counted per step, written to
``<out>/syncs.<rank>.json`` as [[step launched, syncs during it], ...] plus
the syncs in the rest of the loop: [[step trained, call], ...]."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from tui_trainer.config import make_config
from tui_trainer.records import TrainStep
from tui_trainer.run.run import Run
from tui_trainer.train import guard
from tui_trainer.train.engine import Trainer
from tui_trainer.train.parts import build_parts

from synccount import run_counting_syncs  # beside this file


def main(out: Path, lagging_rank: int | None = None) -> None:
    """``lagging_rank``: that rank's steps wait too long for the log at every
    step (RECORDS_LAG_S 0), the other's never: every rank must still settle
    at the same steps (``settles`` in the report)."""
    import os

    rank = int(os.environ.get("RANK", "0"))
    guard.RECORDS_LAG_S = 0.0 if rank == lagging_rank else math.inf  # else a loaded machine: no lag settle
    cfg = make_config({"n_layer": 1, "n_head": 2, "n_embd": 32, "context_length": 16, "batch_size": 4,
                       "eval_batches": 2, "sample_tokens": 4, "threads": 1, "steps": 24, "eval_every": 12,
                       "checkpoint_every": 1000, "log_every": 6})
    parts = build_parts(cfg)
    train: list[int] = []

    class Steps:
        def emit(self, r):
            if isinstance(r, TrainStep):
                train.append(r.step)

    run = Run.unlocked(None, sinks=[Steps()], sync=parts.dist, checkpoint_every=1000)
    t = Trainer(cfg, run, parts=parts)
    settles: list[int] = []
    real_settle = t.guard.settle

    def settle():
        done, n = real_settle()
        if n:
            settles.append(t.step)
        return done, n

    t.guard.settle = settle
    end, per_step, between = run_counting_syncs(t)
    (out / f"syncs.{rank}.json").write_text(json.dumps({"status": end.status, "step": end.step, "per_step": per_step,
                                                         "between": between, "train": train, "settles": settles,
                                                         "log_every": cfg.log_every, "eval_every": cfg.eval_every}))
    parts.dist.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)

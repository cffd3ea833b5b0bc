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
from tui_trainer.train.guard import HostSyncCounter
from tui_trainer.train.parts import build_parts


def main(out: Path) -> None:
    guard.RECORDS_LAG_S = math.inf  # a loaded machine: no lag settle
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
    per_step: list[tuple[int, int]] = []
    between: list[tuple[int, str]] = []
    real, stepping = t._train_step, [False]

    def counted():
        before, stepping[0] = len(counter.calls), True
        try:
            return real()
        finally:
            stepping[0] = False
            per_step.append((t.step, len(counter.calls) - before))

    class Where(HostSyncCounter):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            n = len(self.calls)
            result = super().__torch_function__(func, types, args, kwargs)
            if len(self.calls) > n and not stepping[0]:
                between.append((t.step, self.calls[-1]))
            return result

    counter = Where()
    t._train_step = counted
    with counter:
        end = t.run()
    rank = parts.dist.rank
    (out / f"syncs.{rank}.json").write_text(json.dumps({"status": end.status, "step": end.step, "per_step": per_step,
                                                         "between": between, "train": train,
                                                         "log_every": cfg.log_every, "eval_every": cfg.eval_every}))
    parts.dist.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))

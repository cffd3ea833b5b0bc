"""Host syncs of a training run, counted per step (tests/test_host_sync.py,
and each rank of tests/ddp_sync_probe.py under torchrun)."""
from __future__ import annotations

from typing import Any

from tui_trainer.train.guard import HostSyncCounter


def run_counting_syncs(trainer: Any) -> tuple[Any, list[tuple[int, int]], list[tuple[int, str]]]:
    """Run ``trainer`` to its end: (its ``run_end``; [(step launched, syncs
    while launching it)]; [(step trained, sync) anywhere else in the loop])."""
    per_step: list[tuple[int, int]] = []
    between: list[tuple[int, str]] = []
    real, stepping = trainer._train_step, [False]

    def counted():
        before, stepping[0] = len(counter.calls), True
        try:
            return real()
        finally:
            stepping[0] = False
            per_step.append((trainer.step, len(counter.calls) - before))

    class Where(HostSyncCounter):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            n = len(self.calls)
            out = super().__torch_function__(func, types, args, kwargs)
            if len(self.calls) > n and not stepping[0]:
                between.append((trainer.step, self.calls[-1]))
            return out

    counter = Where()
    trainer._train_step = counted
    with counter:
        end = trainer.run()
    return end, per_step, between

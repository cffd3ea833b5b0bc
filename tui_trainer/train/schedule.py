"""The learning rate the built-in loop trains with, and what a change of the
total steps does to it.

Until the total changes, the LR is ``optim.cosine_with_warmup``: a linear
warmup, then a cosine from ``max_lr`` down to ``min_lr`` at ``steps``.

A change of the total to ``N`` at step ``s0`` (a resume with ``--steps N``, or
a live ``steps=N``), with ``--schedule continue`` (the default), keeps the
LR continuous: the cosine's progress reached at ``s0``, ``p0``, goes on
linearly to 1 at the new end, that is, what is left of the cosine is
stretched (or squeezed) over the steps left:

    p(t)  = p0 + (1 - p0) (t - s0) / (N - s0)
    lr(t) = min_lr + 1/2 (1 + cos(pi p(t))) (max_lr - min_lr)

so the LR at ``s0`` is the one the run had reached and it still ends at
``min_lr`` at ``N``.  The warmup is never repeated: a change during the warmup
leaves the warmup as it is, and the cosine after it spans the new total.  A
run that had finished (``p0`` = 1) goes on at ``min_lr``.  ``max_lr`` and
``min_lr`` keep their meaning (the same progress, a new peak and floor).

``--schedule restart`` puts the cosine over the new total instead, as if the
run had been planned that long from its start: the LR jumps.

The refit point (``s0``, ``p0``) is saved in every checkpoint, so a resumed run
computes what the uninterrupted one would have.  A resume or a live change
that moves the next step's LR by more than ``JUMP`` (5%) is said in an
``lr_jump`` record: one line in the console, a toast in the dashboard.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

from ..bounds import number
from .optim import cosine_with_warmup
from ..records import LrJump

JUMP = 0.05  # a relative change of the next step's LR above this is announced


def _cosine(progress: float, max_lr: float, min_lr: float) -> float:
    """``optim.cosine_with_warmup``'s cosine at ``progress`` in [0, 1]."""
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


class LRSchedule:
    """The schedule's state: None, or the refit point of the last change of
    the total (``start`` = s0, ``progress`` = p0).  ``cfg`` is the run's
    ``config.TrainConfig``, read at each step (the live settings change it)."""

    def __init__(self) -> None:
        self.start: int | None = None
        self.progress = 0.0
        self.pending: LrJump | None = None  # a jump at the resume, said once the run has started

    def lr(self, step: int, cfg: Any, steps: int | None = None) -> float:
        """The LR (before ``lr_scale``) of 0-based ``step``; ``steps``: the
        total, if not ``cfg.steps``."""
        steps = cfg.steps if steps is None else steps
        if self.start is None or step < self.start:
            return cosine_with_warmup(step, cfg.warmup_steps, steps, cfg.max_lr, cfg.lr_floor)
        return _cosine(self._progress(step, cfg.warmup_steps, steps), cfg.max_lr, cfg.lr_floor)

    def _progress(self, step: int, warmup: int, steps: int) -> float:
        """The cosine's progress (0 to 1) at ``step`` past the warmup."""
        if step >= steps:
            return 1.0
        if self.start is None or step < self.start:
            return min(1.0, (step - warmup) / max(1, steps - warmup))
        return min(1.0, self.progress + (1.0 - self.progress) * (step - self.start) / max(1, steps - self.start))

    def refit(self, step: int, cfg: Any, old_steps: int, new_steps: int, rule: str) -> None:
        """The total goes from ``old_steps`` to ``new_steps`` before 0-based
        ``step`` is trained: the module's rule (``rule``: continue or restart)."""
        if rule == "restart":
            self.start = None
        elif step >= cfg.warmup_steps and new_steps > step:
            p = self._progress(step, cfg.warmup_steps, old_steps)
            self.start, self.progress = (step, p) if p > 0 else (None, 0.0)  # 0: the plain cosine is the refit

    def resumed(self, step: int, cfg: Any, old_steps: int, lr_scale: float) -> None:
        """After the checkpoint's state is loaded: refit for a total that
        changed (``old_steps``: the checkpoint's), or for ``--schedule
        restart``, and keep a jump of the LR to be said (``pending``)."""
        if old_steps == cfg.steps and cfg.schedule != "restart":
            return
        before = lr_scale * self.lr(step, cfg, old_steps)
        self.refit(step, cfg, old_steps, cfg.steps, cfg.schedule)
        after = lr_scale * self.lr(step, cfg)
        why = (f"resumed with steps {old_steps} -> {cfg.steps}" if old_steps != cfg.steps else "resumed")
        self.pending = self.jump(step, before, after, "resume", why + (
            f" and --schedule restart (the cosine starts again over {cfg.steps} steps; "
            "--schedule continue keeps the LR continuous)" if cfg.schedule == "restart" else ""))

    def announce(self, emit: Any) -> None:
        """Emit the jump the resume made, if any (after the run's ``run_start``)."""
        if self.pending is not None:
            emit(dataclasses.replace(self.pending, time=time.time()))  # stamped when said
            self.pending = None

    @staticmethod
    def jump(step: int, before: float, after: float, cause: str, why: str) -> LrJump | None:
        """An ``lr_jump`` record when ``after`` is more than ``JUMP`` from ``before``, else None."""
        if not abs(after - before) > JUMP * abs(before):
            return None
        return LrJump(step=step, before=before, after=after, cause=cause,
                      message=f"lr jumps from {before:.3g} to {after:.3g} at step {step}: {why}")

    def live_change(self, step: int, key: str, old: Any, new: Any, before: float, after: float,
                    cfg: Any) -> LrJump | None:
        """The jump a live change of ``key`` made, if any."""
        why = f"{key} {number(old)} -> {number(new)}"
        if key == "steps" and cfg.schedule == "restart":
            why += f" with schedule restart (the cosine starts again over {new} steps)"
        return self.jump(step, before, after, key, why)

    # --- Stateful ---
    def state_dict(self) -> dict[str, Any] | None:
        return None if self.start is None else {"start": self.start, "progress": self.progress}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """A checkpoint's (checked by ``checkpoint_schema.check_schedule``); None: never refitted."""
        if state is None:
            self.start, self.progress = None, 0.0
        else:
            self.start, self.progress = int(state["start"]), float(state["progress"])

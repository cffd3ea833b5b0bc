"""The NaN guard, decided on the device: no host sync inside a step.

A step whose loss or gradient norm is NaN/inf must never reach the weights.
Asking the host (``.item()``, ``.tolist()``) before every optimizer step would
make the CPU wait for the accelerator each step, so it could not queue the
next step's kernels while this one runs.  Instead the skip is a device flag,
as ``GradScaler`` does with ``found_inf``: the fused AdamW kernel reads it and
leaves the parameters, ``exp_avg``, ``exp_avg_sq`` and ``step`` exactly as
they were when it is 1 (a skipped very first step makes AdamW's zero state,
step 0, as a GradScaler-skipped one does; the next step starts from the same
numbers as without it).

The numbers a record needs (loss, grad norm, skipped, frozen) stay on the
device until the loop settles its steps in flight (``settle``): at the log
interval, before an eval, a checkpoint or a command, at the run's end, or
once the oldest is ``RECORDS_LAG_S`` old; they come to the host then, in one
copy.  Every launched step is logged, in order.

``--max-bad-steps`` still holds at once: the device counts skipped steps in a
row too, and once that count reaches the limit every later step is skipped
("frozen") until the loop has seen them and reset the count (a resume).  The
frozen steps never happened: their batches are drawn again (``settle`` puts
the sampler back) and they are not logged.

Data-parallel: the loss and norm are averaged across ranks on the device
before the flag is taken, so every rank takes the same decision.

fp16 (``GradScaler``): an overflowed gradient is the scaler's to skip, not a
bad step; the fused step skips on the guard's flag or the overflow, and
``scaler.update()`` lowers the scale, all on the device.  After every step,
skipped or not, the scaler is updated: its next ``unscale_`` needs that.

Where the step cannot skip itself on the device (a non-fused AdamW), the guard
reads the numbers before the step, as before: one host sync a step, same records.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ..records import BadStep, TrainStep

RECORDS_LAG_S = 1.0  # settle at least this often, so a slow step's record is not held back


def skips_on_device(optimizer: torch.optim.Optimizer, scaler: Any) -> bool:
    """Whether ``optimizer.step`` can skip itself from a device flag: torch's
    fused Adam/AdamW (``found_inf``), with fp16's scaler or without."""
    fused = all(g.get("fused") for g in optimizer.param_groups)
    return bool(fused and getattr(optimizer, "_step_supports_amp_scaling", False))


@dataclass
class Launched:
    """One optimizer step the loop launched and has not yet seen the numbers of."""

    stats: torch.Tensor | list[float]  # [loss, grad norm, skipped, frozen]: on the device until settled
    lr: float
    tokens: int  # tokens of the global batch
    dt: float  # host seconds to launch it
    elapsed_s: float
    sampler_state: Any  # the sampler before its batches were drawn
    at: float = 0.0  # time.perf_counter() when it was launched
    wall: float = 0.0  # time.time() when it was launched: its record's time, however late it is written


@dataclass
class Settled:
    """A launched step, its numbers read: ``skipped`` (a bad step) or applied."""

    loss: float
    grad_norm: float
    skipped: bool
    lr: float
    tokens: int
    dt: float  # seconds of the step, the time the host waited for the device included
    elapsed_s: float
    wall: float = 0.0  # when the step ran (time.time()); 0: when the record is made

    def record(self, step: int, consecutive: int, tokens: int) -> BadStep | TrainStep:
        """Its record: ``step`` steps trained (this one included when applied)."""
        when = {"time": self.wall} if self.wall > 0 else {}
        if self.skipped:
            return BadStep(step=step + 1, train_loss=self.loss, grad_norm=self.grad_norm, consecutive=consecutive,
                           **when)
        return TrainStep(step=step, train_loss=self.loss, lr=self.lr, grad_norm=self.grad_norm,
                         tokens_per_sec=self.tokens / self.dt if self.dt > 0 else 0.0, elapsed_s=self.elapsed_s,
                         tokens=tokens, **when)


class StepGuard:
    """Takes the optimizer step (or skips it) and keeps the steps in flight."""

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: Any, dist: Any, sampler: Any):
        """``sampler``: put back to where a dropped step drew its batches."""
        self.optimizer, self.scaler, self.dist, self.sampler = optimizer, scaler, dist, sampler
        self.on_device = skips_on_device(optimizer, scaler)
        self.pending: list[Launched] = []
        self._bad_run: torch.Tensor | None = None  # skipped steps in a row, on the device

    def reset(self) -> None:
        """The loop's count of bad steps in a row went back to zero (a resume)."""
        self._bad_run = None

    def step(self, loss: torch.Tensor, params: list[torch.Tensor], grad_clip: float,
             max_bad: int) -> torch.Tensor | list[float]:
        """Unscale and clip the gradients of ``params`` (``grad_clip`` 0: no
        clipping, the norm still measured), then take the optimizer step
        unless the loss or gradient norm is not finite.  Returns [loss, norm,
        skipped, frozen]: on the device when it decided there, else as read."""
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
        stats = torch.stack([loss.detach().float(), norm.detach().float()])
        if self.dist.enabled:  # the global mean: every rank decides on the same numbers
            stats = self.dist.mean_tensor(stats)
        if not self.on_device:
            return self._step_on_host(stats)
        finite = torch.isfinite(stats)
        overflow = ~finite[1] if self.scaler.is_enabled() else None  # fp16: the scaler's skip, not a bad step
        bad = ~finite[0] if overflow is not None else ~finite.all()
        if self._bad_run is None:
            self._bad_run = torch.zeros((), dtype=torch.int64, device=stats.device)
        frozen = self._bad_run >= max_bad
        skip = bad | frozen
        self._bad_run = torch.where(skip, self._bad_run + 1, 0)
        found_inf = skip if overflow is None else skip | overflow
        self.optimizer.found_inf = found_inf.float()  # type: ignore[attr-defined]  # read by fused Adam's step
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.found_inf  # type: ignore[attr-defined]
        self.scaler.update()  # fp16: the scale drops after an overflow (on the device); else nothing
        return torch.cat([stats, torch.stack([skip, frozen]).to(stats.dtype)])

    def _step_on_host(self, stats: torch.Tensor) -> list[float]:
        loss_v, norm_v = stats.tolist()
        bad = not math.isfinite(loss_v) or (not math.isfinite(norm_v) and not self.scaler.is_enabled())
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.update()  # fp16: unscale_ was called; without an update the next step's raises
        else:
            self.scaler.step(self.optimizer)  # fp16: skips the update itself on inf grads
            self.scaler.update()
        return [loss_v, norm_v, float(bad), 0.0]

    def launched(self, entry: Launched) -> None:
        self.pending.append(entry)

    def due(self, step: int, cfg: Any, checkpoint_due: bool, run: Any) -> bool:
        """Whether the loop settles now, having launched step ``step``: at its
        log interval, an eval, a checkpoint or its last step; when ``run``
        has a stop or its pause_at waiting; at every step where the numbers
        were read on the host anyway.  One process also settles when a
        command waits or the oldest step in flight has waited
        ``RECORDS_LAG_S`` (``lagging``).  Data-parallel, every rank must
        settle at the same steps (a frozen step's batches are drawn again, and
        the ranks' collectives must pair up), so only what all ranks agree on
        counts here; a command or a lagging rank settles every rank at the
        next step's command sync (``run.Run.between_steps``)."""
        if not self.pending:
            return False
        agreed = (not self.on_device or step >= cfg.steps or step % cfg.log_every == 0
                  or step % cfg.eval_every == 0 or checkpoint_due or run.stopping or 0 < run.pause_at <= step)
        return agreed or (not self.dist.enabled and (not run.commands.empty() or self.lagging()))

    def lagging(self) -> bool:
        """The oldest step in flight has waited ``RECORDS_LAG_S`` for the log."""
        return bool(self.pending) and time.perf_counter() - self.pending[0].at >= RECORDS_LAG_S

    def settle(self) -> tuple[list[Settled], int]:
        """The steps in flight, read in one copy: (the steps that happened, in
        order; how many were launched).  Fewer happened than were launched when
        steps past ``--max-bad-steps`` were dropped: their batches will be drawn again."""
        pending, self.pending = self.pending, []
        if not pending:
            return [], 0
        t = time.perf_counter()
        on_device = [p.stats for p in pending if isinstance(p.stats, torch.Tensor)]
        read = iter(torch.stack(on_device).tolist() if on_device else ())  # the one host sync
        rows = [p.stats if isinstance(p.stats, list) else next(read) for p in pending]
        waited = time.perf_counter() - t
        launch_s = sum(p.dt for p in pending)
        stretch = (launch_s + waited) / launch_s if launch_s > 0 else 1.0
        done: list[Settled] = []
        for p, (loss, norm, skipped, frozen) in zip(pending, rows):
            if frozen:
                self.sampler.load_state_dict(p.sampler_state)
                break
            done.append(Settled(loss=loss, grad_norm=norm, skipped=bool(skipped), lr=p.lr, tokens=p.tokens,
                                dt=p.dt * stretch, elapsed_s=p.elapsed_s, wall=p.wall))
        return done, len(pending)


HOST_SYNCS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.__float__,
              torch.Tensor.__int__, torch.Tensor.__bool__, torch.Tensor.__index__, torch.Tensor.__array__}


def host_only(t: torch.Tensor) -> torch.Tensor:
    """Mark ``t``, a CPU tensor that is never on a device (the data-parallel
    command all-reduce's, over gloo): reading it makes no host wait for a GPU,
    so ``HostSyncCounter`` does not count it."""
    t._host_only = True  # type: ignore[attr-defined]
    return t


class HostSyncCounter(TorchFunctionMode):
    """``with HostSyncCounter() as c:`` counts, in ``c.calls``, the calls on
    this thread that make the host wait for the device (``.item()``,
    ``.tolist()``, ``.cpu()``, ``.numpy()``, ``float()``, ``int()``,
    ``bool()``), on any tensor but those made ``host_only``: on a CPU-only
    machine, what a GPU would wait for."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in HOST_SYNCS and not (args and getattr(args[0], "_host_only", False)):
            self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))

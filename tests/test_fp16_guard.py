"""fp16's ``GradScaler`` under the NaN guard (train/guard.py).

A NaN loss with fp16 must be a bad step like any other: skipped, logged, and
the run goes on.  (Before, the guard skipped ``scaler.update()`` on a bad
step, so the next step's ``unscale_`` raised and the run failed.)  An
overflowed gradient (inf norm, finite loss) is the scaler's own skip: not a
bad step, the weights untouched, the scale halved.  With fused AdamW the
decision is on the device, as without fp16: no host sync.
"""
from __future__ import annotations

import math

import pytest
import torch

from tui_trainer.config import make_config
from tui_trainer.records import BadStep, Paused, TrainStep
from tui_trainer.train import engine
from tui_trainer.train.engine import Trainer
from tui_trainer.train.guard import HostSyncCounter, StepGuard


class _Dist:
    enabled = False


class _Sampler:
    def load_state_dict(self, s):
        pass


def _setup(fused: bool, init_scale: float = 2.0 ** 10):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=fused, foreach=None if fused else False)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    return model, opt, scaler, StepGuard(opt, scaler, _Dist(), _Sampler())


def _step(guard, model, opt, scaler, poison: float = 1.0):
    opt.zero_grad(set_to_none=True)
    loss = model(torch.ones(3, 4)).pow(2).mean() * poison
    scaler.scale(loss).backward()
    return [float(v) for v in torch.as_tensor(guard.step(loss.detach(), list(model.parameters()), 1.0, 5))]


@pytest.mark.parametrize("fused", [True, False], ids=["fused (on the device)", "for-loop (on the host)"])
def test_a_nan_loss_under_fp16_is_a_skipped_step_and_training_goes_on(fused):
    model, opt, scaler, guard = _setup(fused)
    assert guard.on_device == fused
    assert _step(guard, model, opt, scaler)[2] == 0.0
    before = [p.detach().clone() for p in model.parameters()]
    stats = _step(guard, model, opt, scaler, math.nan)
    assert stats[2] == 1.0  # skipped: a bad step
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert scaler.get_scale() == 2.0 ** 9  # the scaler saw the non-finite gradient
    for _ in range(3):  # and the steps after it train (before the fix: unscale_() has already been called)
        assert _step(guard, model, opt, scaler)[2] == 0.0
    assert not all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


@pytest.mark.parametrize("fused", [True, False], ids=["fused (on the device)", "for-loop (on the host)"])
def test_an_fp16_overflow_is_the_scalers_skip_not_a_bad_step(fused):
    model, opt, scaler, guard = _setup(fused, init_scale=2.0 ** 127)  # loss x scale overflows fp32
    before = [p.detach().clone() for p in model.parameters()]
    loss, norm, skipped, frozen = _step(guard, model, opt, scaler, 1e3)
    assert math.isfinite(loss) and not math.isfinite(norm)
    assert (skipped, frozen) == (0.0, 0.0)  # not a bad step: never counts towards --max-bad-steps
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))  # but not applied either
    assert scaler.get_scale() == 2.0 ** 126


def test_the_fp16_device_guard_reads_nothing_back():
    model, opt, scaler, guard = _setup(True)
    _step(guard, model, opt, scaler)  # the scaler's lazy state made
    opt.zero_grad(set_to_none=True)
    loss = model(torch.ones(3, 4)).pow(2).mean() * math.nan
    scaler.scale(loss).backward()
    with HostSyncCounter() as c:
        guard.step(loss.detach(), list(model.parameters()), 1.0, 5)
    assert c.calls == []


def test_a_pause_mid_streak_keeps_the_count_of_bad_steps_in_a_row(monkeypatch):
    """Bad steps from step 4, --max-bad-steps 3, the run paused after two of
    them and resumed: it diverges at the third bad step, not three more
    after the resume (only a resume of a diverged run starts the count again)."""
    from tui_trainer.control.commands import Command
    from tui_trainer.run.run import Run

    cfg = make_config({"n_layer": 1, "n_head": 2, "n_embd": 32, "context_length": 16, "batch_size": 4,
                       "eval_batches": 1, "sample_tokens": 4, "threads": 1, "steps": 30, "eval_every": 1000,
                       "checkpoint_every": 1000, "log_every": 1, "max_bad_steps": 3})
    run = Run.unlocked()
    seen: list = []

    class Steer:
        def emit(self, r):
            seen.append(r)
            if isinstance(r, BadStep) and r.consecutive == 2 and not any(isinstance(x, Paused) for x in seen):
                run.send(Command.PAUSE)
            if isinstance(r, Paused) and r.reason != "diverged":
                run.send(Command.RESUME)
            if isinstance(r, Paused) and r.reason == "diverged":
                run.send(Command.STOP)

    run.add_sink(Steer())
    t = Trainer(cfg, run)
    real = engine.calc_loss_batch
    monkeypatch.setattr(engine, "calc_loss_batch", lambda *a, **k: real(*a, **k) * (math.nan if t.step >= 3 else 1))
    end = t.run()
    bad = [r.consecutive for r in seen if isinstance(r, BadStep)]
    assert bad == [1, 2, 3], bad
    assert end.status == "diverged" and end.step == 3
    assert [r.step for r in seen if isinstance(r, TrainStep)] == [1, 2, 3]

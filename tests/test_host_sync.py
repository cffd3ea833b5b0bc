"""No host sync inside a step between log intervals (issue 22, item 3): the
NaN guard decides on the device (train/guard.py), and the loss and grad norm
reach the host in one copy per log interval.

A host sync is counted as a call, on any tensor, of what makes the host wait
for the device: ``.item()``, ``.tolist()``, ``.cpu()``, ``.numpy()``,
``float()``, ``int()``, ``bool()`` (``guard.HostSyncCounter``, a
TorchFunctionMode, sees each one).  On a CPU-only machine the count is what a
GPU would wait for.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tui_trainer.config import make_config
from tui_trainer.records import BadStep, TrainStep
from tui_trainer.train import engine
from tui_trainer.train.engine import Trainer
from tui_trainer.train.guard import HostSyncCounter as CountSyncs, Launched, StepGuard

from synccount import run_counting_syncs


class Records:
    def __init__(self):
        self.records = []

    def emit(self, r):
        self.records.append(r)


def test_counter_sees_every_kind_of_sync():
    t = torch.ones(())
    with CountSyncs() as c:
        t.item(), t.tolist(), t.cpu(), float(t), int(t), bool(t), t.numpy()
    assert sorted(c.calls) == sorted(["item", "tolist", "cpu", "__float__", "__int__", "__bool__", "numpy"])


def test_no_host_sync_inside_a_step_between_log_intervals(tmp_path, monkeypatch):
    """The default config (the demo's model and cadence, fitted to 60 steps:
    log every 3, eval every 12): the steps between log intervals sync nothing;
    every step is still logged, in order, with finite numbers."""
    monkeypatch.setattr("tui_trainer.train.guard.RECORDS_LAG_S", math.inf)  # a loaded machine: no lag settle
    cfg = make_config({"steps": 60, "threads": 1, "out": str(tmp_path / "run")})
    assert cfg.log_every > 1 and cfg.fused_adamw  # the default: several steps a log interval
    sink = Records()
    # (step launched, syncs during it); (step trained, sync) in the rest of the loop
    end, per_step, between = run_counting_syncs(Trainer(cfg, None, [sink]))
    assert end.status == "finished" and end.step == 60
    boundary = {s for s in range(1, 61) if s % cfg.log_every == 0 or s % cfg.eval_every == 0}
    inside = [(s, n) for s, n in per_step if s not in boundary]
    assert len(inside) >= 30
    assert all(n == 0 for _, n in inside), f"host syncs inside steps between log intervals: {inside}"
    # nor anywhere else in the loop (its safe point, the resources sampled), but at the start, an eval
    assert not [(s, c) for s, c in between if s not in boundary | {0}], between
    # one copy per log interval, not one per step
    assert all(n <= 1 for s, n in per_step), per_step
    train = [r for r in sink.records if isinstance(r, TrainStep)]
    assert [r.step for r in train] == list(range(1, 61))
    assert all(math.isfinite(r.train_loss) and math.isfinite(r.grad_norm) and r.tokens_per_sec > 0 for r in train)
    assert [r.tokens for r in train] == [cfg.batch_size * cfg.context_length * i for i in range(1, 61)]


# --- the guard on its own: a skipped step changes nothing, bit for bit -------------

def _params_and_opt(kind: str):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    flags = {"fused": dict(fused=True), "foreach": dict(foreach=True), "for-loop": dict(foreach=False)}[kind]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, **flags)
    return model, opt


def _snapshot(model, opt):
    state = {k: {n: v.clone() if isinstance(v, torch.Tensor) else v for n, v in s.items()}
             for k, s in opt.state_dict()["state"].items()}
    return [p.detach().clone() for p in model.parameters()], state


def _same(a, b) -> bool:
    """Bit for bit.  A state AdamW has not made yet equals the zeros (step 0)
    it makes at its first step: a skipped first step makes them, as a
    GradScaler-skipped one does, and the next step starts from them alike."""
    (pa, sa), (pb, sb) = a, b

    def fresh(s):
        return all(not torch.any(v) for v in s.values())

    return (all(torch.equal(x, y) for x, y in zip(pa, pb))
            and all(fresh(s[k]) for s, o in ((sa, sb), (sb, sa)) for k in s.keys() - o.keys())
            and all(torch.equal(sa[k][n], sb[k][n]) for k in sa.keys() & sb.keys() for n in sa[k]))


class _Dist:
    enabled = False


class _Sampler:
    def __init__(self):
        self.at = 0

    def state_dict(self):
        return {"at": self.at}

    def load_state_dict(self, s):
        self.at = s["at"]


def _guard_step(guard, model, loss_scale: float, max_bad: int = 5):
    x = torch.ones(2, 4)
    loss = model(x).pow(2).mean() * loss_scale
    loss.backward()
    return guard.step(loss.detach(), list(model.parameters()), 1.0, max_bad)


@pytest.mark.parametrize("kind", ["fused", "foreach", "for-loop"])
@pytest.mark.parametrize("poison", [math.nan, math.inf])
def test_a_skipped_step_leaves_weights_and_adamw_state_bitwise(kind, poison):
    model, opt = _params_and_opt(kind)
    guard = StepGuard(opt, torch.amp.GradScaler("cpu", enabled=False), _Dist(), _Sampler())
    assert guard.on_device == (kind == "fused")
    for _ in range(3):  # a few good steps first: exp_avg, exp_avg_sq and step are set
        opt.zero_grad(set_to_none=True)
        assert torch.as_tensor(_guard_step(guard, model, 1.0))[2] == 0.0
    before = _snapshot(model, opt)
    opt.zero_grad(set_to_none=True)
    assert torch.as_tensor(_guard_step(guard, model, poison))[2] == 1.0  # skipped
    assert _same(_snapshot(model, opt), before)
    assert all(float(s["step"]) == 3.0 for s in opt.state.values())
    opt.zero_grad(set_to_none=True)
    _guard_step(guard, model, 1.0)  # and the next good step is taken
    assert all(float(s["step"]) == 4.0 for s in opt.state.values())
    assert not _same(_snapshot(model, opt), before)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad=st.lists(st.booleans(), min_size=1, max_size=14), max_bad=st.integers(1, 4),
       settle_every=st.integers(1, 6))
def test_device_guard_matches_the_host_guard(bad, max_bad, settle_every):
    """Any run of good and bad steps, settled at any cadence, ends with the
    weights and AdamW state the old host-side guard gives, and the same
    skipped/applied sequence, stopping at ``max_bad`` in a row."""
    ref_model, ref_opt = _params_and_opt("fused")
    ref_steps, in_row = [], 0
    for b in bad:  # the host guard: read, then step or not; stop at max_bad in a row
        ref_opt.zero_grad(set_to_none=True)
        loss = ref_model(torch.ones(2, 4)).pow(2).mean() * (math.nan if b else 1.0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(ref_model.parameters()), 1.0)
        if b:
            in_row += 1
        else:
            in_row = 0
            ref_opt.step()
        ref_steps.append(b)
        if in_row >= max_bad:
            break

    model, opt = _params_and_opt("fused")
    sampler = _Sampler()
    guard = StepGuard(opt, torch.amp.GradScaler("cpu", enabled=False), _Dist(), sampler)
    seen, in_row, launched = [], 0, 0
    i = 0
    while i < len(bad) and in_row < max_bad:
        opt.zero_grad(set_to_none=True)
        stats = _guard_step(guard, model, math.nan if bad[i] else 1.0, max_bad)
        guard.launched(Launched(stats, 0.1, 8, 0.001, 0.0, sampler.state_dict(), 0.0))
        sampler.at += 1
        i += 1
        launched += 1
        if launched % settle_every == 0 or i == len(bad):
            done, n = guard.settle()
            for d in done:
                in_row = in_row + 1 if d.skipped else 0
                seen.append(d.skipped)
            i -= n - len(done)  # dropped steps are drawn again
            assert sampler.at == i
    assert seen == ref_steps
    assert _same(_snapshot(model, opt), _snapshot(ref_model, ref_opt))


def test_nan_inside_a_log_interval_stops_at_max_bad_steps_with_the_weights_untouched(tmp_path, monkeypatch):
    """Log every 10: the NaN steps launched past --max-bad-steps before the loop
    saw them are dropped (not logged, their batches drawn again), the weights
    are those of the last good step, and the run is diverged there."""
    def config(log_every):
        return make_config({"n_layer": 1, "n_head": 2, "n_embd": 32, "context_length": 16, "batch_size": 4,
                            "eval_batches": 1, "sample_tokens": 4, "threads": 1, "steps": 40, "eval_every": 20,
                            "log_every": log_every, "max_bad_steps": 3})

    monkeypatch.setattr("tui_trainer.train.guard.RECORDS_LAG_S", math.inf)
    weights = {}

    class At12:  # a run with no NaN, settled every step: its weights after step 12
        def emit(self, r):
            if isinstance(r, TrainStep) and r.step == 12:
                weights.update({k: v.clone() for k, v in clean.model.state_dict().items()})
                clean.request_stop()

    clean = Trainer(config(1), None, [At12()])
    clean.run()
    assert weights
    sink = Records()
    t = Trainer(config(10), None, [sink])
    real = engine.calc_loss_batch
    monkeypatch.setattr(engine, "calc_loss_batch", lambda *a, **k: real(*a, **k) * (math.nan if t.step >= 12 else 1))
    end = t.run()
    assert (end.status, end.step) == ("diverged", 12)
    bad = [r for r in sink.records if isinstance(r, BadStep)]
    assert [(b.step, b.consecutive) for b in bad] == [(13, 1), (13, 2), (13, 3)]
    assert [r.step for r in sink.records if isinstance(r, TrainStep)] == list(range(1, 13))
    assert all(torch.equal(v, weights[k]) for k, v in t.model.state_dict().items())
    assert t.tokens == 12 * 4 * 16


def test_a_pause_that_lands_inside_a_log_interval_comes_after_the_steps_before_it(tmp_path, monkeypatch):
    """A pause asked for just after the loop looked for commands (the steps
    since the last log interval still on the device): the pause is written
    after every step it follows, at the step trained, never before them."""
    from tui_trainer.control.commands import Command
    from tui_trainer.records import Paused, Resumed
    from tui_trainer.run.run import Run

    monkeypatch.setattr("tui_trainer.train.guard.RECORDS_LAG_S", math.inf)
    cfg = make_config({"steps": 12, "threads": 1, "log_every": 10, "eval_every": 1000, "checkpoint_every": 1000})
    run = Run.unlocked()
    seen = Records()

    class ResumeAtOnce(Records):
        def emit(self, r):
            seen.emit(r)
            if isinstance(r, Paused):
                run.send(Command.RESUME)

    run.add_sink(ResumeAtOnce())
    t = Trainer(cfg, run)
    real_due = t.guard.due

    def due(step, *args):
        if step == 5:  # the request lands right after the loop looked
            run.send(Command.PAUSE)
            return False
        return real_due(step, *args)

    monkeypatch.setattr(t.guard, "due", due)
    assert t.run().status == "finished"
    kinds = [(type(r).__name__, r.step) for r in seen.records if isinstance(r, (TrainStep, Paused, Resumed))]
    at = kinds.index(("Paused", 5))
    assert kinds[:at] == [("TrainStep", s) for s in range(1, 6)], kinds
    assert [s for k, s in kinds if k == "TrainStep"] == list(range(1, 13))


def test_each_step_record_says_when_its_step_ran(tmp_path, monkeypatch):
    """Records written together at a log interval keep their own steps'
    times (``time``), not the moment they were written: a reader timing
    steps from ``time`` sees them one by one, in order."""
    monkeypatch.setattr("tui_trainer.train.guard.RECORDS_LAG_S", math.inf)
    cfg = make_config({"steps": 20, "threads": 1, "log_every": 10, "eval_every": 1000, "checkpoint_every": 1000})
    sink = Records()
    import time as real
    from types import SimpleNamespace

    ran: list[float] = []  # the engine's clock, read once as each step is launched

    def tick() -> float:
        ran.append(1_000_000.0 + len(ran))
        return ran[-1]

    monkeypatch.setattr(engine, "time", SimpleNamespace(time=tick, perf_counter=real.perf_counter,
                                                        monotonic=real.monotonic, sleep=real.sleep))
    Trainer(cfg, None, [sink]).run()
    times = [r.time for r in sink.records if isinstance(r, TrainStep)]
    assert len(times) == 20 and times == ran[-20:], (times, ran)  # not the moment they were written


def test_a_resources_record_never_runs_ahead_of_the_steps_it_follows(monkeypatch):
    """Resources are sampled when the steps in flight have reached the log:
    a ``resources`` record at step k comes after the ``train`` record of step k."""
    from tui_trainer.records import Resources

    monkeypatch.setattr("tui_trainer.train.guard.RECORDS_LAG_S", math.inf)
    monkeypatch.setattr("tui_trainer.run.resources.EVERY_S", 0.0)  # due after every step
    cfg = make_config({"steps": 20, "threads": 1, "log_every": 5, "eval_every": 1000, "checkpoint_every": 1000})
    sink = Records()
    Trainer(cfg, None, [sink]).run()
    logged, ahead, seen = 0, [], 0
    for r in sink.records:
        if isinstance(r, TrainStep):
            logged = r.step
        elif isinstance(r, Resources):
            seen += 1
            if r.step > logged:
                ahead.append((r.step, logged))
    assert seen >= 4 and not ahead, (seen, ahead)

"""A change of the total steps keeps the learning rate continuous (issue 23,
item 1): a resume with ``--steps`` doubled and a live ``steps=`` refit the
cosine from the LR reached (``schedule.py``), ``--schedule restart`` jumps and
says so, and resume stays bit-for-bit exact."""
from __future__ import annotations

import contextlib
import io
import math
import shutil
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tui_trainer.run import checkpoint as ckpt
from tui_trainer import cli
from tui_trainer.run.checkpoint_schema import SchemaError, check_trainer_state
from tui_trainer.control.commands import Command, Order
from tui_trainer.config import make_config
from tui_trainer.train.engine import Trainer
from tui_trainer.logs import ReadCounts, effective_records, read_records
from tui_trainer.train.optim import cosine_with_warmup
from tui_trainer.records import LrJump, TrainStep, from_dict
from tui_trainer.run.resume import how_to_go_on, plan_resume
from tui_trainer.run.run import Run
from tui_trainer.run.log_writer import LOG_NAME
from tui_trainer.train.schedule import JUMP, LRSchedule
from tui_trainer.ui.viewer import FileSource, viewer_app
from uitools import until

TINY = dict(n_layer=1, n_head=2, n_embd=16, context_length=8, batch_size=2, eval_batches=1, sample_tokens=4,
            threads=1, dropout=0.1)  # dropout: the torch RNG must round-trip too
STEPS, STOP, LONGER = 60, 25, 120  # a 60-step run, stopped at 25 (a step there changes the LR by 3%), trained on to 120


class Watch:
    """A sink that keeps every record; at a step it asks for a stop or puts
    orders on the run's queue from the training thread (they apply there: the
    sessions log every step, so each train record is emitted as its step ends)."""

    def __init__(self, run: Run, plan: dict[int, list]):
        self.run, self.plan, self.seen = run, plan, []

    def emit(self, r):
        self.seen.append(r)
        if isinstance(r, TrainStep):
            for order in self.plan.pop(r.step, []):
                if order == "stop":
                    self.run.request_stop()
                else:
                    self.run.commands.put(order)


def session(out, plan=None, *, resume: dict | None = None, **cfg):
    """One session of a run in ``out``, as ``train --headless`` runs it: a new
    run with ``cfg``, or a resume of ``out`` with the flags ``resume``."""
    if resume is not None:
        p = plan_resume(out, resume)
        c = p.cfg
    else:
        p = None
        c = make_config({**TINY, "steps": STEPS, "eval_every": 20, "log_every": 1, "out": str(out), **cfg})
        out.mkdir()
    run = Run(out, checkpoint_every=c.ckpt_every, keep=c.keep).open(control=False, signals=False)
    watch = Watch(run, dict(plan or {}))
    run.add_sink(watch)
    try:
        end = Trainer(c, run, resume=p).run()
    finally:
        run.close()
    return end, watch.seen


def logged(run_dir, field):
    stats = ReadCounts()
    recs = effective_records(read_records(run_dir / LOG_NAME, stats))
    assert stats.bad == 0
    return {r["step"]: r[field] for r in recs if r["type"] == "train"}


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A 60-step run stopped at step 25, on its way down the cosine."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    n = torch.get_num_threads()
    try:
        end, _ = session(out, {STOP: ["stop"]})
    finally:
        torch.set_num_threads(n)
    assert (end.status, end.step) == ("stopped", STOP)
    return out


@pytest.fixture(scope="module")
def longer(stopped, tmp_path_factory):
    """That run resumed with --steps doubled, to the end, as the CLI does it."""
    out = tmp_path_factory.mktemp("longer") / "run"
    shutil.copytree(stopped, out)
    n = torch.get_num_threads()
    try:
        assert cli.main(["train", "--headless", "--resume", str(out), "--steps", str(LONGER)]) == 0
    finally:
        torch.set_num_threads(n)
    return out


def jump_at(lrs: dict[int, float], step: int) -> float:
    """The change of the LR from the record at ``step`` to the next, relative to the first."""
    return abs(lrs[step + 1] - lrs[step]) / lrs[step]


def test_doubling_steps_on_resume_keeps_the_lr_continuous(longer, capsys):
    lrs = logged(longer, "lr")
    assert sorted(lrs) == list(range(1, LONGER + 1))
    assert jump_at(lrs, STOP) <= JUMP
    # still going down, at the pace it had: no step after the resume moves it more than one before it
    before = max(jump_at(lrs, s) for s in range(STOP - 5, STOP))
    assert lrs[STOP + 1] <= lrs[STOP] and max(jump_at(lrs, s) for s in range(STOP, LONGER)) <= max(before, JUMP)
    recs = read_records(longer / LOG_NAME)
    assert not [r for r in recs if r["type"] == "lr_jump"]
    cfg = make_config({**TINY, "steps": LONGER})
    assert lrs[LONGER] == pytest.approx(cfg.lr_floor, rel=0.01)  # it ends at min_lr at the new end
    state = ckpt.load_checkpoint(longer / ckpt.LATEST)
    assert state["schedule"]["start"] == STOP and 0 < state["schedule"]["progress"] < 1


def test_train_longer_after_the_end_goes_on_at_min_lr(tmp_path, capsys):
    """The issue's case: a finished run resumed with the printed `train longer:`
    command (--steps doubled) goes on at the LR it ended with, min_lr."""
    out = tmp_path / "run"
    end, _ = session(out)
    assert (end.status, end.step) == ("finished", STEPS)
    [hint] = how_to_go_on(end, out)
    assert hint.startswith("train longer: ") and hint.endswith(f"--steps {2 * STEPS}")
    assert cli.main(["train", "--headless", "--resume", str(out), "--steps", str(2 * STEPS)]) == 0
    assert "lr jumps" not in capsys.readouterr().out
    lrs = logged(out, "lr")
    floor = make_config({**TINY, "steps": STEPS}).lr_floor
    assert jump_at(lrs, STEPS) <= JUMP and all(lrs[s] == floor for s in range(STEPS + 1, 2 * STEPS + 1))


@pytest.fixture(scope="module")
def restarted(stopped, tmp_path_factory):
    """The stopped run resumed with --steps doubled and --schedule restart; what the console printed."""
    out = tmp_path_factory.mktemp("restarted") / "run"
    shutil.copytree(stopped, out)
    n, printed = torch.get_num_threads(), io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            assert cli.main(["train", "--headless", "--resume", str(out), "--steps", str(LONGER),
                             "--schedule", "restart"]) == 0
    finally:
        torch.set_num_threads(n)
    return out, printed.getvalue()


def test_restart_is_a_choice_and_its_jump_is_said(restarted):
    out, printed = restarted
    lrs = logged(out, "lr")
    assert jump_at(lrs, STOP) > JUMP
    c = make_config({**TINY, "steps": STEPS})  # the run's settings (its warmup fits 60 steps)
    assert lrs[STOP + 1] == cosine_with_warmup(STOP, c.warmup_steps, LONGER, c.max_lr, c.lr_floor)  # as before
    notes = [line for line in printed.splitlines() if line.startswith("note: lr jumps")]
    assert len(notes) == 1 and f"at step {STOP}" in notes[0] and "--schedule restart" in notes[0], printed
    [rec] = [r for r in read_records(out / LOG_NAME) if r["type"] == "lr_jump"]
    assert rec["cause"] == "resume" and rec["before"] == pytest.approx(lrs[STOP], rel=0.2)
    assert rec["after"] == lrs[STOP + 1]


async def test_the_dashboard_shows_the_jump_as_a_toast(restarted):
    out, _ = restarted
    [rec] = [r for r in read_records(out / LOG_NAME) if r["type"] == "lr_jump"]
    src = FileSource([out])
    src.prepare()
    app = viewer_app(src)
    async with app.run_test(size=(100, 30)) as pilot:
        app._answer(from_dict(rec))  # what a live or attached dashboard does with each record
        await until(pilot, lambda: app._notifications, "the toast")
        assert any("lr jumps from" in str(n.message) and f"at step {STOP}" in str(n.message)
                   for n in app._notifications)
        await pilot.press("q")
    src.close()


def test_a_refitted_run_resumed_again_is_exact(stopped, longer, tmp_path):
    """Resumed with --steps 120, stopped at 90 and resumed again: every loss,
    every LR and the final weights are those of the resumed run left alone."""
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    end, _ = session(out, {90: ["stop"]}, resume={"steps": LONGER})
    assert (end.status, end.step) == ("stopped", 90)
    end, _ = session(out, resume={})
    assert (end.status, end.step) == ("finished", LONGER)
    assert logged(out, "train_loss") == logged(longer, "train_loss")
    assert logged(out, "lr") == logged(longer, "lr")
    a = ckpt.load_checkpoint(out / ckpt.LATEST)
    b = ckpt.load_checkpoint(longer / ckpt.LATEST)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["schedule"] == b["schedule"]


def set_steps(v):
    return Order(Command.SET, {"key": "steps", "value": v}, "api")


def test_a_live_steps_change_is_continuous_and_is_the_resume(longer, tmp_path):
    """steps=120 at step 25 of a live run: the LR goes on as smoothly as the
    resume's, and the run computes exactly what the resumed one did."""
    end, seen = session(tmp_path / "live", {STOP: [set_steps(LONGER)]})
    assert (end.status, end.step) == ("finished", LONGER)
    assert not [r for r in seen if isinstance(r, LrJump)]
    lrs = {r.step: r.lr for r in seen if isinstance(r, TrainStep)}
    assert jump_at(lrs, STOP) <= JUMP
    assert lrs == logged(longer, "lr")
    assert {r.step: r.train_loss for r in seen if isinstance(r, TrainStep)} == logged(longer, "train_loss")


def test_a_live_steps_change_with_restart_jumps_and_says_so(tmp_path):
    end, seen = session(tmp_path / "live", {STOP: [set_steps(LONGER)], STOP + 2: ["stop"]}, schedule="restart")
    lrs = {r.step: r.lr for r in seen if isinstance(r, TrainStep)}
    assert jump_at(lrs, STOP) > JUMP
    [j] = [r for r in seen if isinstance(r, LrJump)]
    assert (j.step, j.cause, j.after) == (STOP, "steps", lrs[STOP + 1])
    assert "schedule restart" in j.message and f"steps {STEPS} -> {LONGER}" in j.message


def test_a_live_lr_scale_change_is_named_too(tmp_path):
    end, seen = session(tmp_path / "live", {10: [Order(Command.SET, {"key": "lr_scale", "value": 0.5}, "api")],
                                            12: [Order(Command.SET, {"key": "lr_scale", "value": 0.51}, "api")],
                                            14: ["stop"]},
                        steps=30, eval_every=1000)
    jumps = [r for r in seen if isinstance(r, LrJump)]
    assert [(j.step, j.cause) for j in jumps] == [(10, "lr_scale")]  # 0.5 -> 0.51 is 2%: not a jump
    assert jumps[0].after == pytest.approx(0.5 * jumps[0].before)


CFG = make_config({**TINY, "steps": 100, "warmup_steps": 10, "max_lr": 1e-2, "min_lr": 1e-3})


@settings(max_examples=60, deadline=None)
@given(warmup=st.integers(0, 50), steps=st.integers(1, 400), at=st.integers(0, 500), new=st.integers(1, 800),
       top=st.floats(1e-5, 10), floor=st.floats(0, 1))
def test_the_refit_is_continuous_and_ends_at_min_lr(warmup, steps, at, new, top, floor):
    steps, new = max(steps, warmup), max(new, warmup, at + 1)
    cfg = replace(CFG, warmup_steps=warmup, steps=steps, max_lr=top, min_lr=floor * top)
    s = LRSchedule()
    before = s.lr(at, cfg)
    s.refit(at, cfg, steps, new, "continue")
    cfg.steps = new
    assert math.isclose(s.lr(at, cfg), before, rel_tol=1e-9)  # continuous
    assert s.lr(new, cfg) == cfg.lr_floor  # at the new end: min_lr
    if at < warmup:  # the warmup is never repeated: the plain schedule over the new total
        assert s.state_dict() is None
    else:
        run = [s.lr(t, cfg) for t in range(at, new + 1)]
        assert all(b <= a * (1 + 1e-12) for a, b in zip(run, run[1:]))  # only ever down
        again = LRSchedule()
        again.load_state_dict(s.state_dict())
        assert [again.lr(t, cfg) for t in range(at, new + 1)] == run


def test_a_crafted_refit_point_is_refused(longer):
    state = ckpt.load_checkpoint(longer / ckpt.LATEST)
    check_trainer_state(state)
    for bad, field in (({"start": 10**6, "progress": 0.5}, "schedule.start"),
                       ({"start": 5, "progress": 2.0}, "schedule.progress"),
                       ({"start": 5, "progress": math.nan}, "schedule.progress"),
                       ({"start": 5}, "schedule.progress"), ([5, 0.5], "schedule")):
        with pytest.raises(SchemaError) as e:
            check_trainer_state({**state, "schedule": bad})
        assert e.value.field == field

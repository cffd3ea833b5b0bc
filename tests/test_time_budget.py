"""``--time``: the first steps' pace fixes ``steps`` (a change with source
``time``), the schedule refits, and a resume keeps the fixed steps, exactly
(issue 23).  No assertion on the clock beyond what the log itself says."""
from __future__ import annotations

import queue

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tui_trainer import cli
from tui_trainer.control.commands import Command, Order
from tui_trainer.config import make_config
from tui_trainer.errors import UserError
from tui_trainer.logs import effective_records, read_records
from tui_trainer.records import Change, Paused, Resumed, RunStart, TrainStep
from tui_trainer.train.engine import Trainer
from tui_trainer.run.run import Run
from tui_trainer.run.log_writer import LOG_NAME
from tui_trainer.run.time_budget import TimeBudget, parse_duration

from test_lr_continuity import TINY, session


def _start(total=1000, **kw):
    return RunStart(step=0, run_name="r", config={}, n_params=1, device="cpu", total_steps=total, **kw)


def _train(step, elapsed):
    return TrainStep(step=step, train_loss=1.0, lr=1e-3, tokens_per_sec=1.0, grad_norm=1.0, elapsed_s=elapsed)


def _orders(q):
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


@settings(max_examples=40, deadline=None)
@given(st.floats(0.001, 5.0), st.floats(50.0, 20000.0))
def test_steps_fixed_from_the_pace_fit_the_budget(per_step, steps_in_budget):
    budget = per_step * steps_in_budget  # a run of at least 50 steps
    q = queue.Queue()
    tb = TimeBudget(budget, q, clock=lambda: 0.0)
    tb.emit(_start(total=10**9))
    step = 0
    while not _orders(q) and step < 10**6:
        step += 1
        tb.emit(_train(step, (step + 3) * per_step))  # a slow first step (a compile): not the pace
    fixed = tb.fixed
    assert fixed is not None and fixed > step
    # the end the fixed steps give lands within 10% of the budget (or the budget was spent already)
    end = (fixed + 3) * per_step
    assert abs(end - budget) <= 0.1 * budget


def test_the_order_is_a_steps_change_from_time():
    q = queue.Queue()
    tb = TimeBudget(10.0, q, floor=3, clock=lambda: 0.0)
    tb.emit(_start())
    for s in range(1, 30):
        tb.emit(_train(s, s * 0.1))
    (order,) = _orders(q)
    assert isinstance(order, Order) and order.source == "time" and order.args["key"] == "steps"
    assert 97 <= order.args["value"] <= 100  # 10 s at 0.1 s a step, less the longest wait between two


def test_time_paused_is_not_training_time():
    now = [0.0]
    q = queue.Queue()
    tb = TimeBudget(10.0, q, clock=lambda: now[0])
    tb.emit(_start())
    tb.emit(_train(1, 0.1))
    tb.emit(_train(2, 0.2))
    tb.emit(Paused(step=2, reason="user"))
    now[0] = 100.0
    tb.emit(Resumed(step=2))
    for s in range(3, 20):
        tb.emit(_train(s, 100.0 + s * 0.1))
    (order,) = _orders(q)
    assert 97 <= order.args["value"] <= 100  # not 3 steps short for the 100 s paused


def test_a_persons_steps_change_wins_and_a_resume_keeps_fixed_steps():
    q = queue.Queue()
    tb = TimeBudget(10.0, q, clock=lambda: 0.0)
    tb.emit(_start())
    tb.emit(Change(step=1, key="steps", old=1000, new=500, source="keys"))
    for s in range(1, 50):
        tb.emit(_train(s, s * 0.1))
    assert not _orders(q)
    tb = TimeBudget(10.0, q, clock=lambda: 0.0)
    tb.emit(_start(resumed=True, live={"steps": 80}))
    for s in range(1, 50):
        tb.emit(_train(s, s * 0.1))
    assert not _orders(q)
    tb = TimeBudget(10.0, q, clock=lambda: 0.0)  # a resume given another --time measures again
    tb.emit(_start(resumed=True, live={"steps": 80}, changes={"time_budget": [10.0, 20.0]}))
    for s in range(1, 50):
        tb.emit(_train(s, s * 0.1))
    assert _orders(q)


@pytest.mark.parametrize("text, seconds", [("60s", 60), ("10m", 600), ("1h", 3600), ("1.5h", 5400),
                                           ("90", 90), ("1h30m", 5400), ("2d", 172800)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "10x", "m", "1 0m", "-5s", "1h30", "1e3s"])
def test_bad_durations_are_one_line(bad, capsys):
    with pytest.raises(ValueError):
        parse_duration(bad)
    assert cli.main(["train", "--headless", "--time", bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --time") and len(err.strip().splitlines()) == 1


def test_toml_takes_a_duration_and_the_range_is_checked():
    assert make_config({"time_budget": "10m"}).time_budget == 600.0
    with pytest.raises(UserError, match="time-budget"):
        make_config({"time_budget": 0})
    assert cli.main(["train", "--headless", "--time", "-5"]) == 2  # a number: the range names the bound


BUDGET = 1.5


class StopAfterFix:
    """Stop the run the step after the budget's change."""

    def __init__(self, run):
        self.run, self.fixed_at = run, None

    def emit(self, r):
        if isinstance(r, Change) and r.source == "time" and self.fixed_at is None:
            self.fixed_at = r.step
        if isinstance(r, TrainStep) and self.fixed_at is not None and r.step == self.fixed_at + 1:
            self.run.request_stop()


def test_a_budget_fixes_steps_and_a_resume_keeps_them_exactly(tmp_path):
    a = tmp_path / "a"
    cfg = dict(steps=100000, eval_every=100000, time_budget=BUDGET)
    end, seen = session(a, **cfg)  # to the end: the budget decides where
    recs = effective_records(read_records(a / LOG_NAME))
    changes = [r for r in recs if r["type"] == "change" and r["source"] == "time"]
    assert changes and changes[0]["key"] == "steps" and changes[0]["old"] == 100000
    assert end.status == "finished" and end.step == changes[-1]["new"]
    # the pace the log itself shows, times the fixed steps, is within 10% of the budget
    train = [r for r in recs if r["type"] == "train"]
    first = changes[0]["step"]
    per_step = (train[first - 1]["elapsed_s"] - train[0]["elapsed_s"]) / (first - 1)
    assert abs(changes[0]["new"] * per_step - BUDGET) <= 0.1 * BUDGET

    # Stopped after the fix and resumed: the same steps, the same numbers as one session that got the
    # same change at the same step from someone else.
    b = tmp_path / "b"
    b.mkdir()
    c = make_config({**TINY, "eval_every": 20, "out": str(b), **cfg, "steps": 100000, "time_budget": 2.0})
    run = Run(b, checkpoint_every=c.ckpt_every, keep=c.keep).open(control=False, signals=False)
    stopper = StopAfterFix(run)
    run.add_sink(stopper)
    try:
        first_end = Trainer(c, run).run()
    finally:
        run.close()
    assert first_end.status == "stopped" and stopper.fixed_at is not None
    fixed = [r for r in read_records(b / LOG_NAME) if r["type"] == "change"][-1]
    resumed_end, _ = session(b, resume={})
    assert resumed_end.status == "finished" and resumed_end.step == fixed["new"]
    after = [r for r in read_records(b / LOG_NAME) if r["type"] == "change"]
    assert after[-1] == fixed  # the resume measured nothing again

    ref = tmp_path / "ref"
    plan = {r["step"]: [Order(Command.SET, {"key": "steps", "value": r["new"]}, source="api")] for r in after}
    session(ref, plan, **{**cfg, "steps": 100000, "time_budget": None, "eval_every": 20})
    mine = {r["step"]: (r["train_loss"], r["lr"]) for r in effective_records(read_records(b / LOG_NAME))
            if r["type"] == "train"}
    theirs = {r["step"]: (r["train_loss"], r["lr"]) for r in read_records(ref / LOG_NAME) if r["type"] == "train"}
    assert mine == theirs


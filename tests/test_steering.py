"""Steering beyond pause: live settings, a prompt on live weights, every
change in the log, exact resume kept (issue 15)."""
from __future__ import annotations

import json
import math
import threading

import pytest

from tui_trainer import cli
from tui_trainer.control.commands import Command, Order
from tui_trainer.config import make_config
from tui_trainer.control.channel import TrainerControl, request, serve_trainer
from tui_trainer.train.engine import Trainer
from trainer_with_run import trainer_with_run
from tui_trainer.train.optim import cosine_with_warmup
from tui_trainer.records import Change, Eval, Paused, RunEnd, Sample, TrainStep
from tui_trainer.run.run import Run
from tui_trainer.run.log_writer import LOG_NAME, JsonlSink
from tui_trainer.curves.series import RunSeries

from test_distributed import TINY as DDP_TINY, records, torchrun
from test_distributed import wait_for as _wait_for


def wait_for(pred, timeout: float = 90.0) -> bool:
    def safe():
        try:
            return pred()
        except Exception:  # the socket is not there yet
            return False
    return _wait_for(safe, timeout)


class At:
    """A sink that, when step ``k`` has been trained, puts orders on the run's
    queue from the training thread itself: they apply at exactly that step
    when the run logs every step (``log_every`` 1: the engine emits its train
    records at each log interval, guard.py)."""

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


def set_(key, value, source="api"):
    return Order(Command.SET, {"key": key, "value": value}, source)


def trained(tiny_cfg, plan: dict[int, list], **cfg):
    c = tiny_cfg(**{"steps": 30, "eval_every": 1000, "warmup_steps": 2, "threads": 1, "log_every": 1, **cfg})
    run = Run(None, checkpoint_every=c.ckpt_every, keep=c.keep)
    sink = At(run, plan)
    run.add_sink(sink)
    t = Trainer(c, run)
    end = t.run()
    return t, end, sink.seen


def of(seen, kind):
    return [r for r in seen if isinstance(r, kind)]


# --- each key, through the in-process queue ---------------------------------

def test_lr_scale_multiplies_the_schedule_from_the_next_step(tiny_cfg):
    t, end, seen = trained(tiny_cfg, {10: [set_("lr_scale", 0.5)]})
    lrs = {r.step: r.lr for r in of(seen, TrainStep)}
    cfg = t.cfg
    for step in (5, 10):
        assert lrs[step] == cosine_with_warmup(step - 1, cfg.warmup_steps, cfg.steps, cfg.max_lr, cfg.lr_floor)
    for step in (11, 20):
        assert lrs[step] == 0.5 * cosine_with_warmup(step - 1, cfg.warmup_steps, cfg.steps, cfg.max_lr,
                                                     cfg.lr_floor)
    [ch] = of(seen, Change)
    assert (ch.step, ch.key, ch.old, ch.new, ch.source) == (10, "lr_scale", 1.0, 0.5, "api")
    assert json.loads(json.dumps(ch.to_dict()))["type"] == "change"


def test_max_and_min_lr_reshape_the_schedule(tiny_cfg):
    t, _, seen = trained(tiny_cfg, {8: [set_("max_lr", 2e-3), set_("min_lr", 1e-4)]})
    lrs = {r.step: r.lr for r in of(seen, TrainStep)}
    assert lrs[20] == cosine_with_warmup(19, 2, 30, 2e-3, 1e-4)
    assert [c.key for c in of(seen, Change)] == ["max_lr", "min_lr"]


def test_steps_extends_and_shortens(tiny_cfg):
    _, end, seen = trained(tiny_cfg, {10: [set_("steps", 40)]})
    assert end.status == "finished" and end.step == 40
    _, end, seen = trained(tiny_cfg, {12: [set_("steps", 5)]})
    assert end.status == "finished" and end.step == 12  # at or below the current step: ends now


def test_cadences_clip_and_decay(tiny_cfg, tmp_path):
    t, end, seen = trained(tiny_cfg, {3: [set_("eval_every", 5), set_("grad_clip", 0.5),
                                          set_("weight_decay", 0.01)]})
    assert [e.step for e in of(seen, Eval)] == [5, 10, 15, 20, 25, 30]
    assert t.cfg.grad_clip == 0.5 and t.optimizer.param_groups[0]["weight_decay"] == 0.01
    assert t.optimizer.param_groups[1]["weight_decay"] == 0.0  # biases and norms never decay


def test_checkpoint_every(tiny_cfg, tmp_path):
    c = tiny_cfg(steps=20, eval_every=1000, warmup_steps=2, threads=1, log_every=1)
    (tmp_path / "r").mkdir()
    run = Run(tmp_path / "r", checkpoint_every=c.ckpt_every, keep=100)
    sink = At(run, {2: [set_("checkpoint_every", 6)]})
    run.add_sink(sink)
    Trainer(c, run).run()
    assert [r.step for r in sink.seen if r.type == "checkpoint"] == [6, 12, 18, 20]


def test_pause_at_pauses_there(tiny_cfg):
    # log_every 1: the sink acts on step 3's record before step 4 is launched
    c = tiny_cfg(steps=30, eval_every=1000, warmup_steps=2, threads=1, log_every=1)
    run = Run(None)
    seen = []

    class Resume:
        def emit(self, r):
            seen.append(r)
            if isinstance(r, TrainStep) and r.step == 3:
                run.commands.put(set_("pause_at", 7))
            if isinstance(r, Paused):
                run.send(Command.RESUME)

    run.add_sink(Resume())
    end = Trainer(c, run).run()
    [p] = of(seen, Paused)
    assert (p.step, p.reason) == (7, "pause_at") and end.step == 30


def test_a_sample_on_live_weights_leaves_training_untouched(tiny_cfg):
    ask = Order(Command.SAMPLE, {"prompt": "def f", "tokens": 12, "id": "x1"}, "attach")
    _, _, plain = trained(tiny_cfg, {})
    _, _, asked = trained(tiny_cfg, {10: [ask]})
    [s] = [r for r in of(asked, Sample) if r.requested]
    assert s.text.startswith("def f") and s.id == "x1" and s.step == 10
    # Its own generator: the training RNG, so every loss, is untouched.
    assert [r.train_loss for r in of(plain, TrainStep)] == [r.train_loss for r in of(asked, TrainStep)]


# --- refusals: checked before anything is queued ------------------------------

@pytest.mark.parametrize("key, value, why", [
    ("lr_scale", float("nan"), "must be a number"),
    ("lr_scale", "inf", "must be a number"),
    ("lr_scale", -1, "must be positive"),
    ("max_lr", 0, "must be positive"),
    ("min_lr", 5.0, "at most max_lr"),
    ("steps", "abc", "must be an integer"),
    ("steps", 2.5, "must be an integer"),
    ("eval_every", 0, "at least 1"),
    ("grad_clip", [1], "must be a number"),
    ("weight_decay", True, "must be a number"),
    ("pause_at", -3, ">= 0"),
    ("frobnicate", 1, "unknown setting 'frobnicate'"),
    (7, 1, "a setting's key is a name"),
])
def test_bad_values_are_refused_at_once(tiny_cfg, key, value, why):
    t, run = trainer_with_run(tiny_cfg(threads=1))
    before = run.settings.current()
    answer = TrainerControl(run).handle({"cmd": "set", "key": key, "value": value})
    assert answer["ok"] is False and why in answer["error"], answer
    assert run.commands.empty() and run.settings.current() == before


@pytest.mark.parametrize("req, why", [
    ({"cmd": "sample"}, "needs a \"prompt\""),
    ({"cmd": "sample", "prompt": ""}, "needs a \"prompt\""),
    ({"cmd": "sample", "prompt": "x" * 5000}, "keep it under"),
    ({"cmd": "sample", "prompt": "a", "tokens": 0}, "tokens must be"),
    ({"cmd": "sample", "prompt": "a", "temperature": "nan"}, "temperature must be"),
    ({"cmd": "set", "key": "lr_scale"}, "needs \"key\" and \"value\""),
])
def test_bad_requests_are_refused(tiny_cfg, req, why):
    t, run = trainer_with_run(tiny_cfg(threads=1))
    answer = TrainerControl(run).handle(req)
    assert answer["ok"] is False and why in answer["error"], answer


def test_a_loop_without_a_sample_handler_refuses_samples():
    run = Run(None)
    answer = TrainerControl(run).handle({"cmd": "sample", "prompt": "hi"})
    assert answer["ok"] is False and "on_sample" in answer["error"]


# --- through the control socket and the CLI ------------------------------------

def test_set_and_sample_over_the_socket(tiny_cfg, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    c = tiny_cfg(steps=100_000, eval_every=100_000, threads=1)
    log = JsonlSink(run_dir / LOG_NAME)
    t, run = trainer_with_run(c, run_dir, [log])
    th = threading.Thread(target=t.run)
    with serve_trainer(run, run_dir):
        th.start()
        try:
            assert wait_for(lambda: t.step >= 3)
            assert cli.main(["attach", str(run_dir), "--set", "lr_scale=0.25", "--set", "eval_every=1000"]) == 0
            answers = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
            assert [a["ok"] for a in answers] == [True, True]
            assert cli.main(["attach", str(run_dir), "--set", "lr_scale=nan"]) == 1
            assert "must be a number" in capsys.readouterr().out
            assert cli.main(["attach", str(run_dir), "--sample", "def main", "--tokens", "10"]) == 0
            text = capsys.readouterr().out
            assert text.startswith("def main")
            assert request(run_dir, "stop")["ok"]
        finally:
            run.request_stop()
            th.join(timeout=60)
    log.close()
    recs = [json.loads(x) for x in (run_dir / LOG_NAME).read_text().splitlines()]
    changes = [(r["key"], r["new"], r["source"]) for r in recs if r["type"] == "change"]
    assert changes == [("lr_scale", 0.25, "attach"), ("eval_every", 1000, "attach")]
    assert any(r["type"] == "sample" and r.get("requested") for r in recs)


# --- exact resume with a change before the stop -------------------------------

def test_resume_after_a_change_is_exact(tiny_cfg, tmp_path):
    def cfg(out):
        return tiny_cfg(steps=40, eval_every=10, warmup_steps=2, threads=1, log_every=1, out=str(out))

    def go(out, plan, stop_at=None):
        out.mkdir()
        c = cfg(out)
        run = Run(out, checkpoint_every=c.ckpt_every, keep=c.keep)
        if stop_at:
            plan = {**plan, stop_at: plan.get(stop_at, []) + ["stop"]}
        sink = At(run, plan)
        run.add_sink(sink)
        end = Trainer(c, run).run()
        return end, sink.seen

    whole_end, whole = go(tmp_path / "whole", {7: [set_("lr_scale", 0.5), set_("weight_decay", 0.02)]})
    part_end, part = go(tmp_path / "part", {7: [set_("lr_scale", 0.5), set_("weight_decay", 0.02)]}, stop_at=23)
    assert part_end.status == "stopped" and part_end.step == 23

    from tui_trainer.run.resume import plan_resume
    plan = plan_resume(tmp_path / "part", {})
    run = Run(tmp_path / "part", checkpoint_every=plan.cfg.ckpt_every, keep=plan.cfg.keep)
    rest = []
    run.add_sink(type("S", (), {"emit": lambda self, r: rest.append(r)})())
    t = Trainer(plan.cfg, run, resume=plan)
    end = t.run()
    assert end.step == 40 and t.lr_scale == 0.5
    start = rest[0]
    assert start.resumed and start.live == {"lr_scale": 0.5, "weight_decay": 0.02}
    want = {r.step: r.train_loss for r in of(whole, TrainStep)}
    got = {r.step: r.train_loss for r in of(part, TrainStep) + of(rest, TrainStep)}
    assert got == want  # bit for bit, every step


# --- markers on the plots ------------------------------------------------------

def test_markers_are_kept_for_the_plots():
    s = RunSeries()
    s.apply(Change(step=5, key="lr_scale", old=1.0, new=0.5))
    s.apply(Paused(step=9))
    s.apply(Eval(step=9, val_loss=1.0, train_loss=1.0, elapsed_s=1.0, forced=True))
    assert [(m.step, m.kind) for m in s.markers] == [(5, "change"), (9, "pause"), (9, "eval")]
    assert "0.5" in s.markers[0].label and s.changes == {"lr_scale": 0.5}


# --- two gloo ranks ------------------------------------------------------------

def test_changes_reach_both_ranks_at_the_same_step(tmp_path):
    run = tmp_path / "run"
    proc = torchrun(["--steps", "100000", "--eval-every", "100000", "--batch-size", "4", *DDP_TINY,
                     "--out", str(run)], tmp_path)
    try:
        assert wait_for(lambda: request(run, "status")["step"] >= 3)
        assert request(run, "pause")["ok"]
        assert wait_for(lambda: any(r["type"] == "pause" for r in records(run)))
        at = request(run, "status")["step"]
        for key, value in (("lr_scale", 0.5), ("grad_clip", 0.5), ("weight_decay", 0.01), ("max_lr", 5e-3),
                           ("min_lr", 1e-4), ("eval_every", 3), ("checkpoint_every", 4),
                           ("pause_at", 0), ("steps", at + 7)):
            assert request(run, {"cmd": "set", "key": key, "value": value})["ok"], key
        assert wait_for(lambda: sum(r["type"] == "change" for r in records(run)) == 9)
        assert request(run, "resume")["ok"]
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    recs = records(run)
    end = recs[-1]
    # steps reached rank 1 too: both ranks ended at the new total, together.
    assert end["status"] == "finished" and end["step"] == at + 7
    assert f"rank 1: run finished at step {at + 7}" in err
    assert [r["step"] for r in recs if r["type"] == "eval"][:2] == [s for s in range(at + 1, at + 8) if s % 3 == 0][:2]
    lrs = [r["lr"] for r in recs if r["type"] == "train" and r["step"] > at]
    assert all(lr <= 0.5 * 5e-3 + 1e-12 for lr in lrs)

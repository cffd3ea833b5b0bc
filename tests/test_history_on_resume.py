"""A resumed or attached dashboard shows the run's whole history (issue 23).

The live dashboard of a resumed run reads the log the earlier sessions wrote
(less what the resume supersedes) before the session's own records, so its
plot and eval table start at the run's first step, the best star counts
every eval ever made, and no record shows twice.  An attached window takes
the run's pace from the log's recent steps, right from its first frame.
"""
from __future__ import annotations

import json
import statistics

import pytest

from tui_trainer.records import Eval, TrainStep
from tui_trainer.run.log_writer import LOG_NAME, JsonlSink
from tui_trainer.curves.series import RunSeries
from tui_trainer.ui.sources import LocalSteering, TrainerSource
from tui_trainer.ui.app import DashboardApp
from tui_trainer.ui.attach import AttachSource
from tui_trainer.ui.eval_log import EvalLog
from runmaker import write_run
from uitools import until

SIZE = (120, 40)
GOOD = 0.01  # pre-resume evals, better than anything the tiny model reaches


def _first_run(tiny_cfg, run_dir):
    """40 steps (evals at 10..40, a final checkpoint at 40); then the log is
    made to say the evals were excellent, and a crashed later session's
    steps 41..44 (an eval at 44 better still) are appended: the resume from
    step 40 supersedes those."""
    from tui_trainer.train.engine import Trainer

    run_dir.mkdir()
    log = JsonlSink(run_dir / LOG_NAME)
    try:
        end = Trainer(tiny_cfg(steps=40, eval_every=10, out=str(run_dir)), run_dir, [log]).run()
    finally:
        log.close()
    assert end.status == "finished"
    path = run_dir / LOG_NAME
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    for d in lines:
        if d["type"] == "eval":
            d["val_loss"] = GOOD + d["step"] / 1e4
    path.write_text("".join(json.dumps(d) + "\n" for d in lines))
    log = JsonlSink(path)
    for s in range(41, 45):
        log.emit(TrainStep(step=s, train_loss=9.0, lr=1e-3, tokens_per_sec=1.0, grad_norm=1.0, elapsed_s=99.0))
    log.emit(Eval(step=44, val_loss=GOOD / 10, train_loss=9.0, elapsed_s=99.0))
    log.close()


@pytest.fixture
def resumed(tiny_cfg, tmp_path):
    """The live dashboard of a resumed run, training steps 41..60."""
    from trainer_with_run import trainer_with_run
    from tui_trainer.run.resume import plan_resume

    run_dir = tmp_path / "run"
    _first_run(tiny_cfg, run_dir)
    plan = plan_resume(run_dir, {"steps": 60})
    log = JsonlSink(run_dir / LOG_NAME)
    trainer, run = trainer_with_run(plan.cfg, run_dir, [log], interactive=True, resume=plan)
    assert trainer.resumed and trainer.step == 40
    source = TrainerSource(trainer, run=run)
    app = DashboardApp(source, [RunSeries(run.name)], steering=LocalSteering(source))
    yield app, source
    if not source.done:
        source.stop()
        source.join(30)
    log.close()


async def test_resumed_dashboard_shows_the_whole_run_and_no_false_best(resumed):
    app, source = resumed
    shown: list[tuple[list[int], int]] = []  # every frame's evals and step, from the first
    real_poll = app.poll_source

    def poll_and_look() -> None:
        real_poll()
        if app.runs:
            shown.append(([e.step for e in app.runs[0].evals], app.runs[0].step))

    app.poll_source = poll_and_look
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].ended and source.done, "the resumed run to finish", 120)
        await pilot.pause(0.3)
        run = app.runs[0]
        # Every frame that shows a step of this session shows the earlier ones too.
        for evals, step in shown:
            if step > 40:
                assert evals[:4] == [10, 20, 30, 40], (evals, step)
        # The whole run, once: the superseded eval at 44 is gone, nothing repeats.
        assert [e.step for e in run.evals] == [10, 20, 30, 40, 50, 60]
        xs = run.loss.points(10_000)[0]
        assert xs.min() <= 10 and xs.max() == 60
        assert 9.0 not in set(run.loss.points(10_000)[1])  # the superseded steps' loss
        # The best star counts every eval: those after the resume are worse than 0.01.
        table = app.main.query_one(EvalLog)
        vals = [str(table.get_row_at(k)[2]) for k in range(table.row_count)]
        assert len(vals) == 6
        assert vals[0].endswith("*")
        assert not any(v.endswith("*") for v in vals[4:]), vals


def test_attach_takes_the_rate_from_the_log(tmp_path):
    """An attached window's first frame shows the pace of the log's recent
    steps, not the run's average (which an eval, a compile or a pause drags down)."""
    run_dir = write_run(tmp_path / "run", steps=1, eval_every=50, end=None)
    log = run_dir / LOG_NAME
    with open(log, "a") as f:  # 200 steps of 0.5 s whose own rates agree with their tokens, and a long pause
        elapsed, tokens = 0.0, 0
        for s in range(2, 201):
            elapsed += 0.5 + (300.0 if s == 150 else 0.0)  # an eval, a compile or a pause: 300 s at step 150
            tokens += int((1000.0 + s) * 0.5)
            f.write(json.dumps({"type": "train", "step": s, "train_loss": 1.0, "lr": 1e-3, "grad_norm": 1.0,
                                "tokens_per_sec": 1000.0 + s, "tokens": tokens, "elapsed_s": elapsed}) + "\n")
    source = AttachSource(run_dir)
    try:
        source.prepare()
        run = source.runs[0]
        sps, tps = run.rates()
        recent = statistics.median(1000.0 + s for s in range(137, 201))  # the last 64 steps' own rates
        assert tps == pytest.approx(recent, rel=0.05)
        assert run.tokens / run.elapsed_s < 0.5 * recent  # the run's average, which the pause drags down
        assert sps == pytest.approx(2.0, rel=0.05)  # elapsed_s is 0.5 s a step
    finally:
        source.close()

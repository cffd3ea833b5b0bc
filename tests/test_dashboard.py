"""The live dashboard, driven with Textual's Pilot at 80x24.

Live tests run a tiny model in the app's training thread and read the JSONL
log the run writes; the snapshot test feeds fixed records with no thread.
"""
from __future__ import annotations

import json
import math
import queue
from pathlib import Path

import pytest

from tui_trainer.records import Paused, RunEnd, RunStart
from tui_trainer.run.log_writer import LOG_NAME, JsonlSink
from tui_trainer.curves.series import RunSeries
from tui_trainer.ui.sources import LocalSteering, QueueSource, TrainerSource
from tui_trainer.ui.app import DashboardApp
from tui_trainer.ui.eval_log import EvalLog
from uitools import T0, FixedSource, fixed_records, until

SIZE = (80, 24)


def records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line being written right now
    return out


def count(path: Path, type_: str) -> int:
    return sum(r["type"] == type_ for r in records(path))


@pytest.fixture
def live(tiny_cfg, tmp_path):
    """A dashboard app over a real (tiny) trainer writing a JSONL log."""
    from trainer_with_run import trainer_with_run  # here: the screens below need no torch

    cfg = tiny_cfg(steps=100_000, eval_every=100_000, threads=1)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    log = JsonlSink(run_dir / LOG_NAME)
    trainer, run = trainer_with_run(cfg, run_dir, [log], interactive=True)
    source = TrainerSource(trainer, run=run)
    app = DashboardApp(source, [RunSeries(run.name)], steering=LocalSteering(source))
    yield app, run_dir / LOG_NAME, run_dir
    if not source.done:  # a failing test must not leave a thread training
        source.stop()
        source.join(30)
    log.close()


async def quit_and_check(app: DashboardApp, pilot, log: Path) -> None:
    await pilot.press("q", "q")  # a running run asks once more before it stops
    await pilot.press("q")  # another q while stopping changes nothing
    await until(pilot, lambda: app.return_value is not None, "the app to exit after q")
    assert isinstance(app.return_value, RunEnd) and app.return_value.status == "stopped"
    recs = records(log)
    assert recs[-1]["type"] == "run_end" and recs[-1]["status"] == "stopped"
    assert sum(r["type"] == "run_end" for r in recs) == 1


async def test_pause_resume_and_quit(live):
    app, log, _ = live
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: count(log, "train") >= 5, "first train steps")
        await pilot.press("p")
        await until(pilot, lambda: count(log, "pause") == 1, "the pause record")
        paused_at = count(log, "train")
        await pilot.pause(0.6)
        assert count(log, "train") == paused_at  # no step while paused
        await until(pilot, lambda: app.runs[0].state == "paused", "the status line to say paused")
        await pilot.press("p")
        await until(pilot, lambda: count(log, "train") > paused_at + 3, "steps after resuming")
        assert count(log, "resume") == 1
        await quit_and_check(app, pilot, log)


async def test_eval_and_checkpoint_keys(live):
    app, log, run_dir = live
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: count(log, "train") >= 3, "first train steps")
        await pilot.press("e")
        await until(pilot, lambda: count(log, "eval") == 1, "the eval record")
        table = app.query_one(EvalLog)
        await until(pilot, lambda: table.row_count == 1, "an eval log line")
        ev = next(r for r in records(log) if r["type"] == "eval")
        assert ev["forced"] is True and math.isfinite(ev["val_loss"])
        await pilot.press("c")
        # (the forced eval was the run's first, so it may already have saved best.pt)
        manual = lambda: [r for r in records(log) if r["type"] == "checkpoint" and r["reason"] == "manual"]
        await until(pilot, lambda: len(manual()) == 1, "the checkpoint record")
        ck = manual()[0]
        assert Path(ck["path"]).is_file()
        assert Path(ck["path"]).parent.resolve().is_relative_to(run_dir.resolve())
        await quit_and_check(app, pilot, log)


# --- deterministic screens -------------------------------------------------

def test_snapshot_80x24(snap_compare):
    async def settle(pilot):
        await pilot.pause()
        pilot.app.update_view(force_plots=True)
        await pilot.pause()

    assert snap_compare(DashboardApp(FixedSource(fixed_records())), terminal_size=SIZE, run_before=settle)


async def test_fixed_run_fills_every_pane():
    app = DashboardApp(FixedSource(fixed_records()))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        run = app.runs[0]
        assert (run.name, run.step, run.state) == ("demo-run", 600, "running")
        assert app.query_one(EvalLog).row_count == 6
        assert "step 600 (6/6)" in str(app.query_one("#sample-box").border_title)
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert "step 400 (4/6)" in str(app.query_one("#sample-box").border_title)
        await pilot.press("right_square_bracket")
        assert "step 500 (5/6)" in str(app.query_one("#sample-box").border_title)
        # Steering keys are hidden when the source cannot steer.
        assert app.check_action("pause", ()) is False
        for key in "slw":
            await pilot.press(key)
        loss = app.query_one("#loss")
        assert loss.smooth and loss.log_y and loss.window == app.window_steps
        await pilot.press("question_mark")
        assert app.screen.__class__.__name__ == "HelpScreen"
        app.source = FixedSource(fixed_records(n=700)[-150:])  # records keep coming under the help screen
        app.poll_source()
        assert app.runs[0].step == 700
        await pilot.press("escape")
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, "q to exit a finished view", timeout=5)


async def test_diverged_and_failed_runs_are_shown():
    recs = fixed_records(n=50, eval_every=1000)
    recs.append(Paused(step=50, reason="diverged", time=T0))
    app = DashboardApp(FixedSource(recs))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        alert = app.query_one("#alert")
        assert alert.has_class("-shown") and alert.has_class("-bad")
        assert "DIVERGED" in str(alert.render())
        assert "DIVERGED" in str(app.query_one("#status").render())
        app.source = FixedSource([RunEnd(step=50, status="failed", elapsed_s=3.0,
                                         error="RuntimeError: boom", time=T0)])
        app.poll_source()
        await pilot.pause()
        assert "RuntimeError: boom" in str(alert.render())
        assert app.check_action("eval", ()) is False


async def test_queue_source_adds_runs_by_index():
    source = QueueSource(queue.SimpleQueue())
    a, b = source.sink(0), source.sink(1)
    app = DashboardApp(source)
    async with app.run_test(size=SIZE) as pilot:
        for sink, name in ((a, "first"), (b, "second")):
            for r in fixed_records(n=30, eval_every=10):
                if isinstance(r, RunStart):
                    r.run_name = name
                sink.emit(r)
        await until(pilot, lambda: len(app.runs) == 2 and app.runs[1].step == 30, "both runs")
        assert [r.name for r in app.runs] == ["first", "second"]
        assert app.query_one(EvalLog).row_count == 6

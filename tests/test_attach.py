"""``tui-trainer attach``: the dashboard following a run's log, steering it over the control channel."""
from __future__ import annotations

import queue
from pathlib import Path
from types import SimpleNamespace

import pytest

from tui_trainer import cli
from tui_trainer.commands import CommandQueue
from tui_trainer.control import serve_trainer
from tui_trainer.engine import Command
from tui_trainer.records import Eval, Paused, RunStart, TrainStep
from tui_trainer.runlog import LOG_NAME, JsonlSink
from tui_trainer.ui.attach import AttachApp, AttachSource
from uitools import until

SIZE = (80, 24)


def write_log(run_dir: Path, steps: int = 30, paused: bool = False) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    sink = JsonlSink(run_dir / LOG_NAME)
    sink.emit(RunStart(step=0, run_name=run_dir.name, config={}, n_params=1, device="cpu", total_steps=1000))
    for s in range(1, steps + 1):
        sink.emit(TrainStep(step=s, train_loss=5.0 - s / 10, lr=1e-3, tokens_per_sec=1000.0,
                            grad_norm=1.0, elapsed_s=s / 10, tokens=s * 64))
    sink.emit(Eval(step=steps, val_loss=2.0, train_loss=2.1, elapsed_s=steps / 10))
    if paused:
        sink.emit(Paused(step=steps))
    sink.close()


def fake_trainer() -> SimpleNamespace:
    return SimpleNamespace(commands=CommandQueue(), step=30, paused=False, stopping=False,
                           total_steps=1000)


def drained(q: queue.Queue) -> list:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


@pytest.fixture
def live(tmp_path):
    run_dir = tmp_path / "run"
    write_log(run_dir)
    t = fake_trainer()
    with serve_trainer(t, run_dir):
        yield run_dir, t


async def test_keys_steer_the_run_and_show_the_answer(live):
    run_dir, t = live
    src = AttachSource(run_dir)
    src.prepare()
    app = AttachApp(src)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].step == 30, "the log")
        assert app.check_action("pause", ()) is True and app.check_action("stop_run", ()) is True
        await pilot.press("p")
        await until(pilot, lambda: len(src.answers) == 1, "the pause answer")
        assert src.answers[0]["ok"] and src.answers[0]["cmd"] == "pause"
        assert src.status_text().endswith("✓ pause @30")
        await pilot.press("e", "c")
        await until(pilot, lambda: len(src.answers) == 3, "eval and checkpoint answers")
        assert drained(t.commands) == [Command.PAUSE, Command.EVAL, Command.CHECKPOINT]
        # The acknowledgement is also a toast, readable at 80 columns.
        await until(pilot, lambda: any("acknowledged" in str(n.message) for n in app._notifications),
                    "the toast")
        await pilot.press("q")
    assert src.done
    assert drained(t.commands) == []  # quitting the viewer sent nothing: the run goes on


async def test_stop_needs_two_presses(live):
    run_dir, t = live
    src = AttachSource(run_dir)
    src.prepare()
    app = AttachApp(src)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].step == 30, "the log")
        await pilot.press("x")
        await pilot.pause(0.3)
        assert src.answers == [] and t.commands.empty() and "again" in src.note
        await pilot.press("x")
        await until(pilot, lambda: len(src.answers) == 1, "the stop answer")
        assert drained(t.commands) == [Command.STOP]
        await pilot.press("q")


async def test_pause_key_resumes_a_run_the_log_shows_paused(tmp_path):
    run_dir = tmp_path / "run"
    write_log(run_dir, paused=True)
    t = fake_trainer()
    t.paused = True  # what the run says wins over what the log shows
    with serve_trainer(t, run_dir):
        src = AttachSource(run_dir)
        src.prepare()
        app = AttachApp(src)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.runs[0].step == 30, "the log")
            await pilot.press("p")
            await until(pilot, lambda: len(src.answers) == 1, "the answer")
            await pilot.press("q")
    assert drained(t.commands) == [Command.RESUME], src.answers


async def test_a_finished_run_is_view_only(tmp_path):
    run_dir = tmp_path / "run"
    write_log(run_dir)
    src = AttachSource(run_dir)
    src.prepare()
    assert src.note == "no live run: view only"
    app = AttachApp(src)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].step == 30, "the log")
        await pilot.press("e")
        await until(pilot, lambda: len(src.answers) == 1, "the refusal")
        assert src.answers[0]["ok"] is False and "no live run" in src.answers[0]["error"]
        assert src.note == "✗ eval"
        await pilot.press("q")


def test_attach_to_a_missing_folder_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["attach", str(tmp_path / "nope"), "--send", "status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


async def test_help_says_q_leaves_the_run_going(live):
    run_dir, _ = live
    src = AttachSource(run_dir)
    src.prepare()
    app = AttachApp(src)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        text = str(app.screen.query_one("#help-text").render())
        assert "the run goes on" in text and "final checkpoint" not in text
        await pilot.press("escape", "q")

"""``tui-trainer attach``: the dashboard following a run's log, steering it over the control channel."""
from __future__ import annotations

import queue
from pathlib import Path
from types import SimpleNamespace

import pytest

from tui_trainer import cli
from tui_trainer.control.commands import CommandQueue
from tui_trainer.control.channel import serve_trainer
from tui_trainer.control.commands import Command
from tui_trainer.records import Eval, Paused, RunEnd, RunStart, TrainStep
from tui_trainer.run.folder import RunLock
from tui_trainer.run.log_writer import LOG_NAME, JsonlSink
from tui_trainer.ui.attach import AttachSource, attach_app
from uitools import FakeClock, until

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


def append(run_dir: Path, *records) -> None:
    sink = JsonlSink(run_dir / LOG_NAME)
    for r in records:
        sink.emit(r)
    sink.close()


def attached(run_dir: Path, clock=None):
    src = AttachSource(run_dir)
    src.prepare()
    app = attach_app(src)
    if clock is not None:
        app.clock = clock
    shown: list[str] = []
    notify = app.notify

    def recording_notify(message, *args, **kwargs):
        shown.append(str(message))
        return notify(message, *args, **kwargs)

    app.notify = recording_notify
    app.shown_toasts = shown
    return app, src, app.steering


def toasts(app) -> list[str]:
    """Every toast shown so far, including those already timed out (a slow
    machine can take longer than a toast's few seconds between two checks)."""
    return list(getattr(app, "shown_toasts", [])) + [str(n.message) for n in app._notifications]


def status(app) -> str:
    return str(app.query_one("#status").render())


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
    with RunLock(run_dir), serve_trainer(t, run_dir):  # a live run holds its folder's lock
        yield run_dir, t


async def test_keys_steer_the_run_and_show_the_answer(live):
    run_dir, t = live
    app, src, steer = attached(run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].step == 30, "the log")
        assert app.check_action("pause", ()) is True and app.check_action("stop_run", ()) is True
        await pilot.press("p")
        await until(pilot, lambda: len(steer.answers) == 1, "the pause answer")
        assert steer.answers[0]["ok"] and steer.answers[0]["cmd"] == "pause"
        await until(pilot, lambda: "✓ pause requested at step 30" in status(app), "the answer on the status line")
        await pilot.press("e", "c")
        await until(pilot, lambda: len(steer.answers) == 3, "eval and checkpoint answers")
        assert drained(t.commands) == [Command.PAUSE, Command.EVAL, Command.CHECKPOINT]
        # The acknowledgement is also a toast, readable at 80 columns.
        await until(pilot, lambda: any("checkpoint requested at step 30" in m for m in toasts(app)), "the toast")
        await pilot.press("q")
    assert src.done
    assert drained(t.commands) == []  # closing the window sent nothing: the run goes on


async def test_pause_answer_says_when_it_was_asked_and_the_log_when_it_paused(live):
    """The channel's step is when the command was queued; the run pauses after
    that step.  Say so, then show the step the log reports."""
    run_dir, t = live
    t.step = 33
    app, src, steer = attached(run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].step == 30, "the log")
        await pilot.press("p")
        await until(pilot, lambda: any("pause requested at step 33" in m for m in toasts(app)), "the answer")
        await until(pilot, lambda: "pause requested at step 33" in status(app), "the answer on the status line")
        assert "@33" not in status(app)
        append(run_dir, TrainStep(step=34, train_loss=1.0, lr=1e-3, tokens_per_sec=1.0, grad_norm=1.0,
                                  elapsed_s=3.4), Paused(step=34))
        await until(pilot, lambda: app.runs[0].state == "paused", "the log's pause")
        await until(pilot, lambda: "PAUSED" in status(app) and "paused at step 34" in status(app), "PAUSED at 34")
        await until(pilot, lambda: any("paused at step 34" in m for m in toasts(app)), "the toast")
        await pilot.press("q")


async def test_stop_needs_two_presses(live):
    run_dir, t = live
    app, src, steer = attached(run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].step == 30, "the log")
        await pilot.press("x")
        await pilot.pause(0.3)
        assert steer.answers == [] and t.commands.empty() and "x again: stop the run" in status(app)
        await pilot.press("x")
        await until(pilot, lambda: len(steer.answers) == 1, "the stop answer")
        assert drained(t.commands) == [Command.STOP]
        await pilot.press("q")


async def test_stop_prompt_expires(live):
    """The x-again prompt lasts its window and no longer; once the run has
    ended it is gone, and x says why it does nothing."""
    run_dir, t = live
    clock = FakeClock()
    app, src, steer = attached(run_dir, clock)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].step == 30, "the log")
        await pilot.press("x")
        await until(pilot, lambda: "x again: stop the run" in status(app), "the prompt")
        clock.advance(3.5)
        await until(pilot, lambda: "x again" not in status(app), "the prompt to expire")
        await pilot.press("x")  # a new first press: asks again, sends nothing
        await pilot.pause(0.2)
        assert t.commands.empty() and steer.answers == [] and "x again: stop the run" in status(app)
        append(run_dir, RunEnd(step=30, status="stopped", elapsed_s=3.0))  # stopped by another window
        await until(pilot, lambda: app.runs[0].state == "stopped", "the log's run_end")
        await until(pilot, lambda: "x again" not in status(app), "the prompt to go with the run")
        assert "run stopped at step 30" in status(app)
        await pilot.press("x")
        await until(pilot, lambda: any("the run has ended" in m for m in toasts(app)), "the reason")
        assert t.commands.empty()
        await pilot.press("q")


async def test_pause_key_resumes_a_run_the_log_shows_paused(tmp_path):
    run_dir = tmp_path / "run"
    write_log(run_dir, paused=True)
    t = fake_trainer()
    t.paused = True  # what the run says wins over what the log shows
    with RunLock(run_dir), serve_trainer(t, run_dir):
        app, src, steer = attached(run_dir)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.runs[0].step == 30, "the log")
            await pilot.press("p")
            await until(pilot, lambda: len(steer.answers) == 1, "the answer")
            await pilot.press("q")
    assert drained(t.commands) == [Command.RESUME], steer.answers


async def test_a_finished_run_is_view_only(tmp_path):
    run_dir = tmp_path / "run"
    write_log(run_dir)
    app, src, steer = attached(run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].step == 30, "the log")
        assert app.state == "offline" and "no live run: view only" in status(app)
        assert app.check_action("eval", ()) is False  # not offered in the footer
        await pilot.press("e")
        await until(pilot, lambda: any("no live run" in m for m in toasts(app)), "the reason")
        assert steer.answers == []  # nothing was sent to a run that is not there
        await pilot.press("q")


def test_attach_to_a_missing_folder_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["attach", str(tmp_path / "nope"), "--send", "status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


async def test_help_says_q_leaves_the_run_going(live):
    run_dir, _ = live
    app, src, steer = attached(run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].step == 30, "the log")
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        text = str(app.screen.query_one("#help-text").render())
        assert "close this window; the run goes on" in text and "quit" not in text
        assert "x" in text and "stop the run" in text
        await pilot.press("escape", "q")

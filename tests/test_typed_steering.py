"""Typing to a run (issue 15, the UI half): the command line (:), the prompt
box (g), their answers, and the marks the steering leaves on the plots."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tui_trainer.control.commands import Command, CommandQueue, Order
from tui_trainer.control.channel import serve_trainer
from tui_trainer.records import Change, Checkpoint, Eval, Paused, Resumed, RunStart, Sample, TrainStep
from tui_trainer.run.log_writer import LOG_NAME, JsonlSink
from tui_trainer.curves.series import RunSeries
from tui_trainer.control.settings import Settings, positive
from tui_trainer.ui.sources import LocalSteering, TrainerSource
from tui_trainer.ui.app import DashboardApp
from tui_trainer.ui.command_line import CommandScreen, completions, parse, unescape
from tui_trainer.ui.plot import CurvePlot
from test_attach import append, attached, drained, status, toasts, write_log
from test_dashboard import count, records
from uitools import FixedSource, until

SIZE = (80, 24)


# --- what a typed line becomes -------------------------------------------------

@pytest.mark.parametrize("typed, req", [
    ("lr_scale=0.5", {"cmd": "set", "key": "lr_scale", "value": "0.5"}),
    (" set steps = 5000 ", {"cmd": "set", "key": "steps", "value": "5000"}),
    ("pause_at 900", {"cmd": "set", "key": "pause_at", "value": "900"}),
    ("pause", {"cmd": "pause"}),
    ("checkpoint", {"cmd": "checkpoint"}),
    ("sample def  parse(", {"cmd": "sample", "prompt": "def  parse("}),
    ("sample a\\nb", {"cmd": "sample", "prompt": "a\nb"}),
])
def test_a_typed_line_is_the_sockets_request(typed, req):
    assert parse(typed) == (req, None)


@pytest.mark.parametrize("typed", ["lr_scale", "eval now", "sample", "stop", "=3", "a b=1"])
def test_a_line_that_is_no_request_says_why(typed):
    req, why = parse(typed)
    assert req is None and why and "\n" not in why


def test_completion_offers_the_runs_own_keys_and_their_values():
    live = {"lr_scale": 1.0, "steps": 2000, "max_lr": 3e-3}
    assert completions("lr", live) == ["lr_scale="]
    assert completions("set st", live) == ["set steps="]
    assert completions("steps=", live) == ["steps=2000"]
    assert completions("pa", live) == ["pause"]
    assert completions("steps=20", live) == [] and completions("sample x", live) == []
    assert unescape(r"x\ty\\n") == "x\ty\\n"


# --- the live dashboard: a real tiny trainer ------------------------------------

@pytest.fixture
def live(tiny_cfg, tmp_path):
    from trainer_with_run import trainer_with_run

    cfg = tiny_cfg(steps=100_000, eval_every=100_000, threads=1)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    log = JsonlSink(run_dir / LOG_NAME)
    trainer, run = trainer_with_run(cfg, run_dir, [log], interactive=True)
    source = TrainerSource(trainer, run=run)
    app = DashboardApp(source, [RunSeries(run.name)], steering=LocalSteering(source))
    yield app, run_dir / LOG_NAME
    if not source.done:
        source.stop()
        source.join(30)
    log.close()


def spy(app) -> list[str]:
    """Every toast's text, kept (a toast leaves the screen after a few seconds)."""
    said: list[str] = []
    say = app.say

    def keep(message, **kw):
        said.append(message)
        say(message, **kw)

    app.say = keep
    return said


def changes(log: Path) -> list[dict]:
    return [r for r in records(log) if r["type"] == "change"]


async def test_typing_a_change_and_a_prompt_in_the_live_dashboard(live):
    """Paused first: a run paused to try a prompt is the usual case, and a tiny
    model training flat out beside the Pilot makes every key press slow.
    Changes and samples are taken while paused, as between steps."""
    app, log = live
    said = spy(app)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: count(log, "train") >= 3, "first train steps")
        await pilot.press("p")
        await until(pilot, lambda: app.runs[0].state == "paused", "the pause")
        await pilot.press("colon")
        assert isinstance(app.screen, CommandScreen)
        # The hint lists the run's own settings, asked of the run as the socket would be.
        hint = lambda: str(app.screen.query_one("#cmd-hint").render())
        await until(pilot, lambda: "lr_scale=1" in hint() and "pause_at=0" in hint(), "the settings hint")
        await pilot.press(*"lr_s", "tab", *"0.5", "enter")
        await until(pilot, lambda: len(changes(log)) == 1, "the change record")
        ch = changes(log)[0]
        assert (ch["key"], ch["old"], ch["new"], ch["source"]) == ("lr_scale", 1.0, 0.5, "keys")
        await until(pilot, lambda: any("✓ lr_scale=0.5 accepted at step" in m for m in said), "the answer")
        await until(pilot, lambda: [m.kind for m in app.runs[0].markers] == ["pause", "change"], "the markers")
        # A bad value: refused at once with the reason; nothing changes.
        await pilot.press("colon", *"lr_scale=nan", "enter")
        await until(pilot, lambda: any("✗ lr_scale=nan refused: lr_scale must be" in m for m in said),
                    "the refusal")
        assert "lr_scale=nan refused" in status(app)
        await pilot.press("colon", "up", "up")  # the history: the last line typed, then the one before
        assert app.screen.query_one("#cmd-input").value == "lr_scale=0.5"
        await pilot.press("escape")
        assert not isinstance(app.screen, CommandScreen)
        # The prompt box: the sample is drawn on the live weights and shown, marked as requested.
        await pilot.press("g", *"def ", "enter")
        await until(pilot, lambda: count(log, "sample") == 1, "the sample record")
        rec = next(r for r in records(log) if r["type"] == "sample")
        assert rec["requested"] is True and rec["prompt"] == "def " and rec["text"].startswith("def ")
        box = app.main.query_one("#sample-box")
        await until(pilot, lambda: "requested sample @ step" in str(box.border_title), "the sample pane")
        assert rec["text"][:8] in str(app.main.query_one("#sample").render())
        assert len(changes(log)) == 1
        await pilot.press("q", "q")
        await until(pilot, lambda: app.return_value is not None, "the app to exit")


# --- attach: a served fake run ------------------------------------------------

def served_fake(step: int = 30) -> SimpleNamespace:
    t = SimpleNamespace(commands=CommandQueue(), step=step, paused=False, stopping=False, total_steps=1000,
                        settings=Settings(), lr_scale=1.0)
    t.settings.define("lr_scale", float, lambda: t.lr_scale, lambda v: setattr(t, "lr_scale", v),
                      check=positive)
    t.settings.define("steps", int, lambda: t.total_steps, lambda v: setattr(t, "total_steps", v))
    return t


async def test_typing_a_change_and_a_prompt_when_attached(tmp_path):
    run_dir = tmp_path / "run"
    write_log(run_dir)
    t = served_fake()
    with serve_trainer(t, run_dir):
        app, src, steer = attached(run_dir)
        said = spy(app)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.runs[0].step == 30, "the log")
            await pilot.press("colon")
            hint = lambda: str(app.screen.query_one("#cmd-hint").render())
            await until(pilot, lambda: "lr_scale=1  steps=1000" in hint(), "the settings, over the socket")
            await pilot.press(*"lr_scale=0.5", "enter")
            await until(pilot, lambda: any("✓ lr_scale=0.5 accepted at step 30" in m for m in said), "the answer")
            assert drained(t.commands) == [Order(Command.SET, {"key": "lr_scale", "value": 0.5}, "attach")]
            await pilot.press("colon", *"lr_scale=-1", "enter")
            await until(pilot, lambda: any("✗ lr_scale=-1 refused: lr_scale must be positive" in m for m in said),
                        "the refusal")
            assert t.commands.empty()
            await pilot.press("g", *"def parse(", "enter")
            await until(pilot, lambda: not t.commands.empty(), "the sample request")
            (order,) = drained(t.commands)
            assert order.command is Command.SAMPLE and order.args["prompt"] == "def parse("
            # The run draws it and logs it; the window follows the log.
            append(run_dir, Change(step=31, key="lr_scale", old=1.0, new=0.5, source="attach"),
                   Sample(step=31, prompt="def parse(", text="def parse(x): ...", requested=True,
                          id=order.args["id"]))
            box = app.main.query_one("#sample-box")
            await until(pilot, lambda: "requested sample @ step 31" in str(box.border_title), "the sample")
            assert "def parse(x): ..." in str(app.main.query_one("#sample").render())
            assert any("lr_scale 1 → 0.5 at step 31" in m for m in said)
            assert [(m.step, m.kind) for m in app.runs[0].markers] == [(31, "change")]
            await pilot.press("q")


async def test_a_log_cannot_be_typed_to(tmp_path):
    app = DashboardApp(FixedSource([RunStart(step=0, run_name="r", config={}, n_params=1, device="cpu",
                                             total_steps=10)]))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("colon", "g")
        await pilot.pause()
        assert not isinstance(app.screen, CommandScreen)
        await until(pilot, lambda: any("a log cannot be steered" in m for m in toasts(app)), "the reason")
        assert not list(app.get_system_commands(app.screen)) or all(
            "Change a live setting" not in c.title for c in app.get_system_commands(app.screen))
        await pilot.press("q")


# --- the marks on the plots ----------------------------------------------------

def steered_log(run_dir: Path, steps: int = 200) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    sink = JsonlSink(run_dir / LOG_NAME)
    sink.emit(RunStart(step=0, run_name="steered", config={}, n_params=1, device="cpu", total_steps=steps))
    for s in range(1, steps + 1):
        sink.emit(TrainStep(step=s, train_loss=4.0 - s / 100, lr=1e-3 if s <= 100 else 5e-4,
                            tokens_per_sec=1.0, grad_norm=1.0, elapsed_s=s / 10, tokens=s * 64))
        if s == 50:
            sink.emit(Eval(step=50, val_loss=3.6, train_loss=3.5, elapsed_s=5.0, forced=True))
        if s == 100:
            sink.emit(Change(step=100, key="lr_scale", old=1.0, new=0.5, source="attach"))
        if s == 150:
            sink.emit(Paused(step=150))
            sink.emit(Resumed(step=150))
    sink.close()


def tick_column(lines: list[str], label: str) -> int:
    """The column of the x tick labelled ``label``."""
    row = next(i for i, line in enumerate(lines) if "└" in line)
    centre = lines[row + 1].index(label) + len(label) // 2
    return min((c for c, ch in enumerate(lines[row]) if ch == "┬"), key=lambda c: abs(c - centre))


async def test_the_viewer_marks_where_the_run_was_steered(tmp_path):
    from tui_trainer.ui.viewer import FileSource, viewer_app

    steered_log(tmp_path / "run")
    src = FileSource([tmp_path / "run"])
    src.prepare()
    app = viewer_app(src)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].step == 200, "the log")
        app.update_view(force_plots=True)
        await pilot.pause()
        loss = app.main.query_one("#loss", CurvePlot).render().plain.splitlines()
        top = loss[0]
        assert top.index("◆") == tick_column(loss, "50")    # eval now
        assert top.index("▼") == tick_column(loss, "100")   # lr_scale 1 → 0.5
        assert top.index("‖") == tick_column(loss, "150")   # pause (and its resume)
        lr = app.main.query_one("#lr", CurvePlot).render().plain.splitlines()
        assert "▼" in lr[0] and "◆" not in lr[0] and "‖" not in lr[0]  # changes only
        # Recent window (last 80 steps, from 120): the marks before it are gone, not pinned to the edge.
        app.window_steps = 80
        await pilot.press("w")
        await pilot.pause()
        top = app.main.query_one("#loss", CurvePlot).render().plain.splitlines()[0]
        assert "‖" in top and "▼" not in top and "◆" not in top
        await pilot.press("question_mark")
        assert "▼ a live setting changed" in str(app.screen.query_one("#help-text").render())
        await pilot.press("escape", "q")
    src.close()


def test_marks_follow_the_x_axis_and_plots_without_them_are_unchanged():
    """The same run with and without marks: the marks add glyphs in the top row
    and change nothing else; on the tokens axis they stay at their step."""
    recs = [TrainStep(step=s, train_loss=3.0 - s / 100, lr=1e-3, tokens_per_sec=1.0, grad_norm=1.0,
                      elapsed_s=float(s), tokens=s * 10) for s in range(1, 101)]
    plain, marked = RunSeries(), RunSeries()
    for r in recs:
        plain.apply(r)
        marked.apply(r)
    marked.apply(Checkpoint(step=40, path="x", reason="manual"))
    for mode in ("step", "tokens"):
        texts = []
        for run in (plain, marked):
            plot = CurvePlot("loss")
            plot.runs, plot.x_mode = [run], mode
            texts.append(plot._draw(60, 12).plain.splitlines())
        a, b = texts
        assert a[1:] == b[1:]
        diff = [c for c, (x, y) in enumerate(zip(a[0], b[0])) if x != y]
        assert len(diff) == 1 and b[0][diff[0]] == "■"
        assert diff[0] == tick_column(b, "40" if mode == "step" else "400")


async def test_the_prompt_box_suggests_the_runs_own_prompt(tmp_path):
    """g on a run trained on prose: the placeholder is its sample prompt (from
    its data), not a line of Python; a run that names none keeps the code one."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sink = JsonlSink(run_dir / LOG_NAME)
    sink.emit(RunStart(step=0, run_name="r", config={"sample_prompt": "forest dog \x1b[31m"}, n_params=1,
                       device="cpu", total_steps=1000))
    sink.emit(TrainStep(step=1, train_loss=5.0, lr=1e-3, tokens_per_sec=1000.0, grad_norm=1.0, elapsed_s=0.1,
                        tokens=64))
    sink.close()
    t = served_fake(step=1)
    with serve_trainer(t, run_dir):
        app, _, _ = attached(run_dir)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.runs[0].step == 1, "the log")
            await pilot.press("g")
            await until(pilot, lambda: isinstance(app.screen, CommandScreen), "the prompt box")
            shown = app.screen.query_one("#cmd-input").placeholder
            assert shown.startswith("forest dog ") and "[31m" in shown and "\x1b" not in shown, shown
            await pilot.press("enter")  # nothing typed: the run's own prompt, as the placeholder says
            await until(pilot, lambda: not t.commands.empty(), "the sample request")
            (order,) = drained(t.commands)
            assert order.command is Command.SAMPLE and order.args["prompt"] == "forest dog \x1b[31m"
            app.runs[0].config = {}
            await pilot.press("g")
            await until(pilot, lambda: isinstance(app.screen, CommandScreen), "the prompt box")
            assert app.screen.query_one("#cmd-input").placeholder == "def parse("
            await pilot.press("enter")  # no prompt of its own to fall back on: nothing sent
            await until(pilot, lambda: not isinstance(app.screen, CommandScreen), "the box closed")
            assert t.commands.empty()
            await pilot.press("q")

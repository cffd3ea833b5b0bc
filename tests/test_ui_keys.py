"""Keys that answer: what the footer and help offer in each mode and state,
q asking before it ends a running run, and a visible answer for every key.

Live runs here are ``uitools.FakeTrainer`` (no torch, no model): the app only
sees the ``TrainerSource`` protocol either way.
"""
from __future__ import annotations

import pytest
from textual.content import Content
from textual.widgets._footer import FooterKey

from test_attach import fake_trainer, write_log
from tui_trainer.control.channel import serve_trainer
from tui_trainer.records import RunEnd
from tui_trainer.curves.series import RunSeries
from tui_trainer.ui.sources import LocalSteering, TrainerSource
from tui_trainer.ui import keys
from tui_trainer.ui.app import DashboardApp
from tui_trainer.ui.attach import AttachSource, attach_app
from tui_trainer.ui.help_screen import HelpScreen
from uitools import FakeClock, FakeTrainer, FixedSource, fixed_records, until

SIZE = (80, 24)


def live_app(steps: int = 1_000_000, clock=None) -> tuple[DashboardApp, TrainerSource]:
    fake = FakeTrainer(steps=steps)  # the trainer and its run
    source = TrainerSource(fake, run=fake)
    app = DashboardApp(source, [RunSeries("fake-run")], steering=LocalSteering(source))
    if clock is not None:
        app.clock = clock
    return app, source


def view_app() -> DashboardApp:
    return DashboardApp(FixedSource(fixed_records(n=100)))


def footer(app) -> dict[str, str]:
    """The footer as drawn: key -> description, for the keys inside the screen."""
    out = {}
    for k in app.main.query(FooterKey):
        r = k.region
        if r.width and r.right <= app.size.width:
            out[k.key_display] = k.description
    return out


def toasts(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


def status(app) -> str:
    return str(app.main.query_one("#status").render())


async def help_text(app, pilot) -> str:
    await pilot.press("question_mark")
    await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
    await pilot.pause()
    text = str(app.screen.query_one("#help-text").render())
    await pilot.press("escape")
    return text.split("Reading the screen")[0]  # the keys and the mode's note


async def settled_footer(app, pilot, want: str) -> dict[str, str]:
    await until(pilot, lambda: want in footer(app).get("q", ""), f"the footer to say q {want}")
    return footer(app)


# --- footer and help, by mode and state -------------------------------------

async def test_live_running_footer_and_help():
    app, source = live_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].step > 3, "steps")
        f = await settled_footer(app, pilot, "stop run")
        assert list(f)[:2] == ["q", "?"]
        assert {"p", "e", "c", "s", "l", "w", "[ ]"} <= set(f) and "x" not in f
        text = await help_text(app, pilot)
        assert "stop the run (press twice; final checkpoint)" in text and "pause / resume" in text
        assert "close this window" not in text and "a log" not in text
        source.stop()


async def test_finished_live_run_offers_no_steering_and_q_quits():
    app, source = live_app(steps=20)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].state == "finished", "the end of the run")
        f = await settled_footer(app, pilot, "quit")
        assert not {"p", "e", "c", "x"} & set(f)
        text = await help_text(app, pilot)
        assert "pause" not in text and "evaluate" not in text and "stop the run" not in text
        await pilot.press("p")
        await until(pilot, lambda: any("the run has ended" in m for m in toasts(app)), "p's reason")
        await pilot.press("q")  # a finished run: no question
        await until(pilot, lambda: not app.is_running, "q to quit at once")
    assert isinstance(app.return_value, RunEnd) and app.return_value.status == "finished"


async def test_viewer_footer_help_and_sample_hint():
    app = DashboardApp(FixedSource(fixed_records(n=50, eval_every=1000)))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        f = await settled_footer(app, pilot, "quit")
        assert not {"p", "e", "c", "x"} & set(f)
        text = await help_text(app, pilot)
        assert "final checkpoint" not in text and "pause" not in text and "nothing here can be steered" in text
        assert "(e)" not in str(app.main.query_one("#sample").render())  # no e to press in a viewer
        await pilot.press("q")


async def test_attached_footer_and_help(tmp_path):
    run_dir = tmp_path / "run"
    write_log(run_dir)
    with serve_trainer(fake_trainer(), run_dir):
        src = AttachSource(run_dir)
        src.prepare()
        app = attach_app(src)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.runs[0].step == 30, "the log")
            f = await settled_footer(app, pilot, "close")
            assert {"p", "e", "c", "x", "?"} <= set(f) and f["x"] == "stop"
            text = await help_text(app, pilot)
            assert "close this window; the run goes on" in text and "x x (stop)" in text
            await pilot.press("q")


@pytest.mark.parametrize("mode", ["live", "view", "attach"])
async def test_60x20_shows_how_to_quit_and_get_help(mode, tmp_path):
    if mode == "attach":
        run_dir = tmp_path / "run"
        write_log(run_dir)
        server = serve_trainer(fake_trainer(), run_dir)
        src = AttachSource(run_dir)
        src.prepare()
        app, source = attach_app(src), None
    else:
        server = None
        app, source = live_app() if mode == "live" else (view_app(), None)
    try:
        async with app.run_test(size=(60, 20)) as pilot:
            await until(pilot, lambda: app.runs and app.runs[0].step > 0, "the first records")
            await until(pilot, lambda: {"q", "?"} <= set(footer(app)), "q and ? in the footer")
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
            await pilot.pause()
            box = app.screen.query_one("#help-box")
            assert box.region.right <= 60 and box.region.bottom <= 20  # nothing cut off
            assert app.screen.query_one("#help-text").region.right <= box.region.right
            await pilot.press("escape")
            if source is not None:
                source.stop()
    finally:
        if server is not None:
            server.close()


async def test_titles_fit_at_80x24_with_every_option_on():
    app = view_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("s", "l", "w")
        await pilot.pause()
        loss = app.main.query_one("#loss")
        title = Content.from_markup(loss.border_title).plain
        assert "ema log last 1.0k" in title and "…" not in title
        assert len(title) <= loss.size.width - 4


# --- q asks before it ends a running run --------------------------------------

async def test_live_q_once_keeps_running_twice_stops():
    clock = FakeClock()
    app, source = live_app(clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].step > 3, "steps")
        await pilot.press("q")
        await until(pilot, lambda: "q again: stop the run" in status(app), "the prompt")
        assert any("press q again to stop the run (final checkpoint)" in m for m in toasts(app))
        step = app.runs[0].step
        await until(pilot, lambda: app.runs[0].step > step + 3, "more steps: still running")
        assert app.is_running and not source.stopping
        clock.advance(3.5)  # the prompt's window is over: the next q asks again
        await until(pilot, lambda: "q again" not in status(app), "the prompt to expire")
        await pilot.press("q")
        await pilot.pause(0.2)
        assert app.is_running and not source.stopping
        await pilot.press("q")  # within the window: stop
        await until(pilot, lambda: not app.is_running, "the app to exit after the run stopped")
    assert app.return_value.status == "stopped"


async def test_live_ctrl_c_asks_too():
    app, source = live_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].step > 3, "steps")
        await pilot.press("ctrl+c")
        await pilot.pause(0.2)
        assert app.is_running and not source.stopping
        await pilot.press("ctrl+c")
        await until(pilot, lambda: not app.is_running, "the app to exit")
    assert app.return_value.status == "stopped"


# --- every key answers -----------------------------------------------------------

async def test_every_key_answers_in_the_live_dashboard():
    app, source = live_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].step > 3, "steps")
        said = lambda text: lambda: any(text in m for m in toasts(app))
        await pilot.press("p")
        assert "pause requested" in status(app) or "paused at step" in status(app)  # at once, then the record's
        await until(pilot, said("paused at step"), "p's answer")
        await pilot.press("p")
        await until(pilot, said("resumed at step"), "p's second answer")
        await pilot.press("e")
        await until(pilot, said("eval at step"), "e's answer")
        await pilot.press("c")
        await until(pilot, said("✓ checkpoint saved at step"), "c's answer")
        await until(pilot, lambda: "checkpoint saved" in status(app), "c's answer on the status line")
        await pilot.press("x")  # x stops only an attached run; here it is the x axis
        await until(pilot, lambda: "x axis: tokens" in status(app), "x's answer")
        await pilot.press("x", "x")  # wall time, then steps again
        await pilot.press("left_square_bracket")
        await until(pilot, said("oldest sample"), "[ at the only sample")
        await pilot.press("right_square_bracket")
        await until(pilot, said("newest sample"), "] at the newest sample")
        for key, flag in (("s", "ema"), ("l", "log"), ("w", "last")):
            await pilot.press(key)
            assert flag in app.main.query_one("#loss").border_title
        source.stop()


async def test_every_key_answers_in_the_viewer():
    app = DashboardApp(FixedSource(fixed_records(n=50, eval_every=1000)))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for key in "pec":
            n = len(toasts(app))
            await pilot.press(key)
            await until(pilot, lambda: len(toasts(app)) > n, f"an answer to {key}")
            assert "a log cannot be steered" in toasts(app)[-1]
        await pilot.press("x")  # x stops only an attached run; here it is the x axis
        await until(pilot, lambda: "x axis: tokens" in status(app), "x's answer")
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: "no sample in this log" in toasts(app)[-1], "[ without samples")
        await pilot.press("q")


def test_each_key_has_one_row_wherever_it_works():
    """The table is consistent: in every mode and state, whatever the window
    has (``keys.NEEDS``), each key has at most one row, q and ? always one
    (the footer shows what q does)."""
    for mode in keys.MODES:
        for state in keys.STATES:
            for caps in keys._CAPS:
                rows = keys.active(mode, state, caps)
                assert len({k.key for k in rows}) == len(rows), (mode, state, caps)
                assert {"q", "question_mark", "ctrl+c"} <= {k.key for k in rows}, (mode, state)



async def test_the_footer_shows_each_key_whole_or_not_at_all(tmp_path):
    """Attached at 80 columns the footer ended "[ ] sa" (at 90 "g generat"):
    Textual cut its last key at the edge.  Now the keys shown are whole, a
    prefix of the table's order, and a wider screen shows those left out."""
    run_dir = tmp_path / "run"
    write_log(run_dir)
    with serve_trainer(fake_trainer(), run_dir):
        app = attach_app(AttachSource(run_dir))
        async with app.run_test(size=SIZE) as pilot:
            await settled_footer(app, pilot, "close")

            def keys_shown() -> list[tuple[str, bool, int]]:
                return [(k.key_display, k.display, k.region.right) for k in app.main.query(FooterKey)]

            for width in (80, 90, 60, 200, 80):
                await pilot.resize_terminal(width, 24)
                await until(pilot, lambda: all(right <= width for _, shown, right in keys_shown() if shown)
                            and any(shown for _, shown, _ in keys_shown()), f"the footer fitted to {width}")
                got = keys_shown()
                shown = [key for key, on, _ in got if on]
                assert shown == [key for key, _, _ in got][:len(shown)], got  # a prefix: q and ? first
                assert shown[:2] == ["q", "?"], got
                if width == 200:
                    assert len(shown) == len(got), got
                else:
                    assert len(shown) < len(got), got  # attached, 80 or 90 columns: not every key
            await pilot.press("q")



async def test_attached_to_a_killed_run_the_footer_offers_no_steering(tmp_path):
    """kill -9 on a run leaves its socket file: attached, the status line
    said CRASHED while the footer still offered p, e, c, : and x, each then
    refused.  Nobody listens on the file: view only, as for any ended run."""
    import socket

    run_dir = tmp_path / "run"
    write_log(run_dir)  # no run_end, and no process holds its lock
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(run_dir / "control.sock"))  # a socket file no process listens on, as a kill leaves it
    stale.close()
    app = attach_app(AttachSource(run_dir))
    async with app.run_test(size=(200, 24)) as pilot:
        await until(pilot, lambda: app.runs and app.runs[0].state == "crashed", "the crash seen")
        f = await settled_footer(app, pilot, "close")
        assert not {"p", "e", "c", ":", "x", "g"} & set(f), f
        assert app.state == "offline"
        await pilot.press("q")

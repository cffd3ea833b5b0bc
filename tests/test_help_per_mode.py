"""Help, footer and hints list only what acts in the window at hand (issue 23).

One test per mode: the live dashboard, a window attached to a tui-trainer
run, one attached to an own loop (only the requests it registered, only its
own settings), the viewer, the runs table.  The runs browser's keys (esc
back to the table, { } and d between runs) are offered only where there are
runs to go back to or to compare.  ``g`` is in the footer where it fits.
"""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from textual.widgets import Input

from test_attach import attached, fake_trainer, write_log
from test_ui_keys import footer, help_text, live_app, view_app
from tui_trainer import cli
from tui_trainer.control.commands import Command, CommandQueue
from tui_trainer.control.channel import serve_trainer
from tui_trainer.records import RunEnd
from tui_trainer.run.folder import RunLock
from tui_trainer.control.settings import Settings
from tui_trainer.ui import keys
from tui_trainer.ui.runs_table import KEYS_HELP, RunsScreen
from tui_trainer.ui.sample_pane import SamplePane
from uitools import FixedSource, fixed_records, until

SIZE = (100, 30)
BROWSER_ONLY = ("esc", "{ }", "d")


def listed(text: str) -> set[str]:
    """The keys in a help screen's table: each row is two spaces, the key, two spaces."""
    return {m.group(1).strip() for m in re.finditer(r"^  (\S+(?: \S+)?)  ", text, re.M)}


async def test_live_help_lists_only_live_keys_and_the_footer_has_g():
    app, source = live_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].step > 0, "the run")
        text = await help_text(app, pilot)
        shown = listed(text)
        assert {"p", "e", "c", ":", "g", "q", "?"} <= shown, shown
        assert not shown & set(BROWSER_ONLY), shown
        assert "--no-mouse" not in text
        await until(pilot, lambda: "g" in footer(app), "g in the footer at 100 columns")
        assert footer(app)["g"] == "generate"
        await pilot.press("q", "q")
        await until(pilot, lambda: source.done, "the run to stop")


async def test_help_says_how_the_mouse_is_turned_on():
    app, source = live_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        text = str(app.screen.query_one("#help-text").render())
        assert "--mouse" in text and "--no-mouse" not in text and "off by default" in text
        await pilot.press("escape", "q", "q")
        await until(pilot, lambda: source.done, "the run to stop")


@pytest.fixture
def engine_run(tmp_path):
    run_dir = tmp_path / "run"
    write_log(run_dir)
    with RunLock(run_dir), serve_trainer(fake_trainer(), run_dir):
        yield run_dir


async def test_attached_help_lists_only_attach_keys(engine_run):
    app, _, _ = attached(engine_run)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].step == 30, "the log")
        shown = listed(await help_text(app, pilot))
        assert {"p", "e", "c", ":", "g", "x", "X", "q"} <= shown, shown
        assert not shown & set(BROWSER_ONLY), shown
        await pilot.press("q")


@pytest.fixture
def own_loop(tmp_path):
    """A run whose loop registered no on_eval, on_checkpoint or on_sample, and
    offers only ``lr`` and ``pause_at`` (as an own loop does)."""
    run_dir = tmp_path / "own"
    write_log(run_dir)
    settings = Settings()
    settings.define("lr", float, lambda: 6e-4, lambda v: None)
    settings.define("pause_at", int, lambda: None, lambda v: None)
    target = SimpleNamespace(commands=CommandQueue(), step=30, paused=False, stopping=False, total_steps=1000,
                             settings=settings,
                             refusal=lambda c: None if c not in (Command.EVAL, Command.CHECKPOINT, Command.SAMPLE)
                             else f"this run's loop takes no {c.value} requests")
    with RunLock(run_dir), serve_trainer(target, run_dir):
        yield run_dir


async def test_own_loop_help_hints_and_sample_pane_offer_only_what_it_has(own_loop):
    app, _, _ = attached(own_loop)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.typed.offers is not None, "the run's status answer")
        shown = listed(await help_text(app, pilot))
        assert {"p", ":", "x", "q"} <= shown, shown
        assert not shown & {"e", "c", "g", *BROWSER_ONLY}, shown
        assert not {"e", "c", "g"} & set(footer(app))
        pane = str(app.main.query_one(SamplePane).render())
        assert "at each eval" not in pane and "no sample yet" in pane
        await pilot.press("g")  # not offered: a reason, not silence
        await until(pilot, lambda: any("no sample requests" in str(n.message) for n in app._notifications),
                    "g's reason")
        await pilot.press("colon")
        await until(pilot, lambda: "lr=" in app.screen.query_one(Input).placeholder, "the run's own settings")
        placeholder = app.screen.query_one(Input).placeholder
        assert "lr_scale" not in placeholder and "steps=" not in placeholder and "sample" not in placeholder
        assert "pause_at" in placeholder
        hint = str(app.screen.query_one("#cmd-hint").render())
        assert "sample PROMPT" not in hint
        await pilot.press("escape", "q")


async def test_viewer_help_lists_no_steering_and_no_browser_keys():
    app = view_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        shown = listed(await help_text(app, pilot))
        assert {"q", "s", "l", "w", "x", "m"} <= shown, shown
        assert not shown & {"p", "e", "c", ":", "g", *BROWSER_ONLY}, shown
        await pilot.press("q")


async def test_several_runs_offer_the_keys_between_runs():
    from tui_trainer.ui.app import DashboardApp

    class TwoRuns(FixedSource):
        def poll(self):
            return [(i, r) for r in super().poll() for i in (0, 1)]

    app = DashboardApp(TwoRuns(fixed_records(n=50)))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(app.runs) == 2, "two runs")
        shown = listed(await help_text(app, pilot))
        assert {"{ }", "d"} <= shown and "esc" not in shown, shown  # no runs table to go back to
        await pilot.press("q")


def test_runs_table_help_lists_only_its_own_keys():
    """Every key the runs table's help names is bound on that screen."""
    names = {"enter": "enter", "escape": "escape", "↑ ↓": "up", "s  r": "s"}
    bound = {b.key for b in RunsScreen.BINDINGS} | {"enter", "up"}  # the table: enter opens, arrows move
    for key, _ in KEYS_HELP:
        for k in (names.get(key, key),) + ((("r",) if key == "s  r" else ())):
            k = {"/": "slash"}.get(k, k)
            assert k in bound, key
    assert not {"p", "e", "c", "colon", "g"} & {b.key for b in RunsScreen.BINDINGS}


def test_every_row_needs_a_word_the_app_can_have():
    assert {k.needs.lstrip("-") for k in keys.KEYS if k.needs} <= set(keys.NEEDS)


def test_the_summary_says_which_step_the_val_is_from(capsys, tmp_path):
    trainer = SimpleNamespace(best_val=1.2500, last_val_step=1040, cfg=SimpleNamespace(steps=1300))
    end = RunEnd(step=1103, status="stopped", elapsed_s=1.0, val_loss=1.2981)
    cli._say_how_it_ended(end, trainer, SimpleNamespace(folder=tmp_path), log=tmp_path / "losses.jsonl",
                          headless=False)
    out = capsys.readouterr().out
    assert "run stopped at step 1103 of 1300 | val 1.2981 @ 1,040 | best val 1.2500" in out

"""The runs browser and comparisons at 80x24: the table, sort, filter, selection,
overlay, the settings diff, labels, the eval table's keys, per-run samples,
the x axis, the inspector, the y range.  Pilot tests; no training."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from runmaker import append_train, live, write_run
from textual.content import Content
from textual.widgets import DataTable
from uitools import until

from tui_trainer import cli
from tui_trainer.curves.series import RunSeries
from tui_trainer.ui.sources import RecordSource
from tui_trainer.ui import keys
from tui_trainer.ui.app import DashboardApp
from tui_trainer.ui.browser import Browser
from tui_trainer.ui.inspector import Inspector
from tui_trainer.ui.metric_picker import MetricPicker
from tui_trainer.ui.plot import CurvePlot
from tui_trainer.ui.runs_table import RunsScreen
from tui_trainer.ui.settings_diff import SettingsDiff
from tui_trainer.ui.viewer import FileSource, viewer_app
from tui_trainer.ui.alert import Alert
from tui_trainer.ui.eval_log import EvalLog
from tui_trainer.ui.status_line import StatusLine

SIZE = (80, 24)


def folder_of_runs(root: Path) -> Path:
    """Five default-named runs (every name shortens to run-20261201 when cut),
    different in max_lr and n_layer; one crashed, one diverged."""
    ends = ["finished", "stopped", None, "diverged", "finished"]
    for i, end in enumerate(ends):
        write_run(root / f"run-20261201-1{i}3012", 200, eval_every=20, end=end,
                  config=dict(max_lr=[1e-3, 3e-3][i % 2], n_layer=2 + 2 * (i // 3)),
                  start_time=1.7e9 + i * 3600,
                  loss=lambda s, i=i: 2.0 + 3.0 * math.exp(-s / 20) + 0.1 * i)
    return root


def browser_app(root: Path) -> DashboardApp:
    return DashboardApp(RecordSource(), [], browser=Browser(root), title="runs")


async def table_ready(app, pilot, n: int | None = None) -> RunsScreen:
    def ready():
        s = app.screen
        return (isinstance(s, RunsScreen) and s.summaries and all(r.evals_read for r in s.summaries if r.ok)
                and (n is None or len(s.shown) == n))
    await until(pilot, ready, "the runs table")
    await pilot.pause()
    return app.screen


def rows(screen: RunsScreen) -> list[list[str]]:
    t = screen.query_one(DataTable)
    return [[c.plain if hasattr(c, "plain") else str(c) for c in t.get_row_at(i)] for i in range(t.row_count)]


def column(screen: RunsScreen, title: str) -> list[str]:
    t = screen.query_one(DataTable)
    titles = [str(c.label).rstrip(" ↑↓") for c in t.columns.values()]
    i = titles.index(title)
    return [r[i] for r in rows(screen)]


async def opened(app, pilot, n: int) -> None:
    await until(pilot, lambda: app.screen is app.main and len(app.runs) == n
                and all(r.evals for r in app.runs), f"{n} runs in the panes")
    await pilot.pause(0.6)  # the plots redraw at most twice a second
    app.update_view(force_plots=True)
    await pilot.pause()


def top_tick(plot_text: str) -> float:
    """The highest y tick label of a drawn plot."""
    ticks = [float(m.group(1)) for m in re.finditer(r"^\s*([0-9.]+)┤", plot_text, re.M)]
    return max(ticks)


def loss_title(app) -> str:
    return Content.from_markup(app.main.query_one("#loss").border_title).plain


# --- the table -----------------------------------------------------------------

async def test_table_shows_running_finished_and_crashed(tmp_path):
    write_run(tmp_path / "done", 30)
    write_run(tmp_path / "crashed", 30, end=None)
    going = write_run(tmp_path / "going", 30, end=None)
    (tmp_path / "not-a-run").mkdir()
    lock = live(going)
    try:
        app = browser_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            screen = await table_ready(app, pilot, 3)
            status = dict(zip(column(screen, "run"), column(screen, "status")))
            assert {k: v.strip() for k, v in status.items()} == {"done": "finished", "crashed": "crashed",
                                                                   "going": "running"}
            assert column(screen, "step") == ["30/30"] * 3
            head = str(screen.query_one("#runs-head").render())
            assert "3 runs in" in head and "1 running" in head
            assert "skipped 1: not-a-run (no losses.jsonl)" in str(screen.query_one("#runs-note").render())
            # A running run keeps moving, a new folder appears: no restart.
            append_train(going, 31, 45)
            write_run(tmp_path / "newer", 10)
            screen.scan()
            await until(pilot, lambda: len(screen.shown) == 4, "the new run")
            await until(pilot, lambda: "45/30" in column(screen, "step"), "the running run's new steps")
            await pilot.press("q")
    finally:
        lock.release()


async def test_sort_filter_select_and_diff(tmp_path):
    app = browser_app(folder_of_runs(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        screen = await table_ready(app, pilot, 5)
        labels = column(screen, "run")
        assert labels == ["143012", "133012", "123012", "113012", "103012"]  # newest first, distinct
        assert len(set(labels)) == 5
        # Sort: s cycles the column, r reverses.
        while screen.sort_key != "best":
            await pilot.press("s")
        assert column(screen, "run") == ["103012", "113012", "123012", "133012", "143012"]
        await pilot.press("r")
        assert column(screen, "run")[0] == "143012"
        # The settings that differ are columns; nothing that is the same is.
        titles = [str(c.label).rstrip(" ↑↓") for c in screen.query_one(DataTable).columns.values()]
        assert "max_lr" in titles and "n_layer" in titles and "batch_size" not in titles
        # Filter by a regex.
        await pilot.press("slash")
        await pilot.press(*"1[13]3")
        await pilot.press("enter")
        await until(pilot, lambda: len(screen.shown) == 2, "the filter")
        assert sorted(column(screen, "run")) == ["113012", "133012"]
        # Select both, look at their settings diff.
        await pilot.press("space", "space")
        assert len(screen.selected) == 2
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, SettingsDiff), "the diff")
        diff = app.screen
        assert list(diff.diff) == ["n_layer"] and diff.diff["n_layer"] == [4, 2]  # max_lr is the same in both
        await pilot.press("escape")
        # escape clears the filter (the selection stays).
        await pilot.press("escape")
        await until(pilot, lambda: len(screen.shown) == 5, "the filter cleared")
        assert len(screen.selected) == 2
        await pilot.press("q")


async def test_overlay_labels_evals_samples_and_back(tmp_path):
    app = browser_app(folder_of_runs(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        screen = await table_ready(app, pilot, 5)
        await pilot.press("space", "space", "space", "space", "space")  # all five
        await pilot.press("enter")
        await opened(app, pilot, 5)
        names = [r.name for r in app.runs]
        assert names == ["143012", "133012", "123012", "113012", "103012"]
        # The same labels in the legend, the eval table and the status lines.
        title = loss_title(app)
        assert all(n in title for n in names[:3])
        log = app.main.query_one(EvalLog)
        assert {log.get_row_at(i)[0].plain[2:] for i in range(log.row_count)} == set(names)
        status = str(app.main.query_one(StatusLine).render())
        assert all(n in status for n in names[:3])
        # Five runs, four lines: the last one still says every run's state.
        assert "103012" in status and "FINISHED" in status.splitlines()[-1]
        assert "CRASHED" in status  # no run_end, no live process: not RUNNING
        # The val column is inside the eval pane at 80 columns.
        cols = list(log.columns.values())
        assert [str(c.label) for c in cols][:3] == ["run", "step", "val"]
        assert sum(c.get_render_width(log) for c in cols[:3]) <= log.size.width
        # Keyboard scrolling of the eval table.
        await pilot.press("home")
        assert log.scroll_y == 0
        await pilot.press("pagedown")
        await until(pilot, lambda: log.scroll_y > 0, "page down")
        await pilot.press("end")
        await until(pilot, lambda: log.scroll_y == log.max_scroll_y, "end")
        await pilot.press("up")
        await until(pilot, lambda: log.scroll_y < log.max_scroll_y, "up")
        # Each run's samples: { } moves between runs.
        box = app.main.query_one("#sample-box")
        assert "143012" in Content.from_markup(box.border_title).plain
        await pilot.press("right_curly_bracket")
        await until(pilot, lambda: "133012" in Content.from_markup(box.border_title).plain, "the next run's samples")
        assert "run-20261201-133012 sample at 200" in str(app.main.query_one("#sample").render())
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: "sample at 180" in str(app.main.query_one("#sample").render()), "an older one")
        # The settings diff of the runs shown, one key away.
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, SettingsDiff), "the diff")
        assert set(app.screen.diff) == {"max_lr", "n_layer"}
        await pilot.press("escape")
        # Back to the table, and one run alone.
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen), "the table again")
        await pilot.press("escape")  # clears the selection
        await until(pilot, lambda: not screen.selected, "the selection cleared")
        await pilot.press("up", "enter")  # the cursor is on the last row, where the spaces left it
        await opened(app, pilot, 1)
        assert app.runs[0].name == "run-20261201-113012"  # alone: its whole name
        await pilot.press("q")


# --- looking closer ------------------------------------------------------------

async def test_x_axis_inspector_and_y_range(tmp_path):
    root = folder_of_runs(tmp_path)
    src = FileSource([root / "run-20261201-103012", root / "run-20261201-113012"])
    src.prepare()
    app = viewer_app(src)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: all(r.evals for r in app.runs), "the runs")
        assert [r.name for r in app.runs] == ["103012", "113012"]  # short labels outside the browser too
        loss = app.main.query_one("#loss", CurvePlot)
        # x: step -> tokens -> wall time -> step.
        for mode, words in (("tokens", "by tokens"), ("time", "by wall time"), ("step", "")):
            await pilot.press("x")
            assert loss.x_mode == mode and app.main.query_one("#lr", CurvePlot).x_mode == mode
            assert words in loss_title(app)
            await pilot.pause()
        # The inspector: a cursor along x, each run's values at it.
        await pilot.pause(0.6)
        await pilot.press("right")
        await until(pilot, lambda: loss.cursor is not None, "the cursor")
        insp = app.main.query_one(Inspector)
        await until(pilot, lambda: insp.has_class("-shown"), "the inspector")
        text = str(insp.render())
        assert "at step 200" in text and "train" in text and "ema" in text and "val" in text and "lr" in text
        assert "103012" in text and "113012" in text
        at = loss.cursor
        await pilot.press("left")
        await until(pilot, lambda: loss.cursor < at, "the cursor to move left")
        await pilot.press("shift+left")
        await until(pilot, lambda: "at step 1" in str(insp.render()), "ten columns left")
        await pilot.press("x")  # the inspector follows the x axis
        await until(pilot, lambda: "tokens" in str(insp.render()), "values by tokens")
        await pilot.press("escape")
        await until(pilot, lambda: loss.cursor is None and not insp.has_class("-shown"), "the inspector hidden")
        # The y range leaves out the first steps' spike (5.0 at step 1) until y.
        await pilot.press("x", "x")
        assert loss.focus and "all y" not in loss_title(app)
        await pilot.pause(0.6)
        app.update_view(force_plots=True)
        await pilot.pause()
        focused = loss._text.plain
        await pilot.press("y")
        assert not loss.focus and "all y" in loss_title(app)
        await pilot.pause()
        everything = loss._text.plain
        assert top_tick(everything) >= 4.5 > top_tick(focused)
        # The raw curve under the EMA; a longer and shorter window.
        await pilot.press("s")
        assert "ema" in loss_title(app)
        await pilot.press("minus")
        assert loss.window == 1000
        await pilot.press("plus")
        assert loss.window == 500 and "last 500" in loss_title(app)
        await pilot.press("q")


async def test_metric_picker_plots_another_number(tmp_path):
    a = write_run(tmp_path / "a", 50, extra=True)
    (tmp_path / "foreign.jsonl").write_text("".join(
        f'{{"iter": {s}, "loss": {3 - s / 50}, "grad_norm": {1 / s}, "my_metric": {s * 2}}}\n' for s in range(1, 41)))
    src = FileSource([a, tmp_path / "foreign.jsonl"])
    src.prepare()
    app = viewer_app(src)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: all(r.step for r in app.runs), "the runs")
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, MetricPicker), "the picker")
        names = app.screen.names
        assert names[:3] == ["learning rate", "grad_norm", "tokens_per_sec"] and {"acc", "my_metric"} <= set(names)
        await pilot.press("down", "enter")  # grad_norm
        lr = app.main.query_one("#lr", CurvePlot)
        await until(pilot, lambda: lr.metric == "grad_norm" and lr.metric_data, "grad norm read")
        assert [len(d[0]) for d in lr.metric_data] == [50, 40]
        assert "grad_norm" in Content.from_markup(lr.border_title).plain
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, MetricPicker), "the picker")
        await pilot.press("up", "enter")  # the picker opens at grad_norm; above it, the learning rate
        await until(pilot, lambda: lr.metric is None, "the learning rate")
        await pilot.press("q")


def test_x_is_the_x_axis_where_it_stops_nothing():
    x_axis = ("x_axis",)
    assert keys.works("panes", x_axis, "view", "ended") and keys.works("panes", x_axis, "live", "running")
    assert keys.works("stop_run", (), "attach", "running")
    x_rows = [k for k in keys.KEYS if k.key == "x" and k.works("attach", "running")]
    assert [k.action for k in x_rows] == ["stop_run"]  # attached, x still stops (twice); X is the x axis
    assert any(k.key == "X" and "x_axis" in k.action and k.help for k in keys.active("attach", "running"))
    assert not keys.works("panes", x_axis, "attach", "ended")  # x, attached: never the x axis


def test_status_lines_say_how_many_runs_they_cannot_show():
    runs = [RunSeries(f"run-{i}") for i in range(12)]
    line = StatusLine()
    line._size = None
    for r in runs:
        r.state = "finished"
    text = line._others(runs, 3).plain
    assert "not shown" in text and "finished" in text


# --- the command line ------------------------------------------------------------

def test_view_of_a_folder_of_runs_needs_a_terminal(tmp_path, capsys):
    folder_of_runs(tmp_path)
    code = cli.main(["view", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "needs a terminal" in err and len(err.strip().splitlines()) == 1


def test_view_without_outputs_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["view"])
    err = capsys.readouterr().err
    assert code == 2 and "no ./outputs here" in err


@pytest.mark.parametrize("folder", ["empty", "run"])
def test_runs_folder_is_only_a_folder_of_runs(tmp_path, folder):
    (tmp_path / "empty").mkdir()
    write_run(tmp_path / "run", 3)
    assert cli.runs_folder([str(tmp_path / folder)]) is None
    assert cli.runs_folder([str(tmp_path)]) == tmp_path


async def test_filter_matches_each_field_alone_and_says_a_bad_regex(tmp_path):
    for i, name in enumerate(["r7", "r78", "r789"]):
        write_run(tmp_path / name, 10, start_time=1.7e9 + i)
    app = browser_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await table_ready(app, pilot, 3)
        await pilot.press("slash", *"^r78$", "enter")
        await until(pilot, lambda: len(screen.shown) == 1, "the anchored filter")
        assert column(screen, "run") == ["r78"]
        await pilot.press("slash", *"^finished$", "enter")  # the status field alone
        await until(pilot, lambda: len(screen.shown) == 3, "the status filter")
        for bad in ("[", "a{99999999999}", "(" * 1200 + ")" * 1200):
            await pilot.press("slash")
            screen.query_one("#runs-filter").value = bad
            await pilot.press("enter")
            await until(pilot, lambda: any("not a regex" in str(n.message) for n in app._notifications),
                        "the bad regex said")
            app.clear_notifications()
            await pilot.press("escape")
            assert screen.pattern is not None and screen.pattern.pattern == "^finished$"
        assert len(screen.shown) == 3
        await pilot.press("q")


@pytest.mark.parametrize("width", [80, 64, 120])
async def test_no_number_is_cut_at_the_edge(tmp_path, width):
    """At 80x24 max_lr 0.01 and 0.005 read 0.0 and 0.00 (cut by the screen's
    edge): every column is shown whole, or named in the head as left out."""
    for name, steps, lr, cfg in (("small", 1200, 0.01, dict(n_layer=4, n_embd=128)),
                                 ("wide", 240, 0.005, dict(n_layer=2, n_embd=2))):
        write_run(tmp_path / name, steps, eval_every=steps, config=dict(max_lr=lr, **cfg), samples=False)
    app = browser_app(tmp_path)
    async with app.run_test(size=(width, 24)) as pilot:
        screen = await table_ready(app, pilot, 2)
        table = screen.query_one(DataTable)
        assert table.virtual_size.width <= table.size.width  # nothing runs past the edge
        titles = [str(c.label).rstrip(" ↑↓") for c in table.columns.values()]
        head = str(screen.query_one("#runs-head").render())
        left_out = head.split("no room for ", 1)[1].split(" · ")[0].split(", ") if "no room for " in head else []
        for title in ("run", "status", "step", "best val", "train", "n_layer", "max_lr", "@", "tokens", "started"):
            assert (title in titles) != (title in left_out), title  # shown, or said to be left out
        assert "max_lr" in titles or width < 80
        if "max_lr" in titles:
            assert sorted(column(screen, "max_lr"), key=float) == ["0.005", "0.01"]
        assert "run" in titles and "status" in titles
        await pilot.resize_terminal(width + 40, 24)  # more room: more columns, at once
        await until(pilot, lambda: len(table.columns) > len(titles) + 1 or not screen.hidden, "the wider table")
        assert table.virtual_size.width <= table.size.width
        await pilot.press("q")


async def test_an_opened_run_deleted_while_shown_is_said(tmp_path):
    import shutil
    write_run(tmp_path / "gone", 30)
    write_run(tmp_path / "kept", 30, start_time=1.7e9 + 10)
    app = browser_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await table_ready(app, pilot, 2)
        await pilot.press("a", "enter")
        await opened(app, pilot, 2)
        status = lambda: str(app.main.query_one(StatusLine).render())  # noqa: E731
        banner = lambda: str(app.main.query_one(Alert).render())  # noqa: E731
        assert "gone" not in banner() and "following 2 files" in status()
        shutil.rmtree(tmp_path / "gone")
        await until(pilot, lambda: "its log is gone (folder missing)" in banner(), "the deleted run said")
        assert "following 2 files" not in status() and "FINISHED" in status()  # it did finish; its log is gone
        await pilot.press("q")

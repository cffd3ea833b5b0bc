"""The runs browser: ``tui-trainer view DIR`` (``view`` alone: ``./outputs``).

A table of the run folders in DIR (``runs.Scanner``: heads, tails and eval
lines, never whole logs), sortable by any column (``f``: by family, a
run then its forks), filtered by a regex;
runs selected with space open overlaid in the dashboard's panes with enter
(the row under the cursor alone when none is selected), and escape there
comes back here.  The table re-scans every ``REFRESH_S`` in a thread, so
running runs keep moving and a new run folder appears without a restart.

The app is the dashboard (``app.DashboardApp``) given a ``browser.Browser``:
the table is a screen over the dashboard's panes; opening runs hands the
panes a new file source (``viewer.FileSource``) and uncovers them.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static

from ..runs import RunSummary, settings_diff
from . import safe
from .plot import rich_colour
from .run_columns import COLUMNS, PADDING, Column, fit_columns, matches, setting_columns
from .settings_diff import SettingsDiff
from .footer import KeysFooter
from .help_screen import key_table

REFRESH_S = 2.0       # a re-scan: what changed is read again, the rest is a stat and a lock test
MAX_SETTING_COLUMNS = 6
MARK = "●"
KEYS_HELP = (
    ("enter", "open the selected runs overlaid (none selected: the one under the cursor)"),
    ("o", "open the run under the cursor alone"),
    ("space", "select / unselect the run under the cursor"),
    ("a", "select every run shown / none"),
    ("s  r", "sort by the next column / reverse the order (or click a column's title)"),
    ("f", "group by family: each run, then its forks (label ← parent@step) under it, forks of forks under those"),
    ("/", "filter by a regex on the label, folder, name and status (empty: all)"),
    ("d", "the settings that differ between the selected runs (none selected: all shown)"),
    ("escape", "clear the filter, then the selection"),
    ("↑ ↓", "move; columns the screen has no room for are left out, and the head names them"),
    ("q", "quit"),
)


class RunsTable(DataTable):
    """The table itself: enter opens (the footer says so)."""

    BINDINGS = [Binding("enter", "select_cursor", "open")]


class RunsScreen(ModalScreen[None]):
    """The table of runs.  Modal, so the dashboard's keys do not act under it."""

    BINDINGS = [
        Binding("q", "app.quit", "quit"),
        Binding("question_mark", "help", "help"),
        Binding("space", "select", "select"),
        Binding("slash", "filter", "filter"),
        Binding("s", "sort", "sort"),
        Binding("r", "reverse", "reverse"),
        Binding("f", "family", "family", show=False),
        Binding("d", "diff", "diff"),
        Binding("a", "select_all", "all", show=False),
        Binding("o", "open_one", "open one", show=False),
        Binding("escape", "clear", "clear", show=False),
    ]

    def __init__(self, browser: Any) -> None:
        super().__init__()
        self.browser = browser
        self.summaries: list[RunSummary] = []
        self.shown: list[RunSummary] = []
        self.selected: set[Path] = set()
        self.sort_key = "started"          # newest first
        self.reverse = True
        self.pattern: re.Pattern | None = None
        self.settings: list[str] = []
        self.hidden: list[str] = []   # titles of the columns the screen has no room for
        self._drawn: tuple | None = None
        self._scans = 0

    def compose(self) -> ComposeResult:
        with Vertical(id="runs-box"):
            yield Static(id="runs-head")
            yield RunsTable(id="runs-table", cursor_type="row", zebra_stripes=True)
            yield Input(id="runs-filter", placeholder="regex, e.g. lr|wide  (enter applies, escape cancels)")
            yield Static(id="runs-note")
        yield KeysFooter(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.fixed_columns = 2  # the mark and the label stay while the table scrolls sideways
        self.query_one("#runs-filter").display = False
        self._head()
        self.scan(first=True)
        self.timer = self.set_interval(REFRESH_S, self.scan)

    def on_screen_suspend(self) -> None:
        self.timer.pause()

    def on_screen_resume(self) -> None:
        self.timer.resume()
        self.scan()
        self.query_one(DataTable).focus()

    # --- scanning (a thread) ---
    @work(thread=True, exclusive=True, group="scan")
    def scan(self, first: bool = False) -> None:
        scanner = self.browser.scanner
        if first:  # the table at once, from heads and tails; best val losses next
            quick = scanner.scan(evals=False)
            self.app.call_from_thread(self.show_runs, quick)
        got = scanner.scan()
        self.app.call_from_thread(self.show_runs, got)

    def show_runs(self, summaries: list[RunSummary]) -> None:
        self.summaries = summaries
        self._scans += 1
        self._redraw()

    # --- drawing ---
    def _runs(self) -> list[RunSummary]:
        return [s for s in self.summaries if s.ok]

    def _filtered(self) -> list[RunSummary]:
        runs = self._runs()
        if self.pattern is not None:
            runs = [s for s in runs if matches(self.pattern, s)]
        col = self._sort_column()
        known = [s for s in runs if col.sort(s) is not None]
        unknown = [s for s in runs if col.sort(s) is None]
        known.sort(key=col.sort, reverse=self.reverse)
        return known + unknown

    def _columns(self) -> list[Column]:
        """The fixed columns, the settings that differ after the train loss (what
        tells runs apart comes before tokens, time and date at 80 columns)."""
        settings = setting_columns(self.settings)
        at = [c.key for c in COLUMNS].index("train") + 1
        return list(COLUMNS[:at]) + settings + list(COLUMNS[at:])

    def _sort_column(self) -> Column:
        cols = self._columns()
        return next((c for c in cols if c.key == self.sort_key), cols[-1])

    def _redraw(self) -> None:
        diff = settings_diff(self._runs())
        self.settings = list(diff)[:MAX_SETTING_COLUMNS]
        self.shown = self._filtered()
        cols = self._columns()
        cells = [[c.cell(s).plain for c in cols] for s in self.shown]
        room = (self.size.width or self.app.size.width) - 1 - (1 + PADDING)  # the scrollbar, the mark
        cols, cells, self.hidden = fit_columns(cols, cells, room, self._sort_column().key)
        rows = [(str(s.path), tuple(row), s.path in self.selected) for s, row in zip(self.shown, cells)]
        drawn = (tuple(c.key for c in cols), self.sort_key, self.reverse, tuple(rows))
        self._head()
        self._note()
        if drawn == self._drawn:
            return
        self._drawn = drawn
        table = self.query_one(DataTable)
        at = table.cursor_row
        key = self._key_at(at)
        table.clear(columns=True)
        table.add_column("", key="mark", width=1)
        sort = self._sort_column().key
        for c in cols:
            arrow = (" ↓" if self.reverse else " ↑") if c.key == sort else ""
            table.add_column(Text(c.title + arrow, style="bold" if arrow else ""), key=c.key)
        for s in self.shown:
            mark = Text(MARK, style=f"bold {rich_colour(self._colour(s))}") if s.path in self.selected else Text(" ")
            table.add_row(mark, *[c.cell(s) for c in cols], key=str(s.path))
        if self.shown:
            keys = [str(s.path) for s in self.shown]
            table.move_cursor(row=keys.index(key) if key in keys else min(at, len(keys) - 1), animate=False)

    def on_resize(self) -> None:
        self._redraw()

    def _key_at(self, row: int) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count or row < 0:
            return None
        try:
            return str(table.coordinate_to_cell_key((row, 0)).row_key.value)
        except Exception:  # noqa: BLE001 - a row gone between the draw and now
            return None

    def _colour(self, s: RunSummary) -> int:
        """The colour this run will have overlaid: its place among the selected."""
        chosen = [r for r in self.shown if r.path in self.selected]
        return chosen.index(s) if s in chosen else 0

    def _head(self) -> None:
        runs = self._runs()
        live = sum(s.live for s in runs)
        folder = safe.plain(str(self.browser.folder), 60, newlines=False)
        bits = [f"{len(runs)} run{'s' if len(runs) != 1 else ''} in {folder}"]
        if live:
            bits.append(f"{live} running")
        if self.pattern is not None:
            bits.append(f"{len(self.shown)} match /{safe.plain(self.pattern.pattern, 30, newlines=False)}/")
        if self.selected:
            bits.append(f"{len(self.selected)} selected")
        if self.hidden:
            bits.append(f"no room for {', '.join(safe.plain(h, 20) for h in self.hidden)}")
            if self._sort_column().title in self.hidden:
                bits.append(f"sorted by {safe.plain(self._sort_column().title, 20)}")
        if self._scans and not all(s.evals_read for s in runs):
            bits.append("reading evals…")
        self.query_one("#runs-head", Static).update(Text(" · ".join(bits), no_wrap=True, overflow="ellipsis"))

    def _note(self) -> None:
        skipped = [s for s in self.summaries if not s.ok]
        note = self.query_one("#runs-note", Static)
        if self.browser.scanner.error:
            note.update(Text(safe.plain(self.browser.scanner.error, 200), style="bold"))
        elif not self._runs() and self._scans:
            note.update(Text("no run folders here yet; a run started with --out in this folder appears by itself",
                             style="dim"))
        elif skipped:
            what = ", ".join(f"{safe.plain(s.folder, 24)} ({safe.plain(s.problem, 40)})" for s in skipped[:3])
            more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
            note.update(Text(f"skipped {len(skipped)}: {what}{more}", style="dim", no_wrap=True, overflow="ellipsis"))
        else:
            note.update("")
        note.display = bool(self.browser.scanner.error or skipped or (not self._runs() and self._scans))

    # --- keys ---
    def _cursor_run(self) -> RunSummary | None:
        key = self._key_at(self.query_one(DataTable).cursor_row)
        return next((s for s in self.shown if str(s.path) == key), None)

    def action_select(self) -> None:
        s = self._cursor_run()
        if s is None:
            return
        self.selected ^= {s.path}
        self._redraw()
        self.query_one(DataTable).action_cursor_down()

    def action_select_all(self) -> None:
        shown = {s.path for s in self.shown}
        self.selected = set() if shown <= self.selected else self.selected | shown
        self._redraw()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        key = str(event.column_key.value)
        if key == "mark":
            return
        if key == self._sort_column().key:
            self.reverse = not self.reverse
        else:
            self.sort_key, self.reverse = key, False
        self._redraw()

    def action_open(self) -> None:
        chosen = [s for s in self.shown if s.path in self.selected]
        hidden = len(self.selected) - len(chosen)
        if hidden:
            self.app.notify(f"{hidden} selected run{'s are' if hidden > 1 else ' is'} hidden by the filter "
                            "and not opened", severity="warning", markup=False)
        if not chosen:
            self.action_open_one()
            return
        self.browser.open(self.app, chosen)

    def action_open_one(self) -> None:
        s = self._cursor_run()
        if s is None:
            self.app.notify("no run to open", severity="warning", markup=False)
            return
        self.browser.open(self.app, [s])

    def action_sort(self) -> None:
        cols = self._columns()
        keys = [c.key for c in cols]
        self.sort_key = keys[(keys.index(self._sort_column().key) + 1) % len(keys)]
        self.reverse = False
        self._redraw()
        self.app.notify(f"sorted by {self._sort_column().title}", markup=False, timeout=2)

    def action_family(self) -> None:
        """Sort by the run column, whose order is the family's (``RunSummary.family``): a parent, then its forks."""
        self.sort_key, self.reverse = "run", False
        self._redraw()
        self.app.notify("grouped by family: each run, then its forks", markup=False, timeout=2)

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self._redraw()

    def action_filter(self) -> None:
        box = self.query_one("#runs-filter", Input)
        box.display = True
        box.value = self.pattern.pattern if self.pattern is not None else ""
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        try:
            self.pattern = re.compile(text, re.IGNORECASE) if text else None
        except (re.error, OverflowError, RecursionError, ValueError) as e:
            self.app.notify(f"not a regex: {safe.plain(str(e) or type(e).__name__, 80, newlines=False)}",
                            severity="error", markup=False)
            return
        self._close_filter()
        self._redraw()

    def _close_filter(self) -> None:
        box = self.query_one("#runs-filter", Input)
        box.display = False
        self.query_one(DataTable).focus()

    def action_clear(self) -> None:
        box = self.query_one("#runs-filter", Input)
        if box.display:
            self._close_filter()
        elif self.pattern is not None:
            self.pattern = None
            self._redraw()
        elif self.selected:
            self.selected = set()
            self._redraw()

    def action_diff(self) -> None:
        chosen = [s for s in self.shown if s.path in self.selected] or self.shown
        colours = [self._colour(s) if s.path in self.selected else i for i, s in enumerate(chosen)]
        self.app.push_screen(SettingsDiff([s.label for s in chosen], settings_diff(chosen), colours))

    def action_help(self) -> None:
        self.app.push_screen(BrowserHelp())


class BrowserHelp(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close", show=False)]

    def compose(self) -> ComposeResult:
        t = key_table("The runs table", KEYS_HELP)
        t.append("\nStatus: running or paused while a process holds the run's lock; otherwise how it ended "
                 "(finished, stopped, diverged, failed, killed), crashed when it ended without a run_end, "
                 "log for someone else's log. best val: the lowest val loss and its step (…: still reading). "
                 "Columns after train: the settings that differ between the runs listed. A column the screen has "
                 "no room for is left out and named above the table, never cut at its edge. "
                 "Opened runs: escape comes back here.")
        with VerticalScroll(id="help-box") as box:
            box.border_title = "runs browser help"
            box.border_subtitle = "escape or ? closes"
            yield Static(t, id="help-text")

"""``tui-trainer view PATH... [--follow]``: the dashboard's panes over run logs.

The widgets and the app are the live dashboard's; only the source differs:
``logsource.LogSource`` reads (and with ``--follow`` tails) the files in a
thread of its own and hands the app whole series (a load, or a re-read after
truncation) or the records appended since the last poll.  Several paths are
several runs: their curves overlay in one plot, each in its own colour, named
in the plot's title.  Nothing can be steered from here: a log is not a run.
"""
from __future__ import annotations

from pathlib import Path

from ..logsource import LogSource
from .app import DashboardApp, RecordSource
from .widgets import EvalLog, StatusLine


class FileSource(LogSource, RecordSource):
    """``LogSource`` as the dashboard's ``RecordSource`` (see logsource.py)."""

    can_steer = False


class ViewerApp(DashboardApp):
    """The dashboard, fed from files; redraws when a run is loaded or re-read."""

    # Absolute, so a subclass defined elsewhere (a benchmark, a test) finds the stylesheet.
    CSS_PATH = str(Path(__file__).with_name("dashboard.tcss"))

    def __init__(self, source: FileSource, title: str | None = None):
        super().__init__(source, source.runs, title=title or _title(source))
        self.files = source
        source.on_reset = self._clear_evals

    def poll_source(self) -> None:
        super().poll_source()
        if self.files.swapped and self.main.query(StatusLine):
            self.files.swapped = False  # whole series arrived without records: redraw now
            self.update_view(force_plots=True)

    def _clear_evals(self, run: int) -> None:
        """A run was read again from the start (truncated, replaced, resumed
        over): the eval rows shown are no longer its rows."""
        log = self.main.query_one(EvalLog)  # the panes' screen, even with help open
        log.clear(columns=True)
        log._multi = None  # makes the next show() rebuild its columns and rows (see viewer-requests.md)
        log._seen, log._best = [], []
        self._evals_seen = -1


def _title(source: LogSource) -> str:
    names = [r.name for r in source.runs]
    verb = "follow" if source.follow else "view"
    if len(names) == 1:
        return f"tui-trainer · {verb} {names[0]}"
    return f"tui-trainer · {verb} {len(names)} runs"


def run_viewer(paths: list[Path], follow: bool = False, mouse: bool = True) -> int:
    """Show the logs until q; bad paths raise ``UserError`` (exit 2) before any screen."""
    source = FileSource(paths, follow=follow)
    try:
        source.prepare()
        ViewerApp(source).run(mouse=mouse)
    finally:
        source.close()
    return 0

"""``tui-trainer view PATH... [--follow]``: the dashboard's panes over run logs.

The app is the live dashboard's, given a file source and no steering:
``logs.source.LogSource`` reads (and with ``--follow`` tails) the files in a
thread of its own and hands the app whole series (a load, or a re-read after
truncation) or the records appended since the last poll.  Several paths are
several runs: their curves overlay in one plot, each in its own colour, named
in the plot's title.
"""
from __future__ import annotations

from pathlib import Path

from ..logs.source import LogSource
from ..sources import RecordSource
from .app import DashboardApp
from .safe import name


class FileSource(LogSource, RecordSource):
    """``LogSource`` as the dashboard's ``RecordSource``."""

    def take_swapped(self) -> bool:
        swapped, self.swapped = self.swapped, False
        return swapped


def viewer_app(source: FileSource, title: str | None = None) -> DashboardApp:
    """The dashboard over ``source``'s runs, with nothing to steer."""
    return DashboardApp(source, source.runs, title=title or _title(source))


def _title(source: FileSource) -> str:
    verb = "follow" if source.follow else "view"
    if len(source.runs) == 1:
        return f"tui-trainer · {verb} {name(source.runs[0].name, 40)}"
    return f"tui-trainer · {verb} {len(source.runs)} runs"


def run_viewer(paths: list[Path], follow: bool = False, mouse: bool = True) -> int:
    """Show the logs until q; bad paths raise ``UserError`` (exit 2) before any screen."""
    source = FileSource(paths, follow=follow)
    try:
        source.prepare()
        viewer_app(source).run(mouse=mouse)
    finally:
        source.close()
    return 0

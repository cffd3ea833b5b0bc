"""``tui-trainer view DIR``: the dashboard given a folder of runs to browse.

``Browser`` is the capability the app is given: it puts the runs table
(``runs_table.RunsScreen``) over the panes, and opens the runs chosen there
as a followed file source (``viewer.FileSource``), labelled as in the table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..runs import RunSummary, Scanner
from .sources import RecordSource
from . import safe
from .app import DashboardApp
from .runs_table import RunsScreen
from .viewer import FileSource


class Browser:
    """What ``view DIR`` gives the dashboard app: a folder of runs to browse,
    and the source of the runs opened from it."""

    def __init__(self, folder: Path, follow: bool = True):
        self.folder = Path(folder)
        self.scanner = Scanner(self.folder)
        self.follow = follow
        self.screen: RunsScreen | None = None

    def show(self, app: Any) -> None:
        """Put the table over the app's panes."""
        if self.screen is None:
            self.screen = RunsScreen(self)
            app.install_screen(self.screen, "runs")
        app.push_screen("runs")

    def open(self, app: Any, runs: list[RunSummary]) -> None:
        """Show ``runs`` in the app's panes; a log that cannot be read is said, and the table stays."""
        try:
            source, title = self.source_for(runs)
        except Exception as e:  # noqa: BLE001 - LogError and the like: one toast, not a traceback
            app.say(str(e), ok=False)
            return
        app.pop_screen()
        app.controls.open_runs(source, title)

    def source_for(self, runs: list[RunSummary]) -> tuple[Any, str]:
        """A followed file source over ``runs`` (labelled as in the table), and a title."""
        source = FileSource([s.path for s in runs], follow=self.follow, labels=[s.label for s in runs])
        source.prepare()
        what = safe.name(runs[0].label, 40) if len(runs) == 1 else f"{len(runs)} runs"
        return source, f"tui-trainer · {what} in {safe.plain(str(self.folder), 60, newlines=False)}"


def run_browser(folder: Path, mouse: bool = True) -> int:
    """Browse ``folder`` until q."""
    browser = Browser(folder)
    app = DashboardApp(RecordSource(), [], browser=browser,
                       title=f"tui-trainer · runs in {safe.plain(str(folder), 60, newlines=False)}")
    try:
        app.run(mouse=mouse)
    finally:
        close = getattr(app.source, "close", None)
        if close is not None:
            close()
    return 0

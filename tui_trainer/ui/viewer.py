"""``tui-trainer view PATH... [--follow]``: the dashboard's panes over run logs.

The app is the live dashboard's, given a file source and no steering:
``logs.source.LogSource`` reads (and with ``--follow`` tails) the files in a
thread of its own and hands the app whole series (a load, or a re-read after
truncation) or the records appended since the last poll.  Several paths are
several runs: their curves overlay in one plot, each in its own colour, named
in the plot's title.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ..logs.lineage import prefixes
from ..logs.paths import locate
from ..logs.source import LogSource
from ..records import Record, RunStart
from ..runs import short_labels
from ..curves.series import RunSeries
from .sources import RecordSource
from .app import DashboardApp
from .safe import name


class FileSource(LogSource, RecordSource):
    """``LogSource`` as the dashboard's ``RecordSource``.

    Several runs are named by their shortest distinct labels
    (``runs.short_labels``; ``labels`` gives them, as the runs browser does),
    the same in the legend, the eval table and the status lines."""

    def __init__(self, paths: list[Path], follow: bool = False, labels: list[str] | None = None):
        self.labels = labels
        self._names: list[str] = []
        super().__init__(paths, follow)
        self._names = [r.name for r in self.runs]
        self._label()

    def prepare(self) -> None:
        """Load the logs; a fork's ancestors come after them, faint, up to the
        fork step (one shared by siblings once, up to the latest fork step)."""
        super().prepare()
        self.notes: dict[int, str] = {}
        logs = [locate(f.arg) for f in self.feeds]
        shown = {str(p.resolve()) for p in logs if p is not None}
        found, notes = prefixes(logs, shown)
        for feed, series, note in zip(list(self.feeds), found, notes):
            self.runs.extend(series)
            if note:
                self.notes[feed.index] = note
                self.runs[feed.index].message = note

    def _install(self, i: int, series: RunSeries, final: bool = True) -> None:
        if getattr(self, "notes", {}).get(i) and not series.message:
            series.message = self.notes[i]
        if self._names:
            self._names[i] = series.name  # the run's own name (run_start), before its label
        feed = self.feeds[i]
        if feed.holder is None:
            feed.look()
        super()._install(i, series, final)
        self._looked(i)
        self._label()

    def _looked(self, i: int) -> None:
        """Running only while a process holds the run's lock, never guessed:
        without one and without a run_end, a run of ours crashed, and someone
        else's log is just a log (the runs table's words); a deleted log is
        said on the run's banner."""
        feed, series = self.feeds[i], self.runs[i]
        if feed.holder is False and series.detail != "preview":
            series.unheld = "crashed" if series.started else "log"
        else:
            series.unheld = ""
        if feed.gone:
            series.message = f"its log is gone ({feed.gone}): nothing more will come; what was read stays shown"
        elif series.message.startswith("its log is gone"):
            series.message = ""
        super()._looked(i)

    def _label(self) -> None:
        if len(self.runs) < 2 or not self._names:
            return
        labels = self.labels or short_labels(self._names)
        for r, lab in zip(self.runs, labels):
            r.name = lab

    def poll(self) -> list[tuple[int, Record]]:
        out = super().poll()
        if self.alerts is not None:  # --notify, --on-event: the records that arrive, not the history
            for i, r in out:
                if i == 0:
                    self.alerts.emit(r)
        if len(self.runs) > 1:  # a resumed run's run_start must not rename it
            out = [(i, replace(r, run_name=self.runs[i].name) if isinstance(r, RunStart) else r) for i, r in out]
        return out

    def take_swapped(self) -> bool:
        swapped, self.swapped = self.swapped, False
        return swapped


def viewer_app(source: FileSource, title: str | None = None) -> DashboardApp:
    """The dashboard over ``source``'s runs, with nothing to steer."""
    return DashboardApp(source, source.runs, title=title or _title(source))


def _title(source: FileSource) -> str:
    verb = "follow" if source.follow else "view"
    if len(source.feeds) == 1:
        return f"tui-trainer · {verb} {name(source.runs[0].name, 40)}"
    return f"tui-trainer · {verb} {len(source.feeds)} runs"


def run_viewer(paths: list[Path], follow: bool = False, mouse: bool = True,
               before_screen: Callable[[], None] | None = None, alerts: Any = None) -> int:
    """Show the logs until q; bad paths raise ``UserError`` (exit 2) before any
    screen, and so may ``before_screen`` (the CLI checks for a terminal).
    ``alerts``: an ``alerts.AlertSink`` for the first run's new records."""
    source = FileSource(paths, follow=follow)
    try:
        source.prepare()
        if before_screen is not None:
            before_screen()
        watch_alerts(source, alerts)
        viewer_app(source).run(mouse=mouse)
    finally:
        source.close()
        if alerts is not None:
            alerts.out.undefer()
            alerts.close()
    return 0


def watch_alerts(source: FileSource, alerts: Any) -> None:
    """Feed ``alerts`` the records that arrive from now on (the best val so far is history)."""
    if alerts is not None:
        alerts.seed_best([e.val for e in source.runs[0].evals] if source.runs else [])
        source.alerts, source.alert_out = alerts, alerts.out

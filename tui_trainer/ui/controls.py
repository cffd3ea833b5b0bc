"""What the keys that compare runs and look closer do to the dashboard's panes.

The app's one action ``panes(name, ...)`` (rows of ``keys.KEYS``) calls the
method of that name here: the x axis (step, tokens, wall time), the y range,
the recent window's length, the point inspector, the eval table's scrolling,
whose samples show, the settings diff, the metric in the bottom plot, and,
with a folder of runs (``runs_table.Browser``), the runs opened from its
table and the way back to it.  A method that does not apply now raises
``SkipAction``: the key then goes to whatever is on top (the runs table's
arrows, the help's scrolling).

Attributes down: this sets the plots' options and calls the app's public
``update_view``/``set_note``/``say``; the widgets draw.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.actions import SkipAction

from ..curves import xaxis
from ..logs import metrics
from ..fmt import fmt_count
from ..runs import config_diff
from . import safe
from .inspector import Inspector
from .metric_picker import LR, MetricPicker
from .plot import CurvePlot
from .settings_diff import SettingsDiff
from .eval_log import EvalLog


class PaneControls:
    def __init__(self, app: Any):
        self.app = app
        app.main.mount(Inspector(id="inspector"), after=app.main.query_one("#alert"))
        if app.browser is not None:
            app.browser.show(app)

    # --- helpers ---
    @property
    def plots(self) -> list[CurvePlot]:
        return list(self.app.main.query(CurvePlot))

    @property
    def loss(self) -> CurvePlot:
        return self.app.main.query_one("#loss", CurvePlot)

    def _on_panes(self) -> None:
        """Keys that are the top screen's when one is over the panes."""
        if self.app.screen is not self.app.main:
            raise SkipAction()

    def inspecting(self) -> bool:
        return self.loss.cursor is not None

    def refresh(self, changed: bool) -> None:
        """The app redrew: the inspector's figures follow the runs."""
        if changed and self.inspecting():
            self.app.main.query_one(Inspector).show(self.app.runs, self.loss.x_mode, self.loss.cursor)

    # --- the x axis, the y range, the window ---
    def x_axis(self, key: str = "x") -> None:
        """x (X when attached): step, tokens, wall time, skipping a unit no run shown knows."""
        app, plots = self.app, self.plots
        modes, now = xaxis.MODES, plots[0].x_mode
        new = now
        for k in range(1, len(modes) + 1):
            new = modes[(modes.index(now) + k) % len(modes)]
            if not app.runs or any(xaxis.known(r, new) for r in app.runs):
                break
        if new == now:
            app.say(f"x axis: {xaxis.NAMES[now]} (these logs have no token count or elapsed time)", warn=True)
            return
        cursor = plots[0].cursor
        if cursor is not None and app.runs:  # the inspector stays at the same step of the first run
            step = xaxis.to_step(app.runs[0], cursor, now)
            x = xaxis.to_x(app.runs[0], [step], new) if step is not None else None
            cursor = float(x[0]) if x is not None else None
        for p in plots:
            p.x_mode, p.cursor = new, cursor
        missing = sum(not xaxis.known(r, new) for r in app.runs)
        app.set_note(f"x axis: {xaxis.NAMES[new]}" + (f" ({missing} without it not drawn)" if missing else ""))
        app.update_view(force_plots=True)

    def y_range(self) -> None:
        loss = self.loss
        loss.focus = not loss.focus
        self.app.set_note("y range: everything" if not loss.focus else "y range: without the first steps' spike")
        self.app.update_view(force_plots=True)

    def window_size(self, factor: float) -> None:
        """- and +: a longer or shorter recent window (turning it on)."""
        app, loss = self.app, self.loss
        steps = max(10, int(round((loss.window or app.window_steps) * (factor if loss.window else 1))))
        app.window_steps = steps
        for p in self.plots:
            p.window = steps
        app.set_note(f"window: last {fmt_count(steps)} steps (w: whole run)")
        app.update_view(force_plots=True)

    # --- the inspector ---
    def inspect(self, delta: int) -> None:
        """← →: a cursor along x, one plot column a press (shift: ten)."""
        self._on_panes()
        loss = self.loss
        if loss.x_span is None:
            self.app.say("nothing plotted yet", warn=True)
            return
        lo, hi = loss.x_span
        col = (hi - lo) / max(1, loss.size.width - 8)
        x = hi if loss.cursor is None else min(hi, max(lo, loss.cursor + delta * col))
        for p in self.plots:
            p.cursor = x
        self.app.update_view(force_plots=True)

    def back(self) -> None:
        """escape: hide the inspector; else back to the runs table, if there is one."""
        self._on_panes()
        app = self.app
        if self.inspecting():
            for p in self.plots:
                p.cursor = None
            app.main.query_one(Inspector).show(app.runs, "step", None)
            app.update_view(force_plots=True)
        elif app.browser is not None:
            app.browser.show(app)
        else:
            raise SkipAction()

    # --- the eval table, samples, settings ---
    def evals(self, how: str) -> None:
        self._on_panes()
        getattr(self.app.main.query_one(EvalLog), f"scroll_{how}")(animate=False)

    def sample_run(self, delta: int) -> None:
        """{ }: whose samples the sample pane shows."""
        self.app.samples.next_run(delta)

    def settings_diff(self) -> None:
        runs = self.app.runs
        self.app.push_screen(SettingsDiff([r.name for r in runs], config_diff([r.config for r in runs])))

    # --- the metric in the bottom plot ---
    def _paths(self) -> list[Path | None]:
        return [f.path for f in getattr(self.app.source, "feeds", [])]

    def metric(self) -> None:
        """m: the bottom plot shows the learning rate or another number the logs hold."""
        paths = [p for p in self._paths() if p is not None]
        if not paths:
            self.app.say("no log to read yet", warn=True)
            return
        names = list(dict.fromkeys(n for p in paths for n in metrics.fields(p)))
        lr = self.app.main.query_one("#lr", CurvePlot)
        self.app.push_screen(MetricPicker(names, lr.metric), self._picked)

    def _picked(self, name: str | None) -> None:
        if name == LR:
            self._show_metric(None, [])
        elif name is not None:
            self.app.set_note(f"reading {safe.name(name, 30)}…")
            paths = self._paths()
            self.app.run_worker(lambda: self._load(name, paths), thread=True, exclusive=True, group="metric")

    def _load(self, name: str, paths: list[Path | None]) -> None:
        data = []
        for p in paths:
            try:
                data.append(metrics.read_metric(p, name) if p is not None else None)
            except OSError:
                data.append(None)
        self.app.call_from_thread(self._show_metric, name, data)

    def _show_metric(self, name: str | None, data: list) -> None:
        lr = self.app.main.query_one("#lr", CurvePlot)
        lr.metric, lr.metric_data = name, data
        got = sum(d is not None and len(d[0]) > 0 for d in data)
        self.app.set_note(f"below: {safe.name(name, 30)} ({got} of {len(data)} runs have it)" if name
                          else "below: learning rate")
        self.app.update_view(force_plots=True)

    # --- a folder of runs ---
    def open_runs(self, source: Any, title: str) -> None:
        """Show another source's runs in the panes (the runs table opened them)."""
        app = self.app
        old, app.source = app.source, source
        (getattr(old, "close", None) or old.stop)()
        source.on_reset = old.on_reset  # the app's: forget the eval rows shown
        app.runs = getattr(source, "runs", [])
        app.samples.newest()
        for p in self.plots:
            p.runs, p.cursor, p.metric, p.metric_data = app.runs, None, None, []
        app.main.query_one(Inspector).show(app.runs, "step", None)
        if source.on_reset is not None:
            source.on_reset(0)
        app.title = safe.plain(title, 80, newlines=False)
        source.start()
        app.poll_source()
        app.update_view(force_plots=True)

"""A plot widget: plotext 6 drawn into a Textual widget.

Why not ``textual-plotext``: its last release (1.0.1) requires ``plotext<6``
and fails to import with plotext 6 (it reaches for ``plotext._dict``, which
plotext 6 removed), and plotext 6's API is a different one (figure objects,
signals, rulers).  The widget needed is small: build the figure at the
widget's size, turn plotext's ANSI output into a Rich ``Text`` and cache it
until the data, the size or an option changes.

Numbers become plot coordinates in one place, ``axes.Axis`` (Textual-free,
shared with ``tui-trainer view --snap``): plotext never sees a value from
the data.

Colours are ANSI palette indices, so Textual maps them through the theme's
ANSI colours (dark or light) and they read on either; axes and labels use the
theme's default foreground.
"""
from __future__ import annotations

import numpy as np
import plotext
from rich.text import Text
from textual.widget import Widget

from ..curves import xaxis
from ..curves.axes import COORD, LIMIT, MAX_TICKS, Axis, nice_ticks, safe_values  # noqa: F401 (plot's names)
from ..curves.curve import columns
from ..fmt import fmt_duration, fmt_small, fmt_step, fmt_value
from ..curves.series import RunSeries
from . import markers

# ANSI palette indices: blue, red, green, magenta, cyan, then 256-colour orange and purple.
PALETTE = (4, 1, 2, 5, 6, 208, 93)
VAL_COLOUR = 1  # val points of a single run: red against its blue line
RAW_COLOUR = 8  # the raw curve under the EMA: the theme's dim grey
CURSOR_COLOUR = 3  # the inspector's cursor: yellow
FOCUS_SKIP = 0.05  # the y range leaves out this first part of each curve (the first steps' spike)


def run_colour(i: int) -> int:
    return PALETTE[i % len(PALETTE)]


def rich_colour(i: int) -> str:
    return f"color({run_colour(i)})"


class CurvePlot(Widget):
    """Train loss (with val points) or learning rate of one or more runs.

    Attributes down: the app sets ``runs`` and the options, then calls
    ``refresh()``; ``render`` redraws only when something it shows changed.
    """

    def __init__(self, kind: str = "loss", *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        assert kind in ("loss", "lr")
        self.kind = kind
        self.runs: list[RunSeries] = []
        self.smooth = False
        self.log_y = False
        self.window: int | None = None
        self.x_mode = "step"              # xaxis.MODES: step, tokens or wall time
        self.focus = True                 # the y range leaves out the first steps' spike
        self.cursor: float | None = None  # the inspector's x (in x_mode's unit), None: hidden
        self.x_span: tuple[float, float] | None = None  # the x range last drawn (the inspector moves in it)
        # The lr plot can show another logged number instead (the metric picker):
        # its name, and each run's (steps, values), read from the logs.
        self.metric: str | None = None
        self.metric_data: list[tuple[np.ndarray, np.ndarray] | None] = []
        self._key: tuple | None = None
        self._text: Text = Text("")

    def render(self) -> Text:
        w, h = self.size.width, self.size.height
        key = (tuple(r.version for r in self.runs), w, h, self.smooth, self.log_y, self.window, self.x_mode,
               self.focus, self.cursor, self.metric, id(self.metric_data))
        if key != self._key:
            self._key = key
            self._text = self._draw(w, h)
        return self._text

    def start_x(self) -> float | None:
        """Left edge of the recent window, shared by every run so curves line up."""
        step = self.start_step()
        if step is None:
            return None
        if self.x_mode == "step":
            return step
        last = max(self.runs, key=lambda r: r.step)
        x = xaxis.to_x(last, np.array([step]), self.x_mode)
        return None if x is None else float(x[0])

    def start_step(self) -> float | None:
        """The recent window's first step (every run's curves start there)."""
        if self.window is None or not self.runs:
            return None
        return float(max(r.step for r in self.runs)) - self.window

    def _series(self, w: int, raw: bool = False) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Each run's (index, x, y, eval x, eval y), finite and bounded
        (``safe_values``), x in the plot's unit; ``raw``: the train loss
        unsmoothed (drawn faintly under the EMA).  A run that does not know
        the unit (a foreign log has no token count) has no points."""
        start = self.start_step()
        cols = max(8, w - 8)  # the y tick labels take a few columns
        out = []
        empty = np.empty(0)
        for i, run in enumerate(self.runs):
            if self.kind == "loss":
                x, y = run.train_points(cols, smooth=self.smooth and not raw, start=start)
                ex, ey = run.eval_points(start, cols) if not raw else (empty, empty)
            elif self.metric is not None:
                got = self.metric_data[i] if i < len(self.metric_data) else None
                x, y = got if got is not None else (empty, empty)
                if start is not None:
                    x, y = x[x >= start], y[x >= start]
                if len(x):
                    x, y = columns(x, y, y, y, np.ones_like(y), cols, mean=False)
                ex, ey = empty, empty
            else:
                x, y = run.lr_points(cols, start=start)
                ex, ey = empty, empty
            x, ex = xaxis.to_x(run, x, self.x_mode), xaxis.to_x(run, ex, self.x_mode)
            if x is None or ex is None:
                x = y = ex = ey = empty
            out.append((i, *safe_values(x, y, self.log_y), *safe_values(ex, ey, self.log_y)))
        return out

    def _y_values(self, series: list) -> list[np.ndarray]:
        """What the y range is made of: every point, or with ``focus`` the
        points after the first ``FOCUS_SKIP`` of the x range (the evals
        too), so a 5.4 at step 1 does not squash the curve that matters into
        a few rows.  Points above the range are drawn at the top edge."""
        every = [a for _, _, y, _, ey in series for a in (y, ey)]
        xs = [x for _, x, _, _, _ in series if len(x)]
        if not self.focus or self.kind != "loss" or sum(len(x) for x in xs) < 20:
            return every
        lo, hi = min(float(x[0]) for x in xs), max(float(x[-1]) for x in xs)
        cut = lo + (hi - lo) * FOCUS_SKIP
        out = [a[keep] for _, x, y, ex, ey in series for a, keep in ((y, x >= cut), (ey, ex >= cut))]
        if not any(len(a) for a in out):
            return every
        out += [np.array([y.min()]) for _, _, y, _, _ in series if len(y)]  # the bottom stays where it is
        return out

    def _draw(self, w: int, h: int) -> Text:
        if w < 12 or h < 4:
            return Text("")
        series = self._series(w)
        if not any(len(x) or len(ex) for _, x, _, ex, _ in series):
            if self.x_mode != "step" and any(r.step for r in self.runs):
                return Text(f"no {xaxis.NAMES[self.x_mode]} in this log: x cycles the x axis", style="dim")
            return Text("waiting for the first step…", style="dim")
        raw = self._series(w, raw=True) if self.smooth and self.kind == "loss" else []
        x_axis = Axis([a for _, x, _, ex, _ in series for a in (x, ex)], lo=self.start_x())
        self.x_span = (x_axis.lo, x_axis.hi)
        yaxis = Axis(self._y_values(series), log=self.log_y)
        f = plotext.figure
        f.clear()
        f.plot_size(w, h)
        f.theme("colorless")
        for _, x, y, _, _ in raw:  # faint, under the EMA
            if len(x) > 1:
                line = f.signal(x_axis.coords(x).tolist(), yaxis.coords(y).tolist(),
                                marker=plotext.marker("braille", RAW_COLOUR))
                line.lines()
                f.draw(line)
        if self.cursor is not None:
            cx = float(x_axis.coords(np.array([x_axis.value(self.cursor)]))[0])
            f.draw(f.signal([cx, cx], [0.0, COORD], marker=plotext.marker("│", CURSOR_COLOUR)).lines())
        for i, x, y, ex, ey in series:
            c = RAW_COLOUR if self.runs[i].faint else run_colour(i)  # a fork's parent: faint
            if len(x):
                line = f.signal(x_axis.coords(x).tolist(), yaxis.coords(y).tolist(),
                                marker=plotext.marker("braille", c))
                if len(x) > 1:
                    line.lines()
                f.draw(line)
            if len(ex):
                dot = c if len(self.runs) > 1 else VAL_COLOUR
                f.draw(f.signal(x_axis.coords(ex).tolist(), yaxis.coords(ey).tolist(),
                                marker=plotext.marker("●", dot)))
        # Where the run was steered (markers.py): a glyph per mark in the top row.
        for glyph, colour, xs in markers.columns(self.runs, x_axis, self.x_mode, self.start_step(), self.kind):
            f.draw(f.signal(xs, [COORD] * len(xs), marker=plotext.marker(glyph, colour)))
        # The pane's border is the frame: no box on top and right, one line and column saved.
        f.axes(False, axis="x", side="upper")
        f.axes(False, axis="y", side="right")
        # At most a tick per 12 columns and per 2 rows: labels never crowd.
        xfmt = fmt_duration if self.x_mode == "time" else fmt_step
        for name, axis, n, fmt in (("x", x_axis, max(2, w // 12), xfmt),
                                   ("y", yaxis, max(3, (h - 2) // 2),
                                    fmt_small if self.kind == "lr" and self.metric is None else fmt_value)):
            f.ruler(name).lim(0.0, COORD)
            at, labels = axis.ticks(n, fmt)
            if at:
                f.ruler(name).ticks(at, labels)
        return Text.from_ansi(str(f.build()), no_wrap=True, end="")

"""A plot widget: plotext 6 drawn into a Textual widget.

Why not ``textual-plotext``: its last release (1.0.1) requires ``plotext<6``
and fails to import with plotext 6 (it reaches for ``plotext._dict``, which
plotext 6 removed), and plotext 6's API is a different one (figure objects,
signals, rulers).  The widget needed is small: build the figure at the
widget's size, turn plotext's ANSI output into a Rich ``Text`` and cache it
until the data, the size or an option changes.

Colours are ANSI palette indices, so Textual maps them through the theme's
ANSI colours (dark or light) and they read on either; axes and labels use the
theme's default foreground.
"""
from __future__ import annotations

import math

import numpy as np
import plotext
from rich.text import Text
from textual.widget import Widget

from ..series import RunSeries

# ANSI palette indices: blue, red, green, magenta, cyan, then 256-colour orange and purple.
PALETTE = (4, 1, 2, 5, 6, 208, 93)
VAL_COLOUR = 1  # val points of a single run: red against its blue line


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
        self._key: tuple | None = None
        self._text: Text = Text("")

    def render(self) -> Text:
        w, h = self.size.width, self.size.height
        key = (tuple(r.version for r in self.runs), w, h, self.smooth, self.log_y, self.window)
        if key != self._key:
            self._key = key
            self._text = self._draw(w, h)
        return self._text

    def start_x(self) -> float | None:
        """Left edge of the recent window, shared by every run so curves line up."""
        if self.window is None or not self.runs:
            return None
        return max(r.step for r in self.runs) - self.window

    def _series(self, w: int) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        start = self.start_x()
        cols = max(8, w - 8)  # the y tick labels take a few columns
        out = []
        for i, run in enumerate(self.runs):
            if self.kind == "loss":
                x, y = run.train_points(cols, smooth=self.smooth, start=start)
                ex, ey = run.eval_points(start, cols)
            else:
                x, y = run.lr_points(cols, start=start)
                ex, ey = np.empty(0), np.empty(0)
            if self.log_y:
                x, y = x[y > 0], y[y > 0]
                ex, ey = ex[ey > 0], ey[ey > 0]
            out.append((i, x, y, ex, ey))
        return out

    def _draw(self, w: int, h: int) -> Text:
        if w < 12 or h < 4:
            return Text("")
        series = self._series(w)
        if not any(len(x) or len(ex) for _, x, _, ex, _ in series):
            return Text("waiting for the first step…", style="dim")
        f = plotext.figure
        f.clear()
        f.plot_size(w, h)
        f.theme("colorless")
        for i, x, y, ex, ey in series:
            c = run_colour(i)
            if len(x):
                line = f.signal(x.tolist(), y.tolist(), marker=plotext.marker("braille", c))
                if len(x) > 1:
                    line.lines()
                f.draw(line)
            if len(ex):
                dot = c if len(self.runs) > 1 else VAL_COLOUR
                f.draw(f.signal(ex.tolist(), ey.tolist(), marker=plotext.marker("●", dot)))
        # The pane's border is the frame: no box on top and right, one line and column saved.
        f.axes(False, axis="x", side="upper")
        f.axes(False, axis="y", side="right")
        if self.log_y:
            f.ruler("y").scale("log")
        lo, hi = _x_range(series, self.start_x())
        if hi > lo:
            f.ruler("x").lim(lo, hi)
            ticks = nice_ticks(lo, hi, max(2, w // 14))
            f.ruler("x").ticks(ticks, [fmt_step(t) for t in ticks])
        if self.kind == "lr":
            ys = np.concatenate([y for _, _, y, _, _ in series if len(y)] or [np.zeros(1)])
            ylo, yhi = float(ys.min()), float(ys.max())
            if yhi > ylo:
                ticks = nice_ticks(ylo, yhi, max(3, h // 2))
                f.ruler("y").ticks(ticks, [fmt_small(t) for t in ticks])
        return Text.from_ansi(str(f.build()), no_wrap=True, end="")


def nice_ticks(lo: float, hi: float, n: int) -> list[float]:
    """About ``n`` round tick positions (1, 2 or 5 times a power of ten) within [lo, hi]."""
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def fmt_step(v: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:g}{unit}"
    return f"{v:g}"


def fmt_small(v: float) -> str:
    return "0" if v == 0 else f"{v:.1e}".replace("e-0", "e-").replace(".0e", "e")


def _x_range(series: list, start: float | None) -> tuple[float, float]:
    xs = [a[[0, -1]] for _, x, _, ex, _ in series for a in (x, ex) if len(a)]
    if not xs:
        return 0.0, 0.0
    allx = np.concatenate(xs)
    lo = float(allx.min()) if start is None else max(0.0, float(start))
    hi = float(allx.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 0.0
    return lo, hi

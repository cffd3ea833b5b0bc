"""The eval-log pane: a scrolling table of eval probes, the newest at the bottom.

Attributes down: the app hands the widget the runs and calls ``show(...)``; it
never reads the engine, the source or another widget.  Every string from a run
goes through ``safe``; every number through ``fmt``.
"""
from __future__ import annotations

import math

from rich.text import Text
from textual.widgets import DataTable

from ..fmt import as_float, fmt_duration, fmt_int, fmt_loss
from ..curves.series import RunSeries
from . import safe
from .plot import rich_colour


class EvalLog(DataTable):
    """A scrolling table of eval probes (step, train, val, elapsed); the newest at the bottom."""

    def __init__(self, **kw) -> None:
        super().__init__(cursor_type="none", zebra_stripes=True, show_cursor=False, **kw)
        self._seen: list[int] = []
        self._best: list[float] = []
        self._multi: bool | None = None
        self._bpb = False
        self._timed = True
        self._runs: list[RunSeries] | None = None  # those last shown: shown again at a new size

    def reset(self) -> None:
        """Forget every row: the next ``show`` rebuilds the table from the runs."""
        self.clear(columns=True)
        self._seen, self._best, self._multi = [], [], None
        self._bpb = False

    def on_resize(self) -> None:
        """A new width may take the time column in or leave it out (``show``)."""
        if self._runs is not None:
            self.show(self._runs)

    def show(self, runs: list[RunSeries]) -> None:
        self._runs = runs
        multi = len(runs) > 1
        # Bits per byte (comparable across tokenizers) has a column once some eval has it.
        bpb = self._bpb or any(e.bpb is not None for r in runs for e in r.evals)
        # With bpb, the time column fits only a wide pane: a narrow one leaves it out (the loss plot's
        # x axis has the time) rather than cut it to ``0:`` at the edge.
        timed = not bpb or self.size.width >= _width(runs, multi)
        if multi != self._multi or bpb != self._bpb or timed != self._timed:
            self.reset()
            self._multi, self._bpb, self._timed = multi, bpb, timed
            if multi:  # val before train: the column runs are compared on stays in a narrow pane
                self.add_column("run", key="run")
                self.add_column("step", key="step")
                self.add_column("val", key="val")
                self.add_column("train", key="train")
            else:
                self.add_column("step", key="step")
                self.add_column("train", key="train")
                self.add_column("val", key="val")
            if bpb:
                self.add_column("bpb", key="bpb")
            if timed:
                self.add_column("time", key="time")
        while len(self._seen) < len(runs):
            self._seen.append(0)
            self._best.append(math.inf)
        at_end = self.scroll_y >= self.max_scroll_y - 1
        added = False
        for i, r in enumerate(runs):
            for e in r.evals[self._seen[i]:]:
                val = as_float(e.val)
                best = math.isfinite(val) and val < self._best[i]
                if best:
                    self._best[i] = val
                row: list = [Text(fmt_int(e.step), justify="right"), Text(fmt_loss(e.train), justify="right"),
                             Text(fmt_loss(e.val) + ("*" if best else " "), justify="right",
                                  style="bold" if best else "")]
                if timed:
                    row.append(Text(fmt_duration(e.elapsed), justify="right"))
                if bpb:
                    row.insert(3, Text(fmt_loss(e.bpb), justify="right"))
                if multi:
                    row[1], row[2] = row[2], row[1]
                    row.insert(0, Text.assemble(("■ ", rich_colour(i)), safe.name(r.name, 12)))
                self.add_row(*row)
                added = True
            self._seen[i] = len(r.evals)
        if added and multi:  # several runs: by step, so one step's evals of every run read together
            self.sort("step", key=_step_key)
        if added and at_end:
            self.scroll_end(animate=False)


def _width(runs: list[RunSeries], multi: bool) -> int:
    """The width every column takes with bpb and time (each its widest cell or
    title, and the table's padding of 1 on each side)."""
    widths = [4, 5, 4, 3, 4]  # step, train, val, bpb, time: the titles
    for r in runs:
        for e in r.evals:
            cells = (fmt_int(e.step), fmt_loss(e.train), fmt_loss(e.val) + "*", fmt_loss(e.bpb), fmt_duration(e.elapsed))
            widths = [max(w, len(c)) for w, c in zip(widths, cells)]
    if multi:
        widths.append(max(3, *(2 + len(safe.name(r.name, 12)) for r in runs)))
    return sum(widths) + 2 * len(widths)


def _step_key(cell: Text) -> float:
    try:
        return float(cell.plain.replace(",", ""))
    except ValueError:  # "-", "huge": last
        return math.inf


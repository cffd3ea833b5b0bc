"""The sample pane: the latest generated sample, or an earlier one.

Attributes down: the app hands the widget the runs and calls ``show(...)``; it
never reads the engine, the source or another widget.  Every string from a run
goes through ``safe``; every number through ``fmt``.
"""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..fmt import fmt_int
from ..curves.series import RunSeries
from . import safe


class SamplePane(Static):
    """The latest generated sample (or an earlier one: ``back`` steps back)."""

    def show(self, run: RunSeries | None, back: int, hint: str = "") -> str:
        """Draw the sample and return a title such as ``sample @ step 400 (3/3)``."""
        got = run.sample(back) if run is not None else None
        if got is None:
            self.update(Text(hint or "no sample in this log", style="dim"))
            return "sample"
        step, text, idx, count = got
        self.update(safe.text(text))
        what = "requested sample" if run is not None and run.sample_requested(back) else "sample"
        return f"{what} @ step {fmt_int(step)} ({idx}/{count})"


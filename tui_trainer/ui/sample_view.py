"""The sample pane's contents and titles (``SampleView``: whose samples, how far
back), and its hint while there is no sample yet."""
from __future__ import annotations

from typing import Any

from textual.content import Content

from ..curves.series import RunSeries
from . import safe
from .titles import sample_title
from .sample_pane import SamplePane


def sample_hint(mode: str, state: str, caps: frozenset[str]) -> str:
    """What the empty sample pane says: a promise only the run can keep."""
    if mode == "view":
        return ""
    if state != "running":
        return "no sample yet"
    if mode == "live":
        return "no sample yet: one is drawn at each eval (e), or type a prompt (g)"
    if "sample" in caps:
        return "no sample yet: one shows when the run logs one; g asks for one now"
    return "no sample yet: one shows when the run logs one (its loop draws none on request)"


class SampleView:
    """Whose samples the sample pane shows (``run``, an index into the app's
    runs) and how many places back from the newest (``back``): the ``[ ]``
    and ``{ }`` keys move them; new samples arriving do not."""

    def __init__(self, app: Any):
        self.app = app
        self.run = 0   # whose samples the sample pane shows
        self.back = 0  # how many samples back from the latest
        self._seen: tuple = (0, -1, -1, "")

    def series(self) -> RunSeries | None:
        runs = self.app.runs
        return runs[min(self.run, len(runs) - 1)] if runs else None

    def newest(self) -> None:
        """The first run's newest sample (a run opened, a requested sample arrived)."""
        self.run = self.back = 0

    def forget(self) -> None:
        """Draw the pane again at the next ``show`` (its size changed)."""
        self._seen = (0, -1, -1, "")

    def next_run(self, delta: int) -> None:
        """{ }: the samples of the next or previous run, its newest first."""
        app = self.app
        if len(app.runs) < 2:
            app.say("one run: its samples are the ones shown")
            return
        self.run = (min(self.run, len(app.runs) - 1) + delta) % len(app.runs)
        self.back = 0
        app.update_view()
        run = app.runs[self.run]
        app.set_note(f"samples of {safe.name(run.name, 16)} ({len(run.samples)})")

    def step(self, delta: int) -> None:
        """[ ]: an older or newer sample of the run shown."""
        app, run = self.app, self.series()
        if run is None or not run.samples:
            app.say("no sample yet" if app.mode != "view" else "no sample in this log", warn=True)
            return
        back = max(0, min(len(run.samples) - 1, self.back + delta))
        if back == self.back:
            app.say("this is the oldest sample kept" if delta > 0 else "this is the newest sample")
        self.back = back
        self.show()

    def show(self) -> None:
        """Show the sample ``back`` places back of the sample run (only when
        something it shows changed)."""
        app = self.app
        run = self.series()
        seen = run.samples_seen if run else -1
        hint = sample_hint(app.mode, app.state, app.caps)
        last_run, last_seen, last_back, last_hint = self._seen
        if (id(run), seen, self.back, hint) == self._seen:
            return
        if run is not None and id(run) == last_run and self.back and seen > last_seen:
            self.back += seen - last_seen  # looking back: new samples do not move the view
        if run is not None:
            self.back = max(0, min(self.back, len(run.samples) - 1))
        self._seen = (id(run), seen, self.back, hint)
        title = app.main.query_one(SamplePane).show(run, self.back, hint)
        box = app.main.query_one("#sample-box")
        box.border_title = sample_title(title, run.name if run and len(app.runs) > 1 else None, box.size.width)
        box.border_subtitle = Content("[ ] older/newer") if run and len(run.samples) > 1 else ""

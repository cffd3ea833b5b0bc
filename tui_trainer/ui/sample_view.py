"""The sample pane's contents and titles, and its hint while there is no sample yet."""
from __future__ import annotations

from typing import Any

from textual.content import Content

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


def show_sample(app: Any) -> None:
    """Show the sample ``app.sample_back`` places back of ``app``'s sample run
    (only when something it shows changed)."""
    run = app._sample_series()
    seen = run.samples_seen if run else -1
    hint = sample_hint(app.mode, app.state, app.caps)
    last_run, last_seen, last_back, last_hint = app._samples_seen
    if (id(run), seen, app.sample_back, hint) == app._samples_seen:
        return
    if run is not None and id(run) == last_run and app.sample_back and seen > last_seen:
        app.sample_back += seen - last_seen  # looking back: new samples do not move the view
    if run is not None:
        app.sample_back = max(0, min(app.sample_back, len(run.samples) - 1))
    app._samples_seen = (id(run), seen, app.sample_back, hint)
    title = app.main.query_one(SamplePane).show(run, app.sample_back, hint)
    box = app.main.query_one("#sample-box")
    box.border_title = sample_title(title, run.name if run and len(app.runs) > 1 else None, box.size.width)
    box.border_subtitle = Content("[ ] older/newer") if run and len(run.samples) > 1 else ""

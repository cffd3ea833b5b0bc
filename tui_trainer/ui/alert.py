"""The alert banner: what must not be missed (divergence, failure, a refused command).

Attributes down: the app hands the widget the runs and calls ``show(...)``; it
never reads the engine, the source or another widget.  Every string from a run
goes through ``safe``; every number through ``fmt``.
"""
from __future__ import annotations

from textual.widgets import Static

from ..fmt import fmt_int
from ..curves.series import RunSeries
from . import safe


class Alert(Static):
    """A banner for what must not be missed: divergence, failure, a refused command."""

    _shown: tuple[str, bool] = ("", False)

    def show(self, runs: list[RunSeries], mode: str = "view") -> None:
        parts = []
        for r in runs:
            name = safe.name(r.name, 40)
            if r.state == "diverged" and r.error is None and r.ended_by_record:
                parts.append(f"{name} ended DIVERGED at step {fmt_int(r.step)}: the loss or gradients were "
                             f"NaN/inf {r.bad_steps} times in a row; no bad step was applied, and its last good "
                             "checkpoint is kept.")
            elif r.state == "diverged":
                ways = {"live": "p resumes, q stops.", "attach": "p resumes, x x stops."}.get(mode, "")
                parts.append(f"{name} DIVERGED at step {fmt_int(r.step)}: the loss or gradients were NaN/inf "
                             f"{r.bad_steps} times; training is paused and no bad step was applied. {ways}")
            elif r.state in ("failed", "killed") or r.error:
                parts.append(f"{name} {safe.plain(r.state, 16).upper()} at step {fmt_int(r.step)}: "
                             f"{safe.plain(r.error or 'no error text', 2000)}")
            elif r.message:
                parts.append(f"{name}: {safe.plain(r.message, 2000)}")
        bad = any(r.state in ("diverged", "failed", "killed") or r.error for r in runs)
        shown = ("\n".join(parts).strip(), bad)
        if shown == self._shown:
            return
        self._shown = shown
        self.set_class(bool(parts), "-shown")
        self.set_class(bad, "-bad")
        self.update(safe.text(shown[0]))


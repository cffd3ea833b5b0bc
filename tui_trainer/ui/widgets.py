"""The dashboard's small widgets, each fed only through ``RunSeries`` objects.

Attributes down: the app hands each widget the list of runs and calls
``show(...)``; widgets never read the engine, the source or each other.
"""
from __future__ import annotations

import math

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from ..series import RunSeries
from .plot import rich_colour

STATE_STYLES = {
    # Explicit backgrounds: a badge reads the same on dark and light themes.
    "running": "bold #ffffff on #2e7d32",
    "paused": "bold #000000 on #f9a825",
    "evaluating": "bold #ffffff on #1565c0",
    "checkpointing": "bold #ffffff on #6a1b9a",
    "starting": "bold #ffffff on #546e7a",
    "finished": "bold #ffffff on #2e7d32",
    "stopped": "bold #ffffff on #546e7a",
    "diverged": "bold #ffffff on #c62828",
    "failed": "bold #ffffff on #c62828",
    "killed": "bold #ffffff on #c62828",
}

# C0/C1 control characters (escape included) would drive the terminal, not print.
_CONTROL = {c: "·" for c in [*range(0, 9), *range(11, 32), 127, *range(128, 160)]}


def printable(text: str) -> str:
    return text.translate(_CONTROL)


def fmt_loss(v: float | None) -> str:
    return "nan" if v is None or not math.isfinite(v) else f"{v:.4f}"


def fmt_count(v: float) -> str:
    if not math.isfinite(v):
        return "-"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.1f}{unit}"
    return f"{v:.0f}"


def fmt_duration(s: float) -> str:
    if not math.isfinite(s):
        return "-"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class StatusLine(Static):
    """One line per run: name, step/total, tok/s, ETA, lr, state; the source's note at the end."""

    _shown = Text("")

    def show(self, runs: list[RunSeries], note: str = "") -> None:
        lines = []
        for i, r in enumerate(runs):
            t = Text(no_wrap=True, overflow="ellipsis")
            # The state first: a narrow terminal cuts the end of the line, never the state.
            t.append(f" {r.state.upper()} ", style=STATE_STYLES.get(r.state, "reverse"))
            t.append(" ")
            if len(runs) > 1:
                t.append("■ ", style=rich_colour(i))
            t.append(r.name[:24], style="bold")
            total = f"/{r.total_steps:,}" if r.total_steps else ""
            t.append(f"  {r.step:,}{total}")
            _, tps = r.rates()
            t.append(f"  {fmt_count(tps)} tok/s")
            if not r.ended:
                t.append(f"  ETA {fmt_duration(r.eta_s())}")
            else:
                t.append(f"  {fmt_duration(r.elapsed_s)}")
            if math.isfinite(r.lr):
                t.append(f"  lr {r.lr:.2e}")
            if r.bad_steps:
                t.append(f"  {r.bad_steps} bad", style="bold")
            if i == 0 and note:
                t.append(f"  {note}", style="italic")
            lines.append(t)
        text = Text("\n").join(lines) if lines else Text("no run yet")
        if text != self._shown:
            # A relayout only when the number of lines changes: this runs 4 times a second.
            self.update(text, layout=len(text.plain.splitlines()) != len(self._shown.plain.splitlines()))
            self._shown = text


class Alert(Static):
    """A banner for what must not be missed: divergence, failure, a refused command."""

    _shown: tuple[str, bool] = ("", False)

    def show(self, runs: list[RunSeries]) -> None:
        parts = []
        for r in runs:
            if r.state == "diverged":
                parts.append(f"{r.name} DIVERGED at step {r.step:,}: the loss or gradients were NaN/inf "
                             f"{r.bad_steps} times; training is paused and no bad step was applied. "
                             "p resumes, q stops.")
            elif r.state in ("failed", "killed") or r.error:
                parts.append(f"{r.name} {r.state.upper()} at step {r.step:,}: {r.error or 'no error text'}")
            elif r.message:
                parts.append(f"{r.name}: {r.message}")
        bad = any(r.state in ("diverged", "failed", "killed") or r.error for r in runs)
        shown = (printable("\n".join(parts)), bad)
        if shown == self._shown:
            return
        self._shown = shown
        self.set_class(bool(parts), "-shown")
        self.set_class(bad, "-bad")
        self.update(shown[0])


class EvalLog(DataTable):
    """A scrolling table of eval probes (step, train, val, elapsed); the newest at the bottom."""

    def __init__(self, **kw) -> None:
        super().__init__(cursor_type="none", zebra_stripes=True, show_cursor=False, **kw)
        self._seen: list[int] = []
        self._best: list[float] = []
        self._multi: bool | None = None

    def show(self, runs: list[RunSeries]) -> None:
        multi = len(runs) > 1
        if multi != self._multi:
            self.clear(columns=True)
            self._seen, self._best = [], []
            self._multi = multi
            if multi:
                self.add_column("run", key="run")
            self.add_column("step", key="step")
            self.add_column("train", key="train")
            self.add_column("val", key="val")
            self.add_column("time", key="time")
        while len(self._seen) < len(runs):
            self._seen.append(0)
            self._best.append(math.inf)
        at_end = self.scroll_y >= self.max_scroll_y - 1
        added = False
        for i, r in enumerate(runs):
            for e in r.evals[self._seen[i]:]:
                best = math.isfinite(e.val) and e.val < self._best[i]
                if best:
                    self._best[i] = e.val
                row: list = [Text(f"{e.step:,}", justify="right"), Text(fmt_loss(e.train), justify="right"),
                             Text(fmt_loss(e.val) + ("*" if best else " "), justify="right",
                                  style="bold" if best else ""),
                             Text(fmt_duration(e.elapsed), justify="right")]
                if multi:
                    row.insert(0, Text("■ " + r.name[:12], style=rich_colour(i)))
                self.add_row(*row)
                added = True
            self._seen[i] = len(r.evals)
        if added and at_end:
            self.scroll_end(animate=False)


class SamplePane(Static):
    """The latest generated sample (or an earlier one: ``back`` steps back)."""

    def show(self, run: RunSeries | None, back: int) -> str:
        """Draw the sample and return a title such as ``sample @ step 400 (3/3)``."""
        got = run.sample(back) if run is not None else None
        if got is None:
            self.update(Text("no sample yet: one is drawn at each eval (e)", style="dim"))
            return "sample"
        step, text, idx, count = got
        self.update(Text(printable(text)))
        return f"sample @ step {step:,} ({idx}/{count})"


HELP = """\
[b]Keys[/b]
  [b]p[/b]  pause / resume           [b]e[/b]  evaluate and sample now
  [b]c[/b]  checkpoint now           [b]q[/b]  quit cleanly (final checkpoint)
  [b]s[/b]  smooth loss (EMA)        [b]l[/b]  log-scale loss axis
  [b]w[/b]  whole run / last steps   [b]\\[[/b] [b]][/b]  older / newer sample
  [b]?[/b]  this help                [b]ctrl+p[/b]  commands (e.g. a light theme)

[b]Reading the screen[/b]
  The loss line is each step's train loss (min and max per column,
  so spikes stay visible; its EMA with s); dots are the validation
  loss at each eval; * in the eval log marks a new best.
  DIVERGED: the loss was NaN/inf several steps in a row.  The run is
  paused and no bad step touched the weights; p resumes, q stops.
  Over SSH, --no-mouse keeps your terminal's copy and paste.

Press escape or ? to close."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close", show=False)]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Static(HELP, id="help-text")

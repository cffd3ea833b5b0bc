"""The dashboard's small widgets, each fed only through ``RunSeries`` objects.

Attributes down: the app hands each widget the list of runs and calls
``show(...)``; widgets never read the engine, the source or each other.
Every string that came from a run (names, errors, samples) goes through
``safe``; every number through ``fmt``.
"""
from __future__ import annotations

import math

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from ..fmt import as_float, fmt_count, fmt_duration, fmt_int, fmt_loss, fmt_lr, fmt_mfu
from ..curves.series import RunSeries
from . import keys, safe
from .plot import rich_colour
from .titles import fit

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
    "crashed": "bold #ffffff on #c62828",  # no run_end, and no process holds its lock
    "log": "bold #ffffff on #546e7a",      # someone else's log: no lock to tell
}


class StatusLine(Static):
    """One line per run: state, name, step/total, tok/s, ETA, lr; a note at the end.
    More runs than ``MAX_LINES``: the last line lists the others' states
    briefly, or says how many it cannot show."""

    MAX_LINES = 4  # the stylesheet's max-height
    _shown = Text("")

    def show(self, runs: list[RunSeries], note: str = "") -> None:
        lines = []
        full = runs if len(runs) <= self.MAX_LINES else runs[:self.MAX_LINES - 1]
        for i, r in enumerate(full):
            # (priority, text): a narrow terminal drops the least important
            # first, never the state, and keeps a note (a key's answer) over lr and speed.
            parts: list = []
            state = safe.plain(r.state, 16, newlines=False)
            parts.append((0, Text.assemble((f" {state.upper()} ", STATE_STYLES.get(r.state, "reverse")), " ")))
            if len(runs) > 1:
                parts.append((1, Text("■ ", style=rich_colour(i))))
            parts.append((1, safe.text(safe.name(r.name), "bold")))
            total = f"/{fmt_int(r.total_steps)}" if r.total_steps else ""
            parts.append((2, Text(f"  {fmt_int(r.step)}{total}")))
            sps, tps = r.rates()
            # Tokens/s when the run gives tokens; else steps/s (a loop of its own that logs no tokens).
            parts.append((6, Text(f"  {fmt_count(tps)} tok/s" if tps == tps or sps != sps
                                  else f"  {fmt_count(sps)} steps/s")))
            if r.tokens_per_step:  # the optimizer step's size, micro-batches and processes included
                parts.append((9, Text(f"  {fmt_count(r.tokens_per_step)} tok/step")))
            mfu = r.mfu()
            if mfu == mfu:  # MFU: the model's FLOPs against the device's peak (run_start)
                parts.append((7, Text(f"  MFU {fmt_mfu(mfu)}")))
            if r.resources is not None and not r.ended:
                parts.append((8, Text(f"  {fmt_memory(r.resources)}")))
            if not r.ended:
                parts.append((4, Text(f"  ETA {fmt_duration(r.eta_s())}")))
            else:
                parts.append((4, Text(f"  {fmt_duration(r.elapsed_s)}")))
            if lr := fmt_lr(r.lr):
                parts.append((5, Text(f"  lr {lr}")))
            if r.bad_steps:
                parts.append((3, Text(f"  {r.bad_steps} bad", style="bold")))
            if i == 0 and note:
                parts.append((3, tuple(Text("  ") + safe.text(note, "italic", n, newlines=False)
                                       for n in (200, 40, 24))))
            line = fit(parts, self.size.width)
            line.no_wrap, line.overflow = True, "ellipsis"
            lines.append(line)
        if len(full) < len(runs):
            lines.append(self._others(runs, len(full)))
        text = Text("\n").join(lines) if lines else Text("no run yet")
        if text != self._shown:
            # A relayout only when the number of lines changes: this runs 4 times a second.
            self.update(text, layout=len(text.plain.splitlines()) != len(self._shown.plain.splitlines()))
            self._shown = text


    def _others(self, runs: list[RunSeries], first: int) -> Text:
        """Runs ``first``.. on one line, each its colour, name and state; as
        many as fit, then how many are not shown and their states."""
        width = self.size.width or 80
        out = Text()
        for k in range(first, len(runs)):
            r = runs[k]
            bit = Text.assemble(("■ ", rich_colour(k)), safe.name(r.name, 12), " ",
                                (safe.plain(r.state, 16, newlines=False).upper(), STATE_STYLES.get(r.state, "")), " ")
            rest = runs[k + 1:]
            tail = _not_shown(rest) if rest else Text()
            if out.cell_len + bit.cell_len + tail.cell_len > width:
                out.append_text(_not_shown(runs[k:]))
                break
            out.append_text(bit)
        out.no_wrap, out.overflow = True, "ellipsis"
        return out


def fmt_memory(res: object) -> str:
    """``mem 412M`` (the process), and on CUDA ``gpu 3.1G/4.0G 87%`` (allocated
    / reserved, utilisation where nvidia-ml-py says); on CPU ``2 threads``,
    the threads in use."""
    def mb(v: object) -> str:
        if not isinstance(v, (int, float)) or not 0 <= v < 1e12:
            return "-"
        return f"{v:.0f}M" if v < 1024 else f"{v / 1024:.1f}G"

    rss, alloc = getattr(res, "rss_mb", None), getattr(res, "cuda_allocated_mb", None)
    out = f"mem {mb(rss)}" if isinstance(rss, (int, float)) else ""
    if isinstance(alloc, (int, float)):
        out += f" gpu {mb(alloc)}/{mb(getattr(res, 'cuda_reserved_mb', None))}"
        util = getattr(res, "gpu_util", None)
        if isinstance(util, (int, float)):
            out += f" {util:.0f}%"
    threads = getattr(res, "threads", None)
    if isinstance(threads, int) and not isinstance(threads, bool) and 0 < threads < 10_000:
        out += f" {threads} thread{'s' if threads > 1 else ''}"
    return out.strip()


def _not_shown(runs: list[RunSeries]) -> Text:
    states: dict[str, int] = {}
    for r in runs:
        states[r.state] = states.get(r.state, 0) + 1
    what = ", ".join(f"{n} {safe.plain(s, 16)}" for s, n in states.items())
    return Text(f"+{len(runs)} not shown ({what})", style="italic")


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


class EvalLog(DataTable):
    """A scrolling table of eval probes (step, train, val, elapsed); the newest at the bottom."""

    def __init__(self, **kw) -> None:
        super().__init__(cursor_type="none", zebra_stripes=True, show_cursor=False, **kw)
        self._seen: list[int] = []
        self._best: list[float] = []
        self._multi: bool | None = None
        self._bpb = False

    def reset(self) -> None:
        """Forget every row: the next ``show`` rebuilds the table from the runs."""
        self.clear(columns=True)
        self._seen, self._best, self._multi = [], [], None
        self._bpb = False

    def show(self, runs: list[RunSeries]) -> None:
        multi = len(runs) > 1
        # Bits per byte (comparable across tokenizers) has a column once some eval has it.
        bpb = self._bpb or any(e.bpb is not None for r in runs for e in r.evals)
        if multi != self._multi or bpb != self._bpb:
            self.reset()
            self._multi, self._bpb = multi, bpb
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
                                  style="bold" if best else ""),
                             Text(fmt_duration(e.elapsed), justify="right")]
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


def _step_key(cell: Text) -> float:
    try:
        return float(cell.plain.replace(",", ""))
    except ValueError:  # "-", "huge": last
        return math.inf


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


def key_table(title: str, rows: list[tuple[str, str]]) -> Text:
    """A help screen's table of keys: the title, then each key and what it does."""
    t = Text()
    t.append(f"{title}\n", style="bold")
    width = max((len(k) for k, _ in rows), default=0)
    for k, what in rows:
        t.append(f"  {k:<{width}}", style="bold")
        t.append(f"  {what}\n")
    return t


class HelpScreen(ModalScreen[None]):
    """The keys that work now (``keys.help_rows``), what the mode means, how to read the plots."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close", show=False)]

    def __init__(self, mode: str = "view", state: str = "ended", caps: frozenset[str] | None = None) -> None:
        super().__init__()
        self.mode, self.state, self.caps = mode, state, caps

    def compose(self) -> ComposeResult:
        t = key_table("Keys", keys.help_rows(self.mode, self.state, self.caps))
        t.append("\n" + keys.MODE_NOTES[self.mode] + "\n\n")
        t.append("Reading the screen\n", style="bold")
        t.append(keys.reading(self.mode))
        with VerticalScroll(id="help-box") as box:
            box.border_title = "help"
            box.border_subtitle = "escape or ? closes"
            yield Static(t, id="help-text")

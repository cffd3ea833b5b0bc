"""The status line: one line per run (state badge, name, step/total, tok/s, ETA, the eval or checkpoint
going on or just ended and its time, lr) and the memory figure.

Attributes down: the app hands the widget the runs and calls ``show(...)``; it
never reads the engine, the source or another widget.  Every string from a run
goes through ``safe``; every number through ``fmt``.
"""
from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import Static

from ..fmt import fmt_count, fmt_duration, fmt_int, fmt_lr, fmt_mfu
from ..curves.series import RunSeries
from . import safe
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
    _laid_width = -1  # the width the last text was fitted to

    def show(self, runs: list[RunSeries], note: str = "") -> None:
        lines = []
        cut = len(runs)
        while cut > 1 and runs[cut - 1].faint:  # a fork's ancestors, after the runs: curves, not runs to watch
            cut -= 1
        runs = runs[:cut]
        now = time.time()
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
                # An eval, a checkpoint, the compile: its own time, not the ETA's.
                if going := r.pauses.going_text(r.state, now):
                    parts.append((3, Text(f"  {going}")))
                if ended := r.pauses.ended_text(now):
                    parts.append((7, (Text(f"  {ended}"), Text(f"  {r.pauses.ended_text(now, most=1)}"))))
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
            # A relayout only when the number of lines or the width changes: this runs 4 times a second.
            # The width too: the first text is made before the layout (width 0, every part kept) and
            # wraps; the next, fitted to the width, has as many lines but must take fewer rows.
            width = self.size.width
            self.update(text, layout=len(text.plain.splitlines()) != len(self._shown.plain.splitlines())
                        or width != self._laid_width)
            self._shown, self._laid_width = text, width


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


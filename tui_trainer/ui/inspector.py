"""The point inspector: each run's figures at the cursor's x (train, EMA, val, lr).

Attributes down: the app moves the plots' cursor and calls ``show``; the
figures come from ``xaxis.values_at``.  Hidden until the cursor is.
"""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..curves import xaxis
from ..fmt import fmt_count, fmt_duration, fmt_int, fmt_loss, fmt_lr
from ..curves.series import RunSeries
from . import safe
from .plot import rich_colour
from .titles import fit

MAX_RUNS = 4  # lines of figures; more runs: the first ones, and how many are not shown


def fmt_x(x: float, mode: str) -> str:
    if mode == "time":
        return fmt_duration(x)
    if mode == "tokens":
        return f"{fmt_count(x)} tokens"
    return f"step {fmt_int(round(x))}"


class Inspector(Static):
    """One line per run: its values at the cursor."""

    def show(self, runs: list[RunSeries], mode: str, x: float | None) -> None:
        self.set_class(x is not None, "-shown")
        self.screen.set_class(x is not None, "-inspecting")  # small terminals: the panes make room
        if x is None:
            return
        width = self.size.width or 80
        lines = [Text.assemble(("▏", "color(3)"), (f"at {fmt_x(x, mode)}", "bold"),
                               "   ← → move, shift: faster, esc hides")]
        for i, r in enumerate(runs[:MAX_RUNS]):
            step = xaxis.to_step(r, x, mode)
            parts: list = []
            if len(runs) > 1:
                parts.append((0, Text.assemble(("■ ", rich_colour(i)), safe.name(r.name, 12), " ")))
            if step is None:
                parts.append((0, Text(f"no {xaxis.NAMES[mode]} in this log", style="dim")))
            else:
                v = xaxis.values_at(r, step)
                parts.append((1, Text(f"step {fmt_int(round(v.step))}" if mode != "step" else "")))
                parts.append((0, Text(f"  train {fmt_loss(v.train)}")))
                parts.append((2, Text(f"  ema {fmt_loss(v.ema)}")))
                val = f"  val {fmt_loss(v.val)}" + (f" @{fmt_int(v.val_step)}" if v.val_step is not None else "")
                parts.append((1, Text(val)))
                parts.append((3, Text(f"  lr {fmt_lr(v.lr) or '-'}")))
            line = fit(parts, width)
            line.no_wrap, line.overflow = True, "ellipsis"
            lines.append(line)
        if len(runs) > MAX_RUNS:
            lines.append(Text(f"+{len(runs) - MAX_RUNS} runs not shown here", style="italic"))
        self.update(Text("\n").join(lines))

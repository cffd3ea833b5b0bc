"""Pane titles that fit their pane: the current figures and the plot options,
the least important parts shortened or dropped first when the pane is narrow
(at 80x24 with every option on, the loss title must still say which)."""
from __future__ import annotations

import math

from rich.text import Text
from textual.content import Content

from ..fmt import fmt_count, fmt_loss
from ..curves.series import RunSeries
from ..curves.xaxis import NAMES as XNAMES
from . import safe
from .plot import VAL_COLOUR, CurvePlot, rich_colour

Part = tuple[int, "Text | tuple[Text, ...]"]  # (priority: 0 most important, text or its variants)


def plot_title(plot: CurvePlot, runs: list[RunSeries], window_steps: int) -> Content:
    window = f"last {fmt_count(plot.window or window_steps)}"
    by = "" if plot.x_mode == "step" else f"by {XNAMES[plot.x_mode]}"
    if plot.kind == "lr":
        parts: list[Part] = [(0, Text(safe.name(plot.metric, 30) if plot.metric else "learning rate"))]
        if plot.window:
            parts.append((1, Text(f" · {window}")))
        if by:
            parts.append((2, Text(f" · {by}")))
        return Content.from_rich_text(fit(parts, plot.size.width - 4))
    flags = [f for f, on in (("ema", plot.smooth), ("log", plot.log_y), (window, plot.window),
                             ("all y", not plot.focus), (by, by)) if on]
    parts = [(0, Text("loss"))]
    if len(runs) == 1:
        r = runs[0]
        if math.isfinite(r.train_loss):
            parts.append((2, Text(f" {fmt_loss(r.train_loss)}")))
        if plot.smooth and math.isfinite(r.smoothed_loss):
            parts.append((4, Text(f" ema {fmt_loss(r.smoothed_loss)}")))
        parts.append((3, Text(" ") + Text("●", style=f"color({VAL_COLOUR})") + Text(" val")))
    else:
        for i, r in enumerate(runs):
            parts.append((5 + i, Text.assemble((" ■", rich_colour(i)), f" {safe.name(r.name, 16)}")))
    if flags:
        short = " ".join(flags).replace("last ", "").replace("by ", "").replace("wall ", "")
        parts.append((1, (Text(" · " + " ".join(flags), style="italic"), Text(" ·" + short, style="italic"))))
    return Content.from_rich_text(fit(parts, plot.size.width - 4))


def sample_title(title: str, run_name: str | None, width: int) -> Content:
    """``sample @ step 400 (3/3)``, after the run's name when several runs are shown."""
    parts: list[Part] = [(0, Text(title))]
    if run_name is not None:
        parts.insert(0, (1, Text(f"{safe.name(run_name, 16)} ")))
    return Content.from_rich_text(fit(parts, width - 4))


def fit(parts: list[Part], width: int) -> Text:
    """Join ``(priority, text)`` parts in order so the whole fits ``width``
    cells.  From the least important part (highest number) up, each is
    shortened to its shorter variants (a tuple, longest first), then dropped,
    until the rest fits."""
    if width <= 4:
        width = 1_000  # not laid out yet: the refit after the first layout cuts it
    variants = [v if isinstance(v, tuple) else (v,) for _, v in parts]
    pick = [0] * len(parts)
    keep = set(range(len(parts)))

    def size() -> int:
        return sum(variants[i][pick[i]].cell_len for i in keep)

    for i in sorted(range(len(parts)), key=lambda i: parts[i][0], reverse=True):
        while size() > width and pick[i] < len(variants[i]) - 1:
            pick[i] += 1
        if size() > width and len(keep) > 1:
            keep.discard(i)
    out = Text()
    for i in sorted(keep):
        out.append_text(variants[i][pick[i]])
    if out.cell_len > width:
        out.truncate(width, overflow="ellipsis")
    return out

"""Marks on the plots where a person steered the run, so a week later the
curve still says why it bent.

Each ``series.Marker`` (a live change, a pause or resume, an eval or a
checkpoint asked for now) is a glyph in the top row of the loss plot at its
step, coloured by kind; the lr plot marks the changes only (its curve already
shows the new schedule: the train records' lr reflect every change).  Steps
become columns through the plot's own ``axes.Axis``, like every other number
drawn, so a hostile log's steps (2**63, negative, far outside the window) are
bounded first and a mark outside the x range is left out, never pinned to an
edge.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from ..curves import xaxis
from ..curves.series import RunSeries

# kind: (glyph, ANSI colour, what it means).  Single-cell glyphs only.
KINDS: dict[str, tuple[str, int, str]] = {
    "change": ("▼", 3, "a live setting changed"),
    "pause": ("‖", 208, "paused"),
    "resume": ("▷", 208, "resumed"),
    "eval": ("◆", 6, "eval now"),
    "checkpoint": ("■", 5, "checkpoint now"),
    "fork": ("⋔", 2, "forked here"),
}
# Drawn in this order: where two share a column, the later one shows (a change wins).
DRAW_ORDER = ("fork", "resume", "pause", "checkpoint", "eval", "change")
PLOT_KINDS = {"loss": tuple(KINDS), "lr": ("change",)}


def legend() -> str:
    """``▼ a live setting changed · ‖ paused · ...``: what the marks mean."""
    return ", ".join(f"{glyph} {what}" for glyph, _, what in KINDS.values())


def _step(v: Any) -> float:
    try:
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")
    except OverflowError:  # an int beyond any float
        return float("nan")


def columns(runs: Iterable[RunSeries], axis: Any, x_mode: str, start_step: float | None,
            plot_kind: str) -> list[tuple[str, int, list[float]]]:
    """(glyph, colour, x coordinates) per kind, in drawing order: the marks of
    ``runs`` that fall inside ``axis`` (a ``axes.Axis``), at or after
    ``start_step`` (the recent window), in the plot's x unit."""
    kinds = PLOT_KINDS.get(plot_kind, ())
    found: dict[str, list[float]] = {k: [] for k in kinds}
    for run in runs:
        marks = [m for m in list(run.markers) if m.kind in found]
        if not marks:
            continue
        steps = np.array([_step(m.step) for m in marks], dtype=np.float64)
        keep = np.isfinite(steps)
        if start_step is not None:
            keep &= steps >= start_step
        if not keep.any():
            continue
        x = xaxis.to_x(run, steps[keep], x_mode)
        if x is None:
            continue  # the run does not know this unit: its curve is not drawn either
        for m, v in zip((m for m, k in zip(marks, keep) if k), x.tolist()):
            if not math.isfinite(v):
                continue
            value = axis.value(v)
            if axis.lo <= value <= axis.hi:
                found[m.kind].append(value)
    out = []
    for kind in DRAW_ORDER:
        values = sorted(set(found.get(kind, ())))
        if values:
            glyph, colour, _ = KINDS[kind]
            out.append((glyph, colour, axis.coords(np.array(values, dtype=np.float64)).tolist()))
    return out

"""``tui-trainer view --snap RUN...``: the loss and learning-rate plots,
printed once as text, with a legend line per run (its state, last and best
figures), for CI logs and ``ssh box tui-trainer view --snap run``.

No Textual here: the figure is built with plotext directly, its numbers
mapped through ``axes.Axis`` as the dashboard's plots map theirs.  Plain
characters only when standard output is not a terminal (ASCII frame and
markers), never a colour code either way: a run is told apart by its marker.

A fork shows its lineage as ``view`` does (``logs.lineage``): its legend
line names it ``label ← parent@step``, its ancestors' curves up to the fork
step are drawn in ``FAINT_MARK`` beneath (once for siblings), a column of
``FORK_MARK`` stands at each fork point, and a parent that was moved or
deleted is said in a note line.
"""
from __future__ import annotations

import argparse
import math
import re
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import plotext

from ..curves.axes import COORD, Axis, safe_values
from ..errors import UserError
from ..fmt import fmt_loss, fmt_small, fmt_step, fmt_value
from ..curves.series import RunSeries
from ..terminal import printable

DEFAULT_SIZE = (100, 30)
MIN_SIZE, MAX_SIZE = (40, 12), (1000, 500)
MARKERS = ("*", "+", "x", "#", "%", "@", "&", "=")   # one per run, in the legend's order
VAL_MARK = {True: "o", False: "●"}                     # ascii: val points
FAINT_MARK = "."                                       # a fork's ancestors, up to the fork step
FORK_MARK = {True: ":", False: "┊"}                    # ascii: a column at each fork point
FOCUS_SKIP = 0.05   # the loss plot's y range leaves out the first part of the x range (the first steps' spike)
# Box drawing to ASCII, for a log file or a pipe.
ASCII_FRAME = str.maketrans({"│": "|", "─": "-", "┌": "+", "┐": "+", "└": "+", "┘": "+", "┤": "+", "├": "+",
                             "┬": "+", "┴": "+", "┼": "+"})
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_size(text: str | None) -> tuple[int, int]:
    """``COLSxROWS``; None: the terminal's size, or ``DEFAULT_SIZE`` when there is none."""
    if text is None:
        if sys.stdout.isatty():
            got = shutil.get_terminal_size(DEFAULT_SIZE)
            return max(MIN_SIZE[0], got.columns), max(MIN_SIZE[1], got.lines - 1)
        return DEFAULT_SIZE
    m = re.fullmatch(r"\s*(\d{1,6})\s*[xX]\s*(\d{1,6})\s*", text)
    if not m:
        raise UserError(f"--size {text!r} is not COLSxROWS; e.g. --size 100x30")
    cols, rows = int(m.group(1)), int(m.group(2))
    if not (MIN_SIZE[0] <= cols <= MAX_SIZE[0] and MIN_SIZE[1] <= rows <= MAX_SIZE[1]):
        raise UserError(f"--size {cols}x{rows} is out of range; use from {MIN_SIZE[0]}x{MIN_SIZE[1]} "
                        f"to {MAX_SIZE[0]}x{MAX_SIZE[1]}")
    return cols, rows


def load(paths: list[str]) -> list[tuple[RunSeries, str]]:
    """Each path's log read whole, and the run's state as the runs browser says it."""
    from ..logs import load_series
    from ..logs.paths import locate
    from ..runs import summarise
    from ..runs.labels import short_labels

    out = []
    for p in paths:
        path = Path(p)
        if path.is_dir() and locate(path) is None:
            raise UserError(f"{path} holds no run log; --snap takes run folders or logs "
                            f"(tui-trainer ls {path} lists a folder of runs)")
        series, _ = load_series(path)
        s = summarise(path if path.is_dir() else path.parent)  # the browser's word for it
        state = s.status if s.ok and s.status else series.state
        out.append((series, state))
    if len(out) > 1:
        for (series, _), lab in zip(out, short_labels([s.name for s, _ in out])):
            series.name = lab
    return out


def plot(runs: list[RunSeries], kind: str, w: int, h: int, ascii_only: bool) -> list[str]:
    """One plot (``loss``: train loss and val points; ``lr``) as lines of text;
    a faint run (a fork's ancestor) in ``FAINT_MARK``, a fork point as a column."""
    cols = max(8, w - 10)
    pts = []
    for i, run in enumerate(runs):
        if kind == "loss":
            x, y = safe_values(*run.train_points(cols))
            ex, ey = safe_values(*run.eval_points(None, cols))
        else:
            x, y = safe_values(*run.lr_points(cols))
            ex, ey = np.empty(0), np.empty(0)
        pts.append((i, x, y, ex, ey))
    if not any(len(x) or len(ex) for _, x, _, ex, _ in pts):
        return [f"(no {'train loss' if kind == 'loss' else 'learning rate'} in the log yet)"]
    xa = Axis([a for _, x, _, ex, _ in pts for a in (x, ex)])
    ya = Axis(_y_values(pts) if kind == "loss" else [y for _, _, y, _, _ in pts])
    f = plotext.figure
    f.clear()
    f.plot_size(w, h)
    f.theme("colorless")
    for at in fork_points(runs, xa):  # beneath the curves
        f.draw(f.segment((at, at), (0.0, COORD), marker=plotext.marker(FORK_MARK[ascii_only], 0)))
    for i, x, y, ex, ey in pts:
        if len(x):
            mark = FAINT_MARK if runs[i].faint else _mark(i)
            line = f.signal(xa.coords(x).tolist(), ya.coords(y).tolist(), marker=plotext.marker(mark, 0))
            if len(x) > 1:
                line.lines()
            f.draw(line)
        if len(ex):
            f.draw(f.signal(xa.coords(ex).tolist(), ya.coords(ey).tolist(),
                            marker=plotext.marker(VAL_MARK[ascii_only], 0)))
    f.axes(False, axis="x", side="upper")
    f.axes(False, axis="y", side="right")
    for name, axis, n, fmt in (("x", xa, max(2, w // 12), fmt_step),
                               ("y", ya, max(3, (h - 2) // 2), fmt_small if kind == "lr" else fmt_value)):
        f.ruler(name).lim(0.0, COORD)
        at, labels = axis.ticks(n, fmt)
        if at:
            f.ruler(name).ticks(at, labels)
    text = _ANSI.sub("", str(f.build()))
    if ascii_only:
        text = text.translate(ASCII_FRAME)
    return [line.rstrip() for line in text.rstrip("\n").split("\n")]


def fork_points(runs: list[RunSeries], xa: Axis) -> list[float]:
    """The x coordinates of the runs' fork points (their ``fork`` markers) inside the axis."""
    steps = {m.step for r in runs for m in list(r.markers)
             if m.kind == "fork" and isinstance(m.step, int) and not isinstance(m.step, bool) and abs(m.step) < 2**53}
    inside = sorted(v for v in map(float, steps) if xa.lo <= xa.value(v) <= xa.hi)  # a hostile step: left out
    return xa.coords(np.array([xa.value(v) for v in inside], dtype=np.float64)).tolist() if inside else []


def _mark(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


def _y_values(pts: list) -> list[np.ndarray]:
    """The loss plot's y range: the points after the first ``FOCUS_SKIP`` of the x range, so a 5.4 at
    step 1 does not squash the curve that matters (as the dashboard's focus does)."""
    every = [a for _, _, y, _, ey in pts for a in (y, ey)]
    xs = [x for _, x, _, _, _ in pts if len(x)]
    if sum(len(x) for x in xs) < 20:
        return every
    lo, hi = min(float(x[0]) for x in xs), max(float(x[-1]) for x in xs)
    cut = lo + (hi - lo) * FOCUS_SKIP
    out = [a[keep] for _, x, y, ex, ey in pts for a, keep in ((y, x >= cut), (ey, ex >= cut))]
    return out if any(len(a) for a in out) else every


def legend(runs: list[tuple[RunSeries, str]], cols: int, ascii_only: bool,
           parents: list[str] | None = None) -> list[str]:
    """A line per run: marker, name (a fork's: ``name ← parent@step``, from
    ``parents``), state, step, last train loss, last and best val, lr."""
    out = []
    for i, (r, state) in enumerate(runs):
        if r.faint:  # a fork's ancestor: its curve up to the fork step, nothing of its own to report
            out.append(_cut(printable(f"{FAINT_MARK} {r.name}  parent, up to step {r.step}", newlines=False), cols))
            continue
        vals = [e for e in r.evals if math.isfinite(e.val)]
        best = min(vals, key=lambda e: e.val) if vals else None
        step = f"{r.step}/{r.total_steps}" if r.total_steps else str(r.step)
        of = parents[i] if parents is not None and i < len(parents) and parents[i] else ""
        bits = [f"{_mark(i)} {r.name}{of}", state, f"step {step}", f"train {fmt_loss(r.train_loss)}",
                f"val {fmt_loss(vals[-1].val)}" if vals else "val -",
                f"best val {fmt_loss(best.val)} @ {best.step}" if best else "best val -",
                f"lr {fmt_small(r.lr)}"]
        bits[0] = printable(bits[0], newlines=False)  # measured as it will print
        line = "  ".join(bits)
        if len(line) > cols:  # two lines, rather than figures cut off
            out += [_cut("  ".join(bits[:3]), cols), _cut("    " + "  ".join(bits[3:]), cols)]
        else:
            out.append(line)
    val = f"{VAL_MARK[ascii_only]} val loss"
    if any(m.kind == "fork" for r, _ in runs for m in list(r.markers)):
        val += f"  {FORK_MARK[ascii_only]} fork point"
    out.append(val)
    return out


def _cut(s: str, width: int) -> str:
    return s if len(s) <= width else s[:width - 1] + "…"


def snapshot(paths: list[str], size: tuple[int, int], ascii_only: bool) -> str:
    """The whole text: the loss plot, the lr plot and the legend, in ``size`` (cols, rows)."""
    runs = load(paths)
    cols, rows = size
    parents, faint, notes = lineage(paths)
    runs += [(s, "parent") for s in faint]
    series = [s for s, _ in runs]
    key = legend(runs, cols, ascii_only, parents)
    for n in filter(None, notes):  # whole, over as many lines as it needs: what is missing is its point
        key += textwrap.wrap(printable(f"note: {n}", newlines=False), cols, subsequent_indent="    ")
    room = max(8, rows - len(key) - 2)  # two title lines
    loss_h = max(4, room * 3 // 5)
    lr_h = max(4, room - loss_h)
    lines = ["loss (train; val points)"] + plot(series, "loss", cols, loss_h, ascii_only)
    lines += ["learning rate"] + plot(series, "lr", cols, lr_h, ascii_only)
    return "\n".join(lines + key)


def lineage(paths: list[str]) -> tuple[list[str], list[RunSeries], list[str]]:
    """Per path its fork's `` ← parent@step`` ("" for no fork); the faint
    series of the forks' ancestors (shared ones once); and the notes of
    parents that are missing."""
    from ..logs.lineage import fork_parent, prefixes
    from ..logs.paths import locate

    logs = [locate(Path(p)) for p in paths]
    shown = {str(log.resolve()) for log in logs if log is not None}
    found, notes = prefixes(logs, shown)
    parents = []
    for log in logs:
        at = fork_parent(log) if log is not None else None
        parents.append(f" ← {at[1]}@{at[2]}" if at is not None else "")
    return parents, [s for each in found for s in each], notes


def cmd_snap(args: argparse.Namespace) -> int:
    if not args.paths:
        raise UserError("--snap needs a run: tui-trainer view --snap outputs/run-...")
    size = parse_size(args.size)
    text = snapshot(args.paths, size, ascii_only=not sys.stdout.isatty())
    print(text, flush=True)
    return 0

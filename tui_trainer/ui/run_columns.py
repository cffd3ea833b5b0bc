"""The runs table's columns: what each shows and how it sorts, and which of
them the screen has room for (``fit_columns``).  A column is shown whole or
not at all, and a number in it keeps its value (``fmt``): at 80 columns a
column cut at the screen's edge once showed max_lr 0.01 as 0.0."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from rich.text import Text

from ..fmt import fmt_count, fmt_duration, fmt_loss
from ..runs import RunSummary
from ..runs.labels import lineage
from ..runs.rows import best_step_text, best_text, bpb_text, date_text, step_text
from . import safe
from .settings_diff import fmt_setting
from .status_line import STATE_STYLES

# Which columns stay when the screen is too narrow for all (the rest are named in the
# head, never cut at the edge: a cut number would show another value, 0.01 as 0.0).
KEEP_FIRST = ("run", "status", "step", "best", "train", "cfg:", "at", "bpb", "time", "tokens", "started")
PADDING = 2           # a DataTable cell's padding, both sides
STATUS_STYLES = dict(STATE_STYLES, empty="bold #000000 on #9e9e9e")
SETTING_WIDTH = 7     # a setting's number takes at most its title's width or this (fmt.fit)


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    sort: Callable[[RunSummary], Any]      # None sorts last, whichever the direction
    cell: Callable[[RunSummary], Text]
    width: int | None = None


def _num(v: float) -> float | None:
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def _right(s: str) -> Text:
    return Text(s, justify="right")


def _run(s: RunSummary) -> Text:
    """The label, and a fork's parent after it, faint: ``lr-half ← base@400``."""
    t = Text(safe.name(s.label, 12), style="bold")
    if s.parent:
        t.append(f" ← {safe.name(s.parent_label or s.parent_name, 12)}@{s.fork_step}", style="dim")
    return t


def _status(s: RunSummary) -> Text:
    return Text(f" {safe.plain(s.status, 10)} ", style=STATUS_STYLES.get(s.status, ""))


COLUMNS: tuple[Column, ...] = (
    Column("run", "run", lambda s: s.family or s.label.lower(), _run),  # a family sorts together
    Column("status", "status", lambda s: s.status, _status),
    Column("step", "step", lambda s: s.step, lambda s: _right(step_text(s))),
    Column("best", "best val", lambda s: _num(s.best_val), lambda s: _right(best_text(s))),
    Column("at", "@", lambda s: s.best_step, lambda s: _right(best_step_text(s))),
    Column("bpb", "bpb", lambda s: _num(s.best_bpb), lambda s: _right(bpb_text(s))),
    Column("train", "train", lambda s: _num(s.train_loss), lambda s: _right(fmt_loss(s.train_loss))),
    Column("tokens", "tokens", lambda s: s.tokens or None, lambda s: _right(fmt_count(s.tokens or math.nan))),
    Column("time", "time", lambda s: _num(s.elapsed_s), lambda s: _right(fmt_duration(s.elapsed_s))),
    Column("started", "started", lambda s: _num(s.started), lambda s: Text(date_text(s.started))),
)


def setting_columns(keys: list[str]) -> list[Column]:
    """A column per setting that differs: numbers fitted to the title's width (or ``SETTING_WIDTH``)."""
    return [Column(f"cfg:{k}", k, lambda s, k=k: _sortable(s.config.get(k)),
                   lambda s, k=k: _right(fmt_setting(s.config.get(k), max(len(k), SETTING_WIDTH))))
            for k in keys]


def fit_columns(cols: list[Column], cells: list[list[str]], room: int, sort: str
                ) -> tuple[list[Column], list[list[str]], list[str]]:
    """The columns (and their cells) there is ``room`` for, in ``KEEP_FIRST``'s
    order of importance, shown in their own order; and the titles of the rest."""
    widths = [max([len(c.title) + 2 * (c.key == sort)] + [len(row[i]) for row in cells]) + PADDING
              for i, c in enumerate(cols)]

    def rank(i: int) -> tuple[int, int]:
        key = cols[i].key
        return next((k for k, p in enumerate(KEEP_FIRST) if key == p or (p.endswith(":") and key.startswith(p))),
                    len(KEEP_FIRST)), i

    kept: set[int] = set()
    for i in sorted(range(len(cols)), key=rank):
        if room >= widths[i] or not kept:  # the run's label, whatever the room
            kept.add(i)
            room -= widths[i]
    order = sorted(kept)
    hidden = [cols[i].title for i in range(len(cols)) if i not in kept]
    return [cols[i] for i in order], [[row[i] for i in order] for row in cells], hidden


FILTER_CHARS = 256  # of each field the filter searches: a name is untrusted, and `x.*y` is quadratic in it


def matches(pattern: re.Pattern, s: RunSummary) -> bool:
    """Whether ``pattern`` finds a match in the label, folder, name or status,
    each on its own (so ``^r78$`` means a field that is exactly r78), within
    its first ``FILTER_CHARS`` characters: a log's name of a megabyte would
    hold the screen for minutes under an everyday ``lr.*3e``."""
    return any(pattern.search(field[:FILTER_CHARS]) for field in (s.label, s.folder, s.run_name, s.status))


def _sortable(v: Any) -> Any:
    """A setting as a sort key: numbers by value, anything else by its text, after them."""
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, str(v))

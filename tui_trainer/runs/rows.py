"""A run's row as plain text and as a JSON object: what the runs browser's
table shows of a ``RunSummary`` (``ui/run_columns`` styles these cells) and
what ``tui-trainer ls`` prints.

The fixed columns, in the table's order, then a setting per column for each
setting that differs between the runs listed (``diff.settings_diff``).  The
order of the rows is the browser's first one: newest start first, runs whose
start is unknown after them.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

from ..fmt import fit, fmt_count, fmt_duration, fmt_loss
from ..terminal import printable
from .labels import lineage
from .summary import RunSummary

SETTING_WIDTH = 7     # a setting's number takes at most its title's width or this (fmt.fit)
TEXT_MAX = 40         # characters of a setting that is text


def step_text(s: RunSummary) -> str:
    return f"{fmt_count(s.step)}/{fmt_count(s.total_steps)}" if s.total_steps else fmt_count(s.step)


def best_text(s: RunSummary) -> str:
    """The best val loss; ``-`` for a run with no finite eval (absent, not a NaN
    loss), ``…`` while its evals are still being read."""
    if s.best_step is None and math.isnan(s.best_val):
        return "-" if s.evals_read else "…"
    return fmt_loss(s.best_val)


def best_step_text(s: RunSummary) -> str:
    return fmt_count(s.best_step) if s.best_step is not None else "-"


def bpb_text(s: RunSummary) -> str:
    """The best eval's val bits per byte: the loss runs on different tokenizers are ranked by."""
    return fmt_loss(s.best_bpb) if math.isfinite(s.best_bpb) else "-"


def date_text(t: float) -> str:
    return time.strftime("%m-%d %H:%M", time.localtime(t)) if math.isfinite(t) and 0 < t < 1e11 else "-"


#: (key, title, cell, right-aligned) of the fixed columns, before and after the settings.
BEFORE: tuple[tuple[str, str, Callable[[RunSummary], str], bool], ...] = (
    ("run", "run", lineage, False),
    ("status", "status", lambda s: s.status, False),
    ("step", "step", step_text, True),
    ("best", "best val", best_text, True),
    ("at", "@", best_step_text, True),
    ("bpb", "bpb", bpb_text, True),
    ("train", "train", lambda s: fmt_loss(s.train_loss), True),
)
AFTER: tuple[tuple[str, str, Callable[[RunSummary], str], bool], ...] = (
    ("tokens", "tokens", lambda s: fmt_count(s.tokens or math.nan), True),
    ("time", "time", lambda s: fmt_duration(s.elapsed_s), True),
    ("started", "started", lambda s: date_text(s.started), False),
)


def setting_text(v: Any, width: int | None = None) -> str:
    """A setting as written, short: ``384``, ``0.0003``, ``true``, ``-`` for missing;
    a number in at most ``width`` characters when given (``fmt.fit``: 5e-3, never 0.00)."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if width is not None and isinstance(v, (int, float)):
        return fit(v, width)
    if isinstance(v, int):
        return str(v) if abs(v) < 10**12 else f"{v:.3g}"
    if isinstance(v, float):
        return f"{v:.6g}"
    s = printable(v if isinstance(v, str) else repr(v), newlines=False)
    return s if len(s) <= TEXT_MAX else s[:TEXT_MAX - 1] + "…"


def newest_first(runs: list[RunSummary]) -> list[RunSummary]:
    """The browser's first order: newest start first, unknown starts last (by name)."""
    known = sorted((s for s in runs if math.isfinite(s.started)), key=lambda s: s.started, reverse=True)
    return known + [s for s in runs if not math.isfinite(s.started)]


def table(runs: list[RunSummary], settings: list[str]) -> list[str]:
    """The runs as an aligned text table: a head line, then a line per run."""
    cols = list(BEFORE) + [(f"cfg:{k}", k, lambda s, k=k: setting_text(s.config.get(k), max(len(k), SETTING_WIDTH)),
                            True) for k in settings] + list(AFTER)
    titles = [printable(t, newlines=False) for _, t, _, _ in cols]
    cells = [[printable(cell(s), newlines=False) for _, _, cell, _ in cols] for s in runs]
    widths = [max([len(t)] + [len(row[i]) for row in cells]) for i, t in enumerate(titles)]
    right = [r for _, _, _, r in cols]

    def line(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)).rstrip()

    return [line(titles)] + [line(row) for row in cells]


def _number(v: Any) -> float | int | None:
    """A number for strict JSON: None for NaN and the infinities."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return v if isinstance(v, int) or math.isfinite(v) else None


def _jsonable(v: Any) -> Any:
    if isinstance(v, float):
        return _number(v)
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


def as_json(s: RunSummary, settings: list[str]) -> dict[str, Any]:
    """One run (or a skipped folder) as a JSON object: every key always there,
    null where unknown; numbers as numbers, never NaN."""
    return {
        "folder": s.folder, "path": str(s.path), "label": s.label if s.ok else None,
        "name": s.run_name if s.ok else None, "status": s.status,
        "step": s.step if s.ok else None, "total_steps": s.total_steps or None,
        "best_val": _number(s.best_val), "best_step": s.best_step, "best_bpb": _number(s.best_bpb),
        "train_loss": _number(s.train_loss),
        "tokens": s.tokens or None, "elapsed_s": _number(s.elapsed_s), "started": _number(s.started),
        "settings": {k: _jsonable(s.config.get(k)) for k in settings} if s.ok else {},
        "problem": s.problem or None, "parent": s.parent or None, "fork_step": s.fork_step,
    }

"""``tui-trainer export RUN... -o FILE``: take a run's numbers or its curves away.

- ``.csv``: the curves, one row per step: ``step``, then each run's
  ``train_loss``, ``val_loss``, ``lr``, ``tokens`` and ``elapsed_s`` (named
  ``RUN.train_loss`` and so on when there are several runs); a cell is empty
  where that run logged nothing at that step.  When a run is a fork, its
  ``parent`` (folder) and ``fork_step`` follow its columns, on each row where
  it has a value.
- ``.csv`` with ``records=True`` (``--records``): every record of every run,
  flattened, one row per record (nested settings as ``config.n_layer``, a
  list as its JSON, booleans as JSON's ``true``/``false``), with a ``run``
  column first when there are several runs.
- In both, a value the log wrote as null because it was NaN or infinite
  (named in ``nonfinite``) is written ``nan``; an absent one is empty.
  Records a resume superseded are left out (``logs.resumes``), as the viewer
  leaves them out.  ``-o -`` writes to standard output.
- ``.png``, ``.svg`` (and ``.pdf``): the train loss (its EMA, the raw curve
  faint beneath), the val loss at each eval and the learning rate of the given
  runs, labelled as the runs browser labels them, with a dashed line at each
  setting change, resume and fork (``figure_marks``), titled with the runs'
  full names.  These need matplotlib, an
  optional extra (``pip install 'tui-trainer[plot]'``): it is imported only
  here, so the terminal tool never needs it to start.

No Textual here.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..config import UserError
from ..files import check_stdout, output_file, replaced
from ..logs import ReadCounts, iter_jsonl, load_series
from ..logs.paths import display_name, resolve
from ..logs.resumes import cutoffs, kept, resume_step, step_of
from ..logs.formats import read as read_line
from ..logs.tail import MAX_LINE
from ..records import Eval
from ..runs import short_labels

FIGURES = (".png", ".svg", ".pdf")
FORMATS = (".csv", *FIGURES)
FIRST_COLUMNS = ("type", "step", "time")
FIGURE_POINTS = 2000   # points per curve in a figure (min/max per bucket: spikes stay)
PLOT_EXTRA = "pip install 'tui-trainer[plot]'"


def export(paths: list[Path], out: str, records: bool = False) -> str:
    """Write ``out`` from the logs at ``paths`` (a CSV: the curves, or with
    ``records`` every record); return one line saying what was written."""
    if not paths:
        raise UserError("export needs at least one run folder or losses.jsonl")
    suffix = Path(out).suffix.lower() if out != "-" else ".csv"
    if suffix not in FORMATS:
        raise UserError(f"-o {out}: export writes {', '.join(FORMATS)} (the file name's ending says which)")
    if records and suffix != ".csv":
        raise UserError(f"--records writes every record as a CSV, not a {suffix} figure; pass -o FILE.csv")
    logs = [resolve(Path(p)) for p in paths]  # LogError: one line naming the path and the fix
    if out == "-" and sys.stdout is None:
        raise UserError("-o - writes to standard output, which is closed; pass -o FILE.csv")
    if out == "-":
        check_stdout(logs)
    dest = output_file(out, logs) if out != "-" else None  # never one of the logs, under any name
    if suffix == ".csv" and records:
        rows, cols = write_csv(logs, out, dest)
        return f"wrote {rows:,} records ({cols} columns) of {_runs(logs)} to {out}"
    if suffix == ".csv":
        rows, cols = write_curves(logs, out, dest)
        return f"wrote {rows:,} steps ({cols} columns) of {_runs(logs)} to {out} (every record: --records)"
    figure = _figure_module(suffix)
    write_figure(logs, dest, suffix[1:], figure)
    return f"wrote the curves of {_runs(logs)} to {out}"


def _runs(logs: list[Path]) -> str:
    return f"{len(logs)} runs" if len(logs) > 1 else display_name(logs[0])


def run_names(logs: list[Path]) -> list[str]:
    """The ``run`` column: each log's folder name, made distinct with #2, #3."""
    names = [display_name(p) for p in logs]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


# --- CSV -------------------------------------------------------------------------

def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A record as one flat row: nested objects as dotted keys, lists as JSON,
    a null named in ``nonfinite`` as ``nan``; ``nonfinite`` itself dropped."""
    out: dict[str, Any] = {}
    bad = d.get("nonfinite") if not prefix else None
    bad = bad if isinstance(bad, list) else ()
    for k, v in d.items():
        key = f"{prefix}{k}"
        if not prefix and k == "nonfinite":
            continue
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = json.dumps(v)
        elif v is None and k in bad:
            out[key] = "nan"
        elif isinstance(v, bool):
            out[key] = "true" if v else "false"  # as the log wrote it, not Python's True
        else:
            out[key] = v
    return out


def _effective(log: Path, cuts: list[int] | None) -> Iterator[dict[str, Any]]:
    """The log's records, minus those a resume superseded (``cuts``: from a first pass)."""
    k = 0
    for d in iter_jsonl(log):
        if cuts is None:
            yield d
            continue
        cut = cuts[k] if k < len(cuts) else None
        if resume_step(d) is not None:
            k += 1
        if kept(step_of(d), cut):
            yield d


def write_csv(logs: list[Path], out: str, dest: Path | None = None) -> tuple[int, int]:
    """Two passes over each log (the columns, then the rows), so memory is one
    record whatever the size.  ``out`` "-" is standard output; else the file
    ``dest`` (default: ``out``) is replaced whole once every row is written.
    Returns (rows, columns)."""
    columns: dict[str, None] = {}
    settings: dict[str, None] = {}
    cuts: list[list[int] | None] = []
    for log in logs:
        resumes = []
        counts = ReadCounts()
        for d in iter_jsonl(log, counts):
            if (s := resume_step(d)) is not None:
                resumes.append(s)
            for key in flatten(d):
                (settings if key.startswith("config.") else columns)[key] = None
        if counts.lines == counts.bad:  # not one record read: say so, do not write an empty table
            raise UserError(unreadable(log, counts))
        cuts.append(cutoffs(resumes) if resumes else None)
    first = [c for c in FIRST_COLUMNS if c in columns]
    header = (["run"] if len(logs) > 1 else []) + first + \
             [c for c in columns if c not in FIRST_COLUMNS] + list(settings)
    names = run_names(logs)
    forks = _forks(logs)  # a fork's parent folder and fork step, on each of its rows
    header += ["parent", "fork_step"] if any(forks) else []
    with contextlib.nullcontext(sys.stdout) if out == "-" else replaced(dest or Path(out)) as stream:
        w = csv.DictWriter(stream, fieldnames=header, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        rows = 0
        for log, name, cut, fork in zip(logs, names, cuts, forks):
            for d in _effective(log, cut):
                row = flatten(d)
                if fork is not None:
                    row["parent"], row["fork_step"] = str(fork[0]), fork[2]
                if len(logs) > 1:
                    row["run"] = name
                w.writerow(row)
                rows += 1
    return rows, len(header)


CURVE_COLUMNS = ("train_loss", "val_loss", "lr", "tokens", "elapsed_s")
TRAIN_KEYS = ("train_loss", "lr", "tokens", "elapsed_s")


def _cuts(log: Path) -> list[int] | None:
    """A first pass over ``log``: the resume cutoffs (``_effective``); a log
    with no readable record is an error."""
    counts = ReadCounts()
    resumes = [s for d in iter_jsonl(log, counts) if (s := resume_step(d)) is not None]
    if counts.lines == counts.bad:  # not one record read: say so, do not write an empty table
        raise UserError(unreadable(log, counts))
    return cutoffs(resumes) if resumes else None


def _ours(d: dict[str, Any]) -> dict[str, Any]:
    """A line of another format (a Hugging Face ``log_history`` entry, a flat
    ``{"step", "loss"}`` line) as the fields of our record; ours as it is."""
    if isinstance(d.get("type"), str):
        return d
    got = read_line(d)
    if isinstance(got, tuple):
        step, loss, lr = got
        return {"type": "train", "step": step, "train_loss": loss if math.isfinite(loss) else None,
                "lr": lr if math.isfinite(lr) else None}
    if isinstance(got, Eval):
        return {"type": "eval", "step": got.step, "val_loss": got.val_loss}
    return {}


def _cell(d: dict[str, Any], key: str) -> Any:
    v = d.get(key)
    if v is None:
        bad = d.get("nonfinite")
        return "nan" if isinstance(bad, list) and key in bad else None
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def write_curves(logs: list[Path], out: str, dest: Path | None = None) -> tuple[int, int]:
    """One row per step of any run: ``step``, then each run's ``CURVE_COLUMNS``
    (the train record's loss, lr, tokens and time; the eval's val loss).  The
    table is held by step, a few numbers per step.  Returns (rows, columns)."""
    names = run_names(logs)
    prefixes = [f"{n}." if len(logs) > 1 else "" for n in names]
    table: dict[int, dict[str, Any]] = {}
    for log, prefix in zip(logs, prefixes):
        for d in _effective(log, _cuts(log)):
            d = _ours(d)
            kind, step = d.get("type"), step_of(d)
            if step is None or kind not in ("train", "eval"):
                continue
            row = table.setdefault(step, {})
            for key in TRAIN_KEYS if kind == "train" else ("val_loss", "elapsed_s"):
                v = _cell(d, key)
                if v is not None and (kind == "train" or row.get(prefix + key) is None):
                    row[prefix + key] = v  # an eval's time fills in only where no train record did
    forks = _forks(logs)
    lineage = ("parent", "fork_step") if any(forks) else ()
    header = ["step"] + [p + c for p in prefixes for c in (*CURVE_COLUMNS, *lineage)]
    with contextlib.nullcontext(sys.stdout) if out == "-" else replaced(dest or Path(out)) as stream:
        w = csv.DictWriter(stream, fieldnames=header, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for step in sorted(table):
            row = table[step]
            for prefix, fork in zip(prefixes, forks):
                if fork is not None and any(prefix + c in row for c in CURVE_COLUMNS):  # where the run has a value
                    row[prefix + "parent"], row[prefix + "fork_step"] = str(fork[0]), fork[2]
            w.writerow({"step": step, **row})
    return len(table), len(header)


def _forks(logs: list[Path]) -> list[tuple[Path, str, int] | None]:
    """Each log's parent (folder, name, fork step) when it is a fork (``run_start.parent``), else None."""
    from ..logs.lineage import fork_parent

    return [fork_parent(log) for log in logs]


def unreadable(log: Path, counts: ReadCounts) -> str:
    """Why a log gave no record at all, as the start of an error line."""
    if counts.bad:
        return (f"no record in {log} could be read ({counts.describe()}); pass a losses.jsonl "
                f"(a line over {MAX_LINE >> 20} MB may be skipped)")
    if counts.torn_tail:
        return f"no record in {log} could be read (its only line is cut short); pass a losses.jsonl"
    return f"{log} is empty: no records to export; pass a run's losses.jsonl once it has written some"


# --- figures ---------------------------------------------------------------------

def _figure_module(suffix: str) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError(f"export to {suffix} needs matplotlib, an optional extra: {PLOT_EXTRA}") from None
    return Figure


def focus_top(ys: list[np.ndarray], skip: float = 0.05) -> float:
    """The top of a loss axis that leaves out the first steps' spike: the
    highest value after the first ``skip`` of each curve; NaN when none."""
    tops = [float(np.nanmax(y[int(len(y) * skip):])) for y in ys if len(y) > 1 and np.isfinite(y).any()]
    return max(tops) if tops else math.nan


MARKS_KEPT = 60  # per run: beyond that the lines would hide the curves


def figure_marks(log: Path) -> list[tuple[int, str, str]]:
    """(step, kind, label) of the log's setting changes, resumes and forks, for
    a figure: a ``change`` record, a resumed ``run_start``, a ``fork`` record
    (or a ``run_start`` naming ``forked_from``).  Other record types are
    skipped, whatever they are."""
    marks: list[tuple[int, str, str]] = []
    for d in _effective(log, _cuts(log)):
        kind, step = d.get("type"), step_of(d)
        if step is None:
            continue
        if kind == "change":
            marks.append((step, "change", f"{_short(d.get('key'))} {_short(d.get('old'))}→{_short(d.get('new'))}"))
        elif kind == "fork" or (kind == "run_start" and d.get("forked_from")):
            marks.append((step, "fork", "fork"))
        elif resume_step(d) is not None:
            marks.append((step, "resume", "resumed"))
    return marks[-MARKS_KEPT:]


def _short(v: Any) -> str:
    text = f"{v:.3g}" if isinstance(v, float) else str(v)
    return "".join(c for c in text if c.isprintable())[:24]


MARK_STYLES = {"change": ("0.35", "--"), "resume": ("tab:red", ":"), "fork": ("tab:purple", "-.")}


def _draw_marks(axes: list[Any], marks: list[tuple[int, str, str]], colour: str) -> None:
    top = axes[0]
    for step, kind, label in marks:
        line, style = MARK_STYLES.get(kind, ("0.5", "--"))
        for ax in axes:
            ax.axvline(step, color=line, linestyle=style, linewidth=0.8, alpha=0.8)
        top.annotate(label, xy=(step, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                     textcoords="offset points", rotation=90, va="top", ha="left", fontsize=6.5, color=colour)


def figure_title(names: list[str]) -> str:
    """The runs' full names, several to a line; past a dozen, how many more."""
    shown = [_short_name(n) for n in names[:12]]
    lines = [" · ".join(shown[i:i + 3]) for i in range(0, len(shown), 3)]
    if len(names) > 12:
        lines.append(f"and {len(names) - 12} more runs")
    return "\n".join(lines)


def _short_name(name: str) -> str:
    return "".join(c for c in name if c.isprintable())[:80]


def write_figure(logs: list[Path], out: str | Path, fmt: str, Figure: Any) -> None:
    series = []
    for log in logs:
        s, counts = load_series(log)
        if counts.lines == counts.bad:  # not one record read: say so, do not draw empty axes
            raise UserError(unreadable(log, counts))
        series.append(s)
    labels = short_labels([s.name for s in series])
    fig = Figure(figsize=(10, 6.5), dpi=120, layout="constrained")
    loss_ax, lr_ax = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    colours = [f"C{i % 10}" for i in range(len(series))]
    emas, lows = [], []
    for s, name, c in zip(series, labels, colours):
        x, y = s.loss.points(FIGURE_POINTS)
        if len(x):
            loss_ax.plot(x, y, color=c, alpha=0.25, linewidth=0.6)
        ex, ey = s.smooth.points(FIGURE_POINTS, mean=True)
        if len(ex):
            loss_ax.plot(ex, ey, color=c, linewidth=1.4, label=f"{name} train (EMA)")
            emas.append(ey)
            lows.append(float(np.nanmin(y)) if len(y) else math.nan)
        vx, vy = s.eval_points()
        if len(vx):
            loss_ax.plot(vx, vy, "o-", color=c, markersize=3.5, linewidth=0.8, label=f"{name} val")
            emas.append(vy)
            lows.append(float(np.nanmin(vy)))
        lx, ly = s.lr_points(FIGURE_POINTS)
        if len(lx):
            lr_ax.plot(lx, ly, color=c, linewidth=1.2, label=name)
    for log, c in zip(logs, colours):
        _draw_marks([loss_ax, lr_ax], figure_marks(log), c)
    top = focus_top(emas)
    low = min((v for v in lows if math.isfinite(v)), default=math.nan)
    if math.isfinite(top) and math.isfinite(low) and top > low:
        pad = (top - low) * 0.05
        loss_ax.set_ylim(low - pad, top + pad)  # the first steps' spike is off the top, as in the viewer
    loss_ax.set_ylabel("loss")
    loss_ax.grid(True, alpha=0.3)
    if loss_ax.get_legend_handles_labels()[0]:
        loss_ax.legend(fontsize="small", ncols=2 if len(series) > 3 else 1)
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("step")
    lr_ax.grid(True, alpha=0.3)
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    fig.suptitle(figure_title([s.name for s in series]), fontsize="medium")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    with replaced(Path(out), binary=True) as f:  # whole or not at all: a failed draw leaves no half file
        f.write(buf.getvalue())

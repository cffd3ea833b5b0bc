"""Other numbers a log holds, for plotting on demand: grad norm, tokens/sec, a
loop's own metrics, any numeric field of someone else's log.

No Textual here.  ``fields`` lists what a log has (from a sample of its
lines: its head and its tail); ``read_metric`` reads one field's values by
step from the whole file, the records a resume superseded left out, as the
viewer leaves them out.  The viewer shows a metric in place of the learning
rate (``m``).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .formats.flat import STEP_KEYS
from .jsonl import iter_jsonl
from .parsing import decode
from .resumes import cutoffs, kept, resume_step

# Keys that are no metric: what a record is, when and where.
NOT_METRICS = frozenset({"type", "step", "time", "iter", "global_step", "epoch", "consecutive", "n_params",
                         "total_steps", "forced", "requested", "resumed"})
# Ours first, in this order; then the rest by name.
KNOWN = ("grad_norm", "tokens_per_sec", "train_loss", "val_loss", "lr", "elapsed_s", "tokens")
SAMPLE_BYTES = 1 << 18


def fields(path: Path) -> list[str]:
    """The numeric fields of the log at ``path`` (its first and last lines)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return []
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, SAMPLE_BYTES, 0)
        tail = os.pread(fd, SAMPLE_BYTES, max(0, size - SAMPLE_BYTES)) if size > SAMPLE_BYTES else b""
    finally:
        os.close(fd)
    seen: dict[str, None] = {}
    for buf in (head, tail):
        for raw in buf.split(b"\n")[1:-1] if buf is tail else buf.split(b"\n")[:-1]:
            d = decode(raw)
            if type(d) is not dict or _step(d) is None:
                continue
            for k, v in d.items():
                if k not in NOT_METRICS and type(v) in (int, float) and len(seen) < 200:
                    seen[k] = None
    known = [k for k in KNOWN if k in seen]
    return known + sorted(k for k in seen if k not in KNOWN)


def _step(d: dict) -> int | None:
    for k in STEP_KEYS:
        v = d.get(k)
        if type(v) is int:
            return v
    return None


def read_metric(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of ``key`` in the log, in file order, finite values only."""
    resumes = []
    for d in iter_jsonl(path):
        if (s := resume_step(d)) is not None:
            resumes.append(s)
    cuts = cutoffs(resumes)
    steps: list[int] = []
    values: list[float] = []
    k = 0
    for d in iter_jsonl(path):
        cut = cuts[k] if k < len(cuts) else None
        if resume_step(d) is not None:
            k += 1
        v = d.get(key)
        s = _step(d)
        if s is None or type(v) not in (int, float) or not kept(s, cut):
            continue
        try:
            f = float(v)
        except OverflowError:  # an integer beyond a float
            continue
        if math.isfinite(f):
            steps.append(s)
            values.append(f)
    return np.array(steps, dtype=np.float64), np.array(values, dtype=np.float64)

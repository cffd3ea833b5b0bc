"""A resumed run's log: which records a resume supersedes.  The one rule.

A resumed session appends to the same file, starting with a ``run_start``
whose ``resumed`` is true and whose ``step`` S is the checkpoint it continued
from.  Whatever an earlier session wrote with a step above S (steps trained
after that checkpoint, before a crash or kill) is superseded: the resumed
session trains those steps again.  So, reading in file order, each resumed
``run_start`` drops the earlier records whose step is greater than S; records
at or below S are kept, and so are records without an integer step.  The
file itself is never rewritten.

Applied in one pass, knowing the resumes first: ``cutoffs(resume steps)``
gives, for the records before each resume, the highest step that survives
every later resume; a record is ``kept`` when its step is at most that.  The
log parser learns the resume steps from a first read and reads again with
the cutoffs (a big log is never held in memory); ``effective_records`` does
the same over a list.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _get(r: Any, name: str) -> Any:
    return r.get(name) if isinstance(r, dict) else getattr(r, name, None)


def step_of(r: Any) -> int | None:
    """A record's step (a dict or a ``Record``) when it is an integer."""
    s = _get(r, "step")
    return s if type(s) is int else None


def resume_step(r: Any) -> int | None:
    """S for a resumed ``run_start`` at step S; None for any other record."""
    if _get(r, "type") == "run_start" and _get(r, "resumed") is True:
        return step_of(r)
    return None


def cutoffs(resumes: list[int]) -> list[int]:
    """Entry k: the lowest resume step at or after resume k, the highest step
    kept among the records read before resume k."""
    out = list(resumes)
    for k in range(len(out) - 2, -1, -1):
        out[k] = min(out[k], out[k + 1])
    return out


def kept(step: int | None, cut: int | None) -> bool:
    """Whether a record at ``step`` survives the resumes after it (``cut``:
    their cutoff, None when no resume follows)."""
    return cut is None or step is None or step <= cut


def effective_records(records: Iterable[Any]) -> list[Any]:
    """The records that still count, after resumes (dicts or ``Record``s), in file order."""
    records = list(records)
    cuts = cutoffs([s for r in records if (s := resume_step(r)) is not None])
    out = []
    k = 0  # resumes passed
    for r in records:
        cut = cuts[k] if k < len(cuts) else None
        if resume_step(r) is not None:
            k += 1
        if kept(step_of(r), cut):
            out.append(r)
    return out

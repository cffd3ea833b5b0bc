"""Our own ``losses.jsonl``: the records of ``tui_trainer.records``, re-typed and checked.

A log is untrusted input.  Each line of ours is decoded by the one decoder,
``records.from_dict``, which checks each field against its annotation, so a
string where a loss belongs, a list where a step belongs or a status outside
its ``Literal[...]`` makes the line bad here instead of a crash in a widget.
``nonfinite`` must be a list: it names the fields written as null that were
NaN or infinite.

A ``train`` line of ours that does not check (a field missing or of a wrong
type) is still a train point when ``train_point`` takes it (its step, loss
and lr are right), else it is left to the flat format; any other type of
ours that does not check is a bad line.
"""
from __future__ import annotations

import math
import operator
from typing import Any

from ...records import RECORD_TYPES, FieldCheck, build, field_checks, from_dict
from .base import BAD, Reading

__all__ = ["FieldCheck", "build", "field_checks", "read", "train_point", "typed_record"]

#: The reader's decoder is the one decoder, ``records.from_dict``; this name stays for callers of it.
typed_record = from_dict

NAN = math.nan
_NONE = type(None)
_NUM_OR_NONE = frozenset({int, float, _NONE})
_TRAIN_FIELDS = operator.itemgetter("type", "step", "train_loss", "lr")
_NO_NONFINITE: list = []


def train_point(d: dict) -> tuple[int, Any, Any] | None:
    """The hot path, for a whole log of train lines: (step, loss, lr) of a
    well-formed train line of ours (loss and lr a number or null), or None.
    Only these fields are looked at and no record is built; the last line
    of a run of them is read in full later (``records.from_dict``) for its other
    figures.  ``chunks.py`` decodes exactly such lines, a chunk at a time."""
    try:
        t, s, loss, lr = _TRAIN_FIELDS(d)
    except KeyError:
        return None
    if (t == "train" and type(s) is int and type(loss) in _NUM_OR_NONE and type(lr) in _NUM_OR_NONE
            and type(d.get("nonfinite", _NO_NONFINITE)) is list):
        return s, loss, lr
    return None


def read(d: dict) -> Reading | None:
    t = d.get("type")
    if type(t) is not str or t not in RECORD_TYPES:
        return None
    rec = from_dict(d)
    if rec is not None:
        return rec
    if t != "train" or type(d.get("nonfinite", _NO_NONFINITE)) is not list:
        return BAD
    point = train_point(d)  # a train point all the same, as it is in a whole-file load
    if point is None:
        return None  # read as a flat record
    s, loss, lr = point
    return s, NAN if loss is None else float(loss), NAN if lr is None else float(lr)

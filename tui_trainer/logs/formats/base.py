"""What a format makes of one JSON object from a log line.

A format module has ``read(d: dict) -> Reading | None``: None when the line
is not in its format (the next format is asked), else one of:

- a ``Record`` of ours (``records.py``), checked field by field; someone
  else's validation loss reads as an ``Eval``;
- a ``Point``: (step, train loss, lr) of someone else's train line, NaN
  where a value is missing (no record built: a big log has millions);
- ``IGNORED``: readable, but nothing to plot (no step, a run summary);
- ``BAD``: a wrong type where a step or a number belongs (a bad line).
"""
from __future__ import annotations

from ...records import Record

Point = tuple[int, float, float]


class _Sentinel:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


IGNORED = _Sentinel("IGNORED")
BAD = _Sentinel("BAD")

Reading = Record | Point | _Sentinel

"""Our own ``losses.jsonl``: the records of ``tui_trainer.records``, re-typed and checked.

A log is untrusted input.  Each field is checked against its annotation
(``typing.get_type_hints``), so a string where a loss belongs, a list where a
step belongs or a status outside its ``Literal[...]`` makes the line bad here
instead of a crash in a widget.  ``nonfinite`` must be a list: it names the
fields written as null that were NaN or infinite.

A ``train`` line of ours that does not check (a field missing or of a wrong
type) is still a train point when ``train_point`` takes it (its step, loss
and lr are right), else it is left to the flat format; any other type of
ours that does not check is a bad line.
"""
from __future__ import annotations

import dataclasses
import math
import operator
import types
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from ...records import EXTRA, RECORD_TYPES, Record, flat_extras
from .base import BAD, Reading

NAN = math.nan
_NONE = type(None)
_NUM_OR_NONE = frozenset({int, float, _NONE})
_TRAIN_FIELDS = operator.itemgetter("type", "step", "train_loss", "lr")
_NO_NONFINITE: list = []


def train_point(d: dict) -> tuple[int, Any, Any] | None:
    """The hot path, for a whole log of train lines: (step, loss, lr) of a
    well-formed train line of ours (loss and lr a number or null), or None.
    Only these fields are looked at and no record is built; the last line
    of a run of them is read in full later (``typed_record``) for its other
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
    rec = typed_record(d)
    if rec is not None:
        return rec
    if t != "train" or type(d.get("nonfinite", _NO_NONFINITE)) is not list:
        return BAD
    point = train_point(d)  # a train point all the same, as it is in a whole-file load
    if point is None:
        return None  # read as a flat record
    s, loss, lr = point
    return s, NAN if loss is None else float(loss), NAN if lr is None else float(lr)


@dataclass(frozen=True)
class FieldCheck:
    """What one field of a record class accepts, from its annotation."""

    name: str
    types: frozenset[type] | None  # exact types accepted; None: any value
    literals: frozenset[tuple[type, Any]]  # (type, value) of each Literal[...] value accepted
    null_is_nan: bool  # a plain float field: null (a NaN written as null) reads as NaN
    required: bool

    def accepts(self, v: Any) -> bool:
        if self.types is None or type(v) in self.types:
            return True
        try:
            return (type(v), v) in self.literals
        except TypeError:  # unhashable: a list or an object is no literal
            return False


def _kinds(hint: Any) -> tuple[frozenset[type] | None, frozenset[tuple[type, Any]]]:
    """(exact types, literal values) a value of this annotation may have; types None: anything."""
    if hint is Any:  # a class since Python 3.11: test it before the classes below
        return None, frozenset()
    origin = get_origin(hint)
    if origin is Literal:
        return frozenset(), frozenset((type(v), v) for v in get_args(hint))
    if origin is Union or origin is types.UnionType:
        kinds: set[type] = set()
        literals: set[tuple[type, Any]] = set()
        for arg in get_args(hint):
            k, lit = _kinds(arg)
            if k is None:
                return None, frozenset()
            kinds |= k
            literals |= lit
        return frozenset(kinds), frozenset(literals)
    if hint is None or hint is _NONE:
        return frozenset({_NONE}), frozenset()
    if hint is float:  # JSON has one kind of number: 2 is a fine loss (never a bool, though)
        return frozenset({int, float}), frozenset()
    if isinstance(origin, type):  # dict[str, Any], list[str]: the container's type, not its contents
        return frozenset({origin}), frozenset()
    if isinstance(hint, type) and hint is not object:
        return frozenset({hint}), frozenset()
    return None, frozenset()  # Any, or an annotation this checker does not know


_CHECKS: dict[type, tuple[FieldCheck, ...]] = {}


def field_checks(cls: type) -> tuple[FieldCheck, ...]:
    """The checks of every field of a record class (cached)."""
    got = _CHECKS.get(cls)
    if got is None:
        hints = get_type_hints(cls)
        got = tuple(
            FieldCheck(f.name, *_kinds(hints[f.name]), null_is_nan=hints[f.name] is float,
                       required=f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
            for f in dataclasses.fields(cls))
        _CHECKS[cls] = got
    return got


def typed_record(d: dict) -> Record | None:
    """A JSON object of ours as its record, every field checked; None when it
    is not one or does not check.  Unknown keys are dropped and missing
    optional fields take their defaults (older and newer logs load); a null
    named in ``nonfinite``, or in a plain float field, reads as NaN."""
    cls = RECORD_TYPES.get(d.get("type")) if type(d.get("type")) is str else None
    return None if cls is None else build(cls, d)


def build(cls: type[Record], d: dict) -> Record | None:
    nonfinite = d.get("nonfinite", _NO_NONFINITE)
    if type(nonfinite) is not list:
        return None
    kwargs = {}
    for check in field_checks(cls):
        if check.name not in d:
            if check.required:
                return None
            continue
        v = d[check.name]
        if v is None and (check.null_is_nan or check.name in nonfinite):
            v = NAN
        if not check.accepts(v):
            return None
        kwargs[check.name] = v
    extra = flat_extras(cls, d)  # a loop's own numbers, flat keys of a train or eval line
    if extra is not None:
        kwargs[EXTRA] = extra
    try:
        return cls(**kwargs)
    except (TypeError, ValueError):  # a record class that checks more in __post_init__
        return None

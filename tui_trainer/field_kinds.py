"""What a dataclass field's annotation accepts, read once from the annotation:
a setting's type (``FieldType``: what its flag parses, its closed set, for
``config``) and a record field's check (``FieldCheck``: which JSON values a
line read back may hold there, for ``records.from_dict``).  Nothing here
knows the settings or the records; ``config`` and ``records`` apply it to
their dataclasses.
"""
from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Union, get_args, get_origin, get_type_hints

_NONE = type(None)


# --- a setting's type (config) ----------------------------------------------------

class FieldType(NamedTuple):
    """What a setting holds: ``base`` is bool, int, float or str; ``optional``
    says None is allowed; ``choices`` is the closed set of a Literal, else None."""
    base: type
    optional: bool
    choices: tuple[Any, ...] | None


def field_type(hint: Any) -> FieldType:
    """A setting's annotation as a ``FieldType``; TypeError for one no flag could parse."""
    optional = False
    if get_origin(hint) in (Union, types.UnionType):
        args = get_args(hint)
        optional = type(None) in args
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"unsupported config annotation {hint!r}")
        hint = rest[0]
    if get_origin(hint) is Literal:
        values = get_args(hint)
        return FieldType(type(values[0]), optional, values)
    if hint not in (bool, int, float, str):
        raise TypeError(f"unsupported config annotation {hint!r}")
    return FieldType(hint, optional, None)


# --- a record field's check (records) ---------------------------------------------

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

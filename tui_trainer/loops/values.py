"""Numbers a loop of its own gives its run, made fit for a record: a step is
an integer, a number is a float (a numpy number or a one-element tensor
too, read with ``float()``; None is NaN), and nothing is beyond float range,
which would make a line every JSON reader that makes floats skips.  torch is
not imported here."""
from __future__ import annotations

import math
import numbers
from typing import Any

from ..records import RESERVED, clean_text


def as_step(step: Any) -> int:
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        raise TypeError(f"step must be an integer (steps trained so far), not {type(step).__name__}")
    return in_float_range("step", int(step.__index__()))


def in_float_range(name: str, v: int) -> int:
    """An integer a reader can take as a number: one past float range
    (10**400) would be a line every JSON reader that makes floats skips."""
    try:
        float(v)
    except OverflowError:
        raise ValueError(f"{name} is an integer of {v.bit_length()} bits, beyond float range "
                         "(about 1.8e308); log a number that fits") from None
    return v


def as_number(name: str, v: Any) -> float:
    """A float from a float, an int, a numpy number or a one-element tensor; None is NaN."""
    if v is None:
        return math.nan
    if isinstance(v, (bool, str, bytes)):
        raise TypeError(f"{name} must be a number, not {type(v).__name__}")
    try:
        return float(v)
    except OverflowError:
        raise ValueError(f"{name} is beyond float range (about 1.8e308); log a number that fits") from None
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a number (or a one-element tensor), not {type(v).__name__}") from None


def as_count(name: str, v: Any) -> int:
    if isinstance(v, bool) or not hasattr(v, "__index__"):
        got = as_number(name, v)
        if not got.is_integer():
            raise TypeError(f"{name} must be a whole number, not {v!r}")
        return int(got)
    return in_float_range(name, int(v.__index__()))


def extras(given: dict[str, Any], cls: type) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in given.items():
        if k in RESERVED[cls]:
            raise ValueError(f"{k!r} is a key of the record itself; log the number under another name")
        if isinstance(v, numbers.Integral) and not isinstance(v, bool):
            out[k] = in_float_range(k, int(v))  # type: ignore[assignment]
        else:
            out[k] = as_number(k, v)
    return out


def said(v: Any) -> str:
    """``str(v)`` made fit for a record (``clean_text``), never failing: an
    exception or exit code whose ``__str__`` raises (or returns no string) is
    named by its type, so the run still ends with its ``run_end``."""
    try:
        s = str(v)
    except Exception:  # noqa: BLE001 - the script's object, not ours
        s = None
    return clean_text(s) if isinstance(s, str) else f"<{type(v).__name__} that cannot be shown>"


def callbacks(*fns: Any) -> tuple[Any, ...]:
    """A loop's ``on_eval``, ``on_checkpoint`` and ``on_sample``: each a
    function, or None for none; anything else is refused when it is given,
    not at each request."""
    for name, fn in zip(("on_eval", "on_checkpoint", "on_sample"), fns):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} is a function (or None for none), not {type(fn).__name__}")
    return fns

"""Live settings: what may change while a run trains, each checked before it
is applied.

A loop defines the keys it can apply (``Settings.define``): the built-in
trainer defines ``lr_scale``, ``max_lr``, ``min_lr``, ``steps``,
``eval_every``, ``checkpoint_every``, ``grad_clip`` and ``weight_decay``; the
run itself defines ``pause_at``.  A request for a key nobody defined, or a
value out of range, is refused at once with a one-line reason (on the socket,
before anything is queued) and the run is untouched.  The built-in keys are
checked as flags are: their ranges are ``bounds.BOUNDS``, and a change must
keep the rules between settings (``config.setting_problem``).  An accepted change is
applied on the loop's thread at its next safe point and written to the log as
a ``change`` record.

torch is not imported here: the control channel validates with this module.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Callable

from ..bounds import BOUNDS, MAX_STEPS  # noqa: F401 (MAX_STEPS re-exported)


@dataclass
class Setting:
    key: str
    kind: type  # float or int
    get: Callable[[], Any]
    apply: Callable[[Any], None]
    check: Callable[[Any], str | None]  # the reason a value is refused, or None
    help: str = ""


def positive(v: float) -> str | None:
    return None if v > 0 else "must be positive"


def non_negative(v: float) -> str | None:
    return None if v >= 0 else "must be >= 0"


def at_least_one(v: int) -> str | None:
    return None if v >= 1 else "must be at least 1"


class Settings:
    """The keys a run's loop lets people change, thread-safe to read."""

    def __init__(self) -> None:
        self._defs: dict[str, Setting] = {}
        self._lock = threading.Lock()

    def define(self, key: str, kind: type, get: Callable[[], Any], apply: Callable[[Any], None], *,
               check: Callable[[Any], str | None] = lambda v: None, help: str = "") -> None:
        with self._lock:
            self._defs[key] = Setting(key, kind, get, apply, check, help)

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._defs)

    def current(self) -> dict[str, Any]:
        with self._lock:
            defs = list(self._defs.values())
        return {d.key: d.get() for d in defs}

    def parse(self, key: Any, value: Any) -> tuple[Any, str | None]:
        """(the value as the setting's type, None) or (None, why it is refused)."""
        if not isinstance(key, str):
            return None, "a setting's key is a name such as lr_scale"
        with self._lock:
            d = self._defs.get(key)
            known = sorted(self._defs)
        if d is None:
            shown = key if len(key) <= 40 else key[:40] + "…"
            return None, f"unknown setting {shown!r}; this run takes {', '.join(known) or 'none'}"
        v = coerce(value, d.kind)
        if v is None:
            if BOUNDS.get(key) is not None and _too_large(value):  # a whole number beyond any bound
                return None, f"{key} {BOUNDS[key].words()}, got {short(value)}"
            return None, f"{key} must be {'an integer' if d.kind is int else 'a number'}, got {short(value)}"
        why = d.check(v)
        return (v, None) if why is None else (None, f"{key} {why}, got {short(value)}")

    def apply(self, key: str, value: Any) -> tuple[Any, Any]:
        """Apply on the loop's thread: (old, new).  Checks again (another
        change may have moved a bound since the request was accepted)."""
        v, why = self.parse(key, value)
        if why is not None:
            raise ValueError(why)
        with self._lock:
            d = self._defs[key]
        old = d.get()
        d.apply(v)
        return old, d.get()


def coerce(value: Any, kind: type) -> Any:
    """A JSON value (or the text typed after KEY=) as ``kind``; None if it is not one.
    NaN and infinities are never a value."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if kind is int else float(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if kind is int:
            return int(value) if value.is_integer() and abs(value) < 2**62 else None
        return value
    if isinstance(value, int):
        if abs(value) >= 2**62:
            return None
        return float(value) if kind is float else value
    return None


def _too_large(value: Any) -> bool:
    """A whole number (or its text) too large for ``coerce``: a range error, not a type error."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            try:
                value = float(value.strip())
            except ValueError:
                return False
    if isinstance(value, float):
        return math.isfinite(value) and value.is_integer() and abs(value) >= 2**62
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**62


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def parse_assignment(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (also ``KEY VALUE``) as typed on a command line."""
    for sep in ("=", " "):
        if sep in text.strip():
            key, _, value = text.strip().partition(sep)
            return key.strip(), value.strip()
    raise ValueError(f"expected KEY=VALUE (such as lr_scale=0.5), got {short(text)}")

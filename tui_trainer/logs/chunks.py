"""Decoding a whole chunk of lines at once: the fast path of a big load.

A million train lines must show in well under two seconds, so a whole-file
load never builds a dict or a record per train line.  msgspec decodes each
chunk at once (``decode_lines``) into small structs: a train line of ours
keeps its step, loss and lr, every other record type keeps nothing (the
parser reads those lines again, one by one).  The numbers go straight into
numpy arrays.

The train struct must accept only lines the per-line path (orjson, then
``formats.ours.train_point``) reads as train points, with the same numbers:
its fields are exactly ``TrainStep``'s plus ``nonfinite``, unknown fields are
refused, and each is typed so that msgspec refuses what orjson refuses (a
step is an int64: orjson reads bigger integers as floats; the other numbers
are floats, so 1e400 or a 400-digit integer fails as it does in orjson).  Whatever msgspec refuses sends the chunk down the per-line path,
so what is read, skipped and counted is the same either way.
"""
from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Annotated, Any, Union

import msgspec
import numpy as np

from ..records import RECORD_TYPES, TrainStep

_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark
_NL, _BRACE = ord("\n"), ord("{")
# Within what orjson reads as an int (bigger integers are floats there); msgspec bounds stop at int64.
_STEP = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]


def _types() -> tuple[type, msgspec.json.Decoder]:
    number = float | None
    rest = [(f.name, number, msgspec.UNSET) for f in dataclasses.fields(TrainStep)
            if f.name not in ("step", "train_loss", "lr")]
    train = msgspec.defstruct("FastTrain", [("step", _STEP), ("train_loss", number), ("lr", number)] + rest
                              + [("nonfinite", list[str], msgspec.UNSET)],
                              tag="train", tag_field="type", forbid_unknown_fields=True)
    others = [msgspec.defstruct(f"Fast_{t}", [], tag=t, tag_field="type") for t in RECORD_TYPES if t != "train"]
    return train, msgspec.json.Decoder(Union[tuple([train] + others)])  # type: ignore[misc]


FastTrain, _DECODER = _types()
_get_step, _get_loss, _get_lr = (operator.attrgetter(n) for n in ("step", "train_loss", "lr"))


def decode(buf: bytes, at_start: bool) -> tuple[list, np.ndarray] | None:
    """The lines of ``buf`` (each ending in a newline) as structs, and the
    offsets of their newlines; None when the per-line path must read it."""
    if buf[-1] != _NL or (at_start and buf.startswith(_BOM)):
        return None
    try:
        rows = _DECODER.decode_lines(buf)
    except (msgspec.DecodeError, RecursionError):  # not JSON, not ours, a wrong type, nested too deep
        return None
    a = np.frombuffer(buf, np.uint8)
    nl = np.flatnonzero(a == _NL)
    # decode_lines skips blank lines and reads "{..}{..}" as two: insist on
    # one object per line, each line starting with "{".
    if len(rows) != len(nl) or a[0] != _BRACE or not (a[nl[:-1] + 1] == _BRACE).all():
        return None
    return rows, nl


def columns(rows: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps, losses and lrs of train structs as float64 arrays (null is NaN)."""
    return _column(rows, _get_step), _column(rows, _get_loss), _column(rows, _get_lr)


def _column(rows: list, get: Callable[[Any], Any]) -> np.ndarray:
    try:
        return np.fromiter(map(get, rows), np.float64, len(rows))
    except TypeError:  # a null: np.array turns None into NaN
        return np.array(list(map(get, rows)), dtype=np.float64)

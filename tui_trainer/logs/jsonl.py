"""A log's records as plain JSON objects (dicts): for scripts, tests and resume.

The same reading as the viewer's: the file in chunks (``Tail``), each line
through ``parsing.decode`` (strict JSON; blank lines skipped and not counted;
what is not a JSON object counted bad), and a last line without its newline
read when it reads, else noted as torn.  ``effective_records`` then applies
the resume rule (``resumes.py``).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .formats import BAD
from .parsing import BLANK, ReadCounts, decode
from .resumes import effective_records
from .tail import open_tail

__all__ = ["effective_records", "iter_jsonl", "read_records"]


def iter_jsonl(path: str | os.PathLike[str], counts: ReadCounts | None = None) -> Iterator[dict[str, Any]]:
    """Yield each JSON object in the file; count, never raise on, bad lines."""
    counts = counts if counts is not None else ReadCounts()
    tail = open_tail(Path(path))
    if not tail.open():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        lineno = 0
        while (lines := tail.read()) is not None:
            for raw in lines:
                lineno += 1
                if (d := _object(raw, lineno, counts)) is not None:
                    yield d
        rest = tail.take_partial()
        if rest.strip():
            lineno += 1
            d = decode(rest, lineno == 1)
            if type(d) is dict:
                counts.lines += 1
                yield d
            else:  # a write cut short, not a bad line
                counts.torn_tail = True
    finally:
        tail.close()


def _object(raw: bytes, lineno: int, counts: ReadCounts) -> dict[str, Any] | None:
    d = decode(raw, lineno == 1)
    if d is BLANK:
        return None
    counts.lines += 1
    if d is BAD or type(d) is not dict:
        counts.bad_line(lineno)
        return None
    return d


def read_records(path: str | os.PathLike[str], counts: ReadCounts | None = None) -> list[dict[str, Any]]:
    return list(iter_jsonl(path, counts))

"""Untrusted text (anything read from a log file or the control socket) as screen text.

This is the one place where such a string becomes something Textual draws:
run names, errors, samples, checkpoint paths, acknowledgement messages,
config values.  The result is plain text: control characters (escape
included) are replaced so they cannot drive the terminal, markup such as
``[@click=app.quit]`` is never interpreted, and a very long string is cut.
Widgets are given ``Text``/``Content`` from here, never a ``str`` that Textual
would parse as markup; toasts get ``markup=False``.
"""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.content import Content

from ..terminal import CONTROLS, SURROGATES

# C0/C1 control characters (escape included) would drive the terminal, not print:
# the one table (``terminal.CONTROLS``) the plain-text side escapes too.
_CONTROL = dict.fromkeys(CONTROLS, "·")
# Lone surrogates (a path that was not UTF-8) cannot be encoded for the terminal.
_SURROGATES = dict.fromkeys(SURROGATES, "?")
LIMIT = 20_000  # characters of one string shown; a sample is well under this


def plain(value: Any, limit: int = LIMIT, *, newlines: bool = True) -> str:
    """``value`` as a printable string: no control characters, at most ``limit`` long.
    ``newlines=False`` turns line breaks into spaces (one-line places: titles, toasts)."""
    s = value if isinstance(value, str) else repr(value) if value is not None else ""
    if len(s) > limit:
        s = s[:max(0, limit - 1)] + "…"
    s = s.translate(_CONTROL).translate(_SURROGATES)
    if not newlines:
        s = s.replace("\n", " ")
    return s


def text(value: Any, style: str = "", limit: int = LIMIT, *, newlines: bool = True) -> Text:
    """A Rich ``Text`` of ``value``, shown exactly as written."""
    return Text(plain(value, limit, newlines=newlines), style=style)


def content(value: Any, limit: int = LIMIT) -> Content:
    """A Textual ``Content`` of ``value`` on one line (border titles, labels)."""
    return Content(plain(value, limit, newlines=False))


def name(value: Any, width: int = 24) -> str:
    """A run name cut to ``width`` characters."""
    return plain(value, width, newlines=False)

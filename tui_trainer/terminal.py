"""Text for the terminal: the one function every plain-text line passes.

Console lines, samples, ``error:`` lines, the summary after a run, ``attach``
answers, CSV to standard output: whatever the plain-text side prints goes
through ``printable``.  C0 and C1 control characters, DEL and lone surrogates
(an undecodable byte of a path) come out as visible escapes (``\\x1b``,
``\\udce9``), so a run name, a path, a prompt or a byte model's sample can
never drive the terminal (set its title, write the clipboard, reset it).
A tab and a line break pass where a line break is meant.

``printable_streams`` puts ``PrintableStream`` over ``sys.stdout`` and
``sys.stderr`` for the command's lifetime, so even a print nobody thought
about is clean.  Textual draws through its own driver on the original
streams (``sys.__stderr__``) and is not touched.  ``ui.safe`` builds its
table from ``CONTROLS`` and ``SURROGATES`` here: one definition of what is a
control character.

No Textual here.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

# Code points that drive a terminal instead of printing: C0 (tab and newline aside), DEL, C1.
CONTROLS = (*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0))
# A lone surrogate: a byte of a name that was not UTF-8 (surrogateescape), or a bad string.
SURROGATES = range(0xD800, 0xE000)
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_CLASS = "".join(map(chr, CONTROLS)) + f"{chr(SURROGATES[0])}-{chr(SURROGATES[-1])}"
_UNSAFE = re.compile(f"[{_CLASS}]")
_UNSAFE_LINE = re.compile(f"[\t\n{_CLASS}]")


def escape(ch: str) -> str:
    """One character as the escape a reader can type back: ``\\x1b``, ``\\r``, ``\\udce9``."""
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _escaped(m: re.Match[str]) -> str:
    return escape(m.group())


def printable(value: Any, *, newlines: bool = True) -> str:
    """``value`` as text that cannot drive a terminal: every control character
    and lone surrogate shown as its escape.  ``newlines=False``: tabs and line
    breaks escaped too, so the text stays on one line (an ``error:`` line)."""
    s = value if isinstance(value, str) else str(value)
    pattern = _UNSAFE if newlines else _UNSAFE_LINE
    return pattern.sub(_escaped, s) if pattern.search(s) else s


class PrintableStream:
    """A text stream that writes everything through ``printable`` to the one
    it wraps; any other attribute (``isatty``, ``fileno``, ``flush``,
    ``encoding``, ``buffer``) is the wrapped stream's."""

    def __init__(self, inner: TextIO):
        self.inner = inner

    def write(self, s: str) -> int:
        self.inner.write(printable(s))
        return len(s)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _reconfigured(stream: TextIO) -> TextIO:
    """A character the terminal's encoding lacks (a sample's unicode on an
    ASCII locale) prints as an escape, never fails."""
    try:
        stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        pass
    return stream


@contextlib.contextmanager
def printable_streams() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` cleaned while the block runs (a
    closed stream, ``None``, stays as it is).  An exception that escapes the
    block leaves them cleaned, so its traceback prints clean too."""
    saved = sys.stdout, sys.stderr
    if sys.stdout is not None and not isinstance(sys.stdout, PrintableStream):
        sys.stdout = PrintableStream(_reconfigured(sys.stdout))  # type: ignore[assignment]
    if sys.stderr is not None and not isinstance(sys.stderr, PrintableStream):
        sys.stderr = PrintableStream(_reconfigured(sys.stderr))  # type: ignore[assignment]
    failed = False
    try:
        yield
    except Exception:
        failed = True  # the traceback is still to print: through the cleaned streams
        raise
    finally:
        if not failed:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    if stream is not None:
                        stream.flush()
            sys.stdout, sys.stderr = saved


def quiet_stdout() -> None:
    """Standard output is a pipe whose reader left (``| head``): point it at
    /dev/null, so the interpreter's last flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass

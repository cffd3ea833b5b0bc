"""The control channel's limits, checked before anything else is done with
what arrives: how long and how deep one request line may be (measured on the
raw bytes, so a hostile line costs a scan, never the JSON parser's
recursion), and how many file descriptors the channel leaves the run.

torch is not imported here.
"""
from __future__ import annotations

import errno
import json
import os
import re
from typing import Any

MAX_LINE = 4096  # bytes in one request line
MAX_DEPTH = 16  # nesting of arrays and objects in one request (the protocol needs 2)
FD_HEADROOM = 4  # descriptors the channel always leaves free for the run (checkpoints, the log)

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"?')
_BRACKET = re.compile(rb"[\[\]{}]")


def nesting(line: bytes) -> int:
    """How deep arrays and objects nest in ``line``, counted on the raw bytes
    (strings skipped) before any parser sees it: a deep line costs a scan,
    never the parser's recursion."""
    depth = top = 0
    for b in _BRACKET.findall(_STRING.sub(b"", line)):
        if b in (b"[", b"{"):
            depth += 1
            top = max(top, depth)
        else:
            depth -= 1
    return top


def parse_request(line: bytes) -> tuple[Any, str | None]:
    """(the request, None) or (None, why it cannot be read): the length and
    the nesting are checked before the JSON parser runs."""
    if len(line) > MAX_LINE:
        return None, f"request longer than {MAX_LINE} bytes; send one short JSON line"
    if nesting(line) > MAX_DEPTH:
        return None, (f"request nested deeper than {MAX_DEPTH} levels; send one flat JSON object "
                      'such as {"cmd": "pause"}')
    try:
        return json.loads(line), None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, 'not JSON; send one line such as {"cmd": "pause"}'


def free_descriptors() -> int | None:
    """Descriptors this process may still open (None: unknown or unlimited)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return None
        return soft - len(os.listdir("/proc/self/fd"))
    except OSError as e:
        return 0 if e.errno in (errno.EMFILE, errno.ENFILE) else None
    except (ImportError, ValueError):
        return None


class Reserve:
    """One descriptor (``/dev/null``) held back: released, it makes room to
    accept a connection and say why it is refused when none are left."""

    def __init__(self) -> None:
        self.fd: int | None = None

    def take(self) -> None:
        if self.fd is None:
            try:
                self.fd = os.open(os.devnull, os.O_RDONLY)
            except OSError:
                self.fd = None

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None

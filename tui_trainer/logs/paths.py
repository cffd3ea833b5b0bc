"""Which file a path names, and whether it can be read as a log.

Every problem is a ``LogError`` whose message names the path, what is wrong
and the fix, shown as one line before any screen.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..config import UserError
from ..run.log_writer import LOG_NAME
from .formats import hugging_face

_NOT_THERE = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)  # what Path.exists() takes for "not there"


class LogError(UserError):
    """A log that cannot be read at all (missing, binary, unreadable, nothing to plot)."""


def locate(path: Path) -> Path | None:
    """The log file PATH names (itself, DIR/losses.jsonl, or a Hugging Face
    folder's trainer_state.json: ``hugging_face.newest_state``); None if not there yet.

    One look at ``path`` decides between folder and file: asking "a folder?"
    and then "there?" would name a folder made between the two (a run that
    starts while it is followed) as the log itself."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno in _NOT_THERE:
            return None
        raise
    except ValueError:  # a name the file system cannot hold
        return None
    if stat.S_ISDIR(st.st_mode):
        log = path / LOG_NAME
        return log if log.exists() else hugging_face.newest_state(path)
    return path


def resolve(path: Path) -> Path:
    """The log file PATH names, checked readable and text; ``LogError`` says why not."""
    log = locate(path)
    if log is None:
        if path.is_dir():
            raise LogError(link_problem(path / LOG_NAME)
                           or f"{path} is a folder without {LOG_NAME}{runs_hint(path)}")
        raise LogError(link_problem(path) or f"{path} does not exist; pass a losses.jsonl or a run folder "
                       "holding one (or add --follow to wait for a run that has not started)")
    check_file(log)
    return log


def is_loop(path: Path) -> bool:
    """True when ``path`` is (or goes through) a symbolic link loop: it can never name a log."""
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def link_problem(path: Path) -> str | None:
    """Why ``path`` names nothing when a symbolic link is to blame (a loop, or
    a link to nothing); None when it simply is not there."""
    if is_loop(path):
        where = "is" if os.path.islink(path) else "goes through"
        return f"{path} {where} a symbolic link loop; pass the real losses.jsonl or run folder"
    if os.path.islink(path) and not os.path.exists(path):
        return (f"{path} is a broken symbolic link to {os.readlink(path)} (which does not exist); "
                "fix the link or pass the log itself")
    return None


def runs_hint(folder: Path) -> str:
    """The end of a message about a folder without a log: the runs it holds, if any."""
    try:
        runs = sorted(p.name for p in folder.iterdir() if (p / LOG_NAME).is_file())
    except OSError:
        runs = []
    if runs:
        more = f" and {len(runs) - 3} more" if len(runs) > 3 else ""
        return f"; it holds runs ({', '.join(runs[:3])}{more}): pass one or more of those"
    return "; pass a run folder (outputs/NAME) or its losses.jsonl"


def check_file(log: Path) -> None:
    """Raise ``LogError`` unless ``log`` is a readable regular file of text."""
    try:
        # Non-blocking: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(log, os.O_RDONLY | os.O_NONBLOCK)
    except PermissionError:
        raise LogError(f"cannot read {log}: permission denied; check its permissions (ls -l {log})") from None
    except OSError as e:
        raise LogError(f"cannot read {log}: {e.strerror or e}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LogError(f"{log} is not a regular file; pass a losses.jsonl or a run folder")
        head = os.read(fd, 8192)
    except OSError as e:
        raise LogError(f"cannot read {log}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if is_binary(head):
        raise LogError(f"{log} is a binary file, not a JSONL log; pass the run's {LOG_NAME} "
                       "(checkpoints .pt are not logs)")


def is_binary(head: bytes) -> bool:
    return b"\0" in head


def display_name(path: Path) -> str:
    """A short name for a run: its folder for DIR/losses.jsonl, else the file name."""
    p = path if not path.is_dir() else path / LOG_NAME
    return (p.parent.name or p.name) if p.name in (LOG_NAME, hugging_face.STATE_NAME) else p.name

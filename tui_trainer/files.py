"""What a path the user gave really is: a regular file, or a one-line
``UserError`` saying what it is instead (missing, a broken or looping
symbolic link, a directory, a FIFO, a device, a /proc file, unreadable),
without ever blocking on a FIFO or device."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import UserError

_SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def regular_file_size(path: str | os.PathLike[str], flag: str, what: str, kind: str = "a file") -> int:
    """The size of the regular file at ``path``, or a one-line ``UserError``
    saying what the path is instead (missing, a broken or looping symbolic
    link, a directory, a FIFO, a device, unreadable).  Never opens a FIFO or
    device for reading, so it cannot block.  ``flag`` is the option that
    named the path (``--data``), ``what`` how the error calls it ("data file"),
    ``kind`` what belongs there ("a .toml file")."""
    p = Path(path)
    try:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            try:
                st = os.stat(p)
            except (FileNotFoundError, NotADirectoryError):
                raise UserError(f"{flag} {p} is a broken symbolic link to {os.readlink(p)} (which does not "
                                f"exist); fix the link or pass {flag} the file itself") from None
    except UserError:
        raise
    except OSError as e:
        if e.errno == errno.ELOOP:
            where = "is" if stat.S_ISLNK(_lstat_mode(p)) else "goes through"
            raise UserError(f"{flag} {p} {where} a symbolic link loop; pass {flag} the real file") from None
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise UserError(f"{what} {p} not found; check the {flag} path") from None
        raise UserError(f"cannot read {what} {p} ({e.strerror}); check its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{flag} {p} is a directory; pass {kind} inside it")
    for test, kind in _SPECIAL_FILES:
        if test(st.st_mode):
            raise UserError(f"{flag} {p} is {kind}, not a regular file; save its contents to a file and pass that")
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{flag} {p} is not a regular file; pass a regular file")
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO since the stat, the open still returns.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise UserError(f"cannot read {what} {p} ({e.strerror}); check its permissions") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{flag} {p} is not a regular file; pass a regular file")
        if st.st_size == 0 and os.read(fd, 1):
            raise UserError(f"{flag} {p} is a special file that reports no size (like those in /proc); "
                            "copy it to a regular file and pass that")
    except OSError as e:
        raise UserError(f"cannot read {what} {p} ({e.strerror}); check its permissions") from None
    finally:
        os.close(fd)
    return st.st_size


def _lstat_mode(p: Path) -> int:
    try:
        return os.lstat(p).st_mode
    except OSError:
        return 0


def read_if_regular(path: str | os.PathLike[str], limit: int) -> bytes | None:
    """The bytes of ``path`` when it is a regular file of at most ``limit``
    bytes; None when it is missing, unreadable, anything else (a FIFO, a
    device, a directory) or larger.  For files the program keeps for itself
    (a cache, a run folder's own files): the check is made on the open file,
    opened without blocking, so a FIFO put in its place can never hang the
    reader, nor can a swap between a check and the read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        chunks, got = [], 0
        while got <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks) if got <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)

"""What a path the user gave really is: a regular file, or a one-line
``UserError`` saying what it is instead (missing, a broken or looping
symbolic link, a directory, a FIFO, a device, a /proc file, unreadable),
without ever blocking on a FIFO or device.  And the file a command writes:
never one of its inputs under another name (``output_file``), and written
whole or not at all (``replaced``)."""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import UserError

NAME_MAX = 255  # bytes in one folder name on the common filesystems


def folder_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be the one folder a run is made in from its name
    (``outputs/NAME``, a fork's ``NAME`` beside its parent), or None.  A name
    is one folder: never a path that leads elsewhere (``../../x``, ``a/b``,
    ``/etc``), ``.`` or ``..``, a NUL byte no path can hold, or longer than a
    folder name may be.  Untrusted (a TOML file, a checkpoint's config): the
    one check every folder made from a name passes."""
    if not name:
        return "is empty"
    if "\x00" in name:
        return "holds a NUL byte, which no folder name can"
    if name in (".", ".."):
        return "is not a folder name"
    if os.sep in name or (os.altsep and os.altsep in name):
        return f"holds a '{os.sep}': a name is one folder, not a path"
    try:
        size = len(os.fsencode(name))
    except UnicodeError:
        return "holds a character no file name can"
    if size > NAME_MAX:
        return f"is {size} bytes long, more than a folder name may be ({NAME_MAX})"
    return None


def checked_folder_name(name: str, flag: str = "--name") -> str:
    """``name``, or the one-line ``UserError`` of ``folder_name_problem``."""
    if (why := folder_name_problem(name)) is not None:
        shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:60] + "…"
        raise UserError(f"{flag} {shown} {why}; pass a plain name such as 'lr-half' "
                        "(--out PATH chooses the folder itself)")
    return name


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


def output_file(out: str | os.PathLike[str], inputs: Iterable[Path], flag: str = "-o") -> Path:
    """The file a command is to write for ``flag out``, checked first: never
    one of ``inputs`` under any name (the same path, ``./``, a symbolic or a
    hard link: compared by device and inode), never a folder, FIFO or device.
    Returns the real path (links resolved), which ``replaced`` then writes."""
    p = Path(out)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None  # a new file (or a link to one not made yet)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"{flag} {p} is a symbolic link loop; pass another file name") from None
        if e.errno == errno.ENOTDIR:
            raise UserError(f"{flag} {p}: a part of that path is not a folder; pass another file name") from None
        raise UserError(f"cannot write {p} ({e.strerror}); check its folder and permissions") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise UserError(f"{flag} {p} is a folder; pass a file name (e.g. {p / 'runs.csv'})")
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{flag} {p} is not a regular file; pass a new file name")
        if (source := _input_at(st, inputs)) is not None:
            alias = "" if os.fspath(source) == os.fspath(p) else f" {source} (the same file)"
            raise UserError(f"{flag} {p} is the input{alias}: writing it would overwrite what it reads; "
                            "pass another file name")
        if not os.access(p, os.W_OK):  # replaced by a rename, a read-only file would be overwritten anyway
            raise UserError(f"cannot write {p} (permission denied); check its permissions (ls -l {p})")
    return Path(os.path.realpath(p))


def check_stdout(inputs: Iterable[Path], flag: str = "-o -") -> None:
    """Standard output redirected into one of ``inputs`` (``>> log``) is
    refused like ``output_file``: the command would read what it writes."""
    try:
        st = os.fstat(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # no descriptor (a test's capture): not a file
        return
    if stat.S_ISREG(st.st_mode) and (source := _input_at(st, inputs)) is not None:
        raise UserError(f"{flag} writes to standard output, which is the input {source}: it would read "
                        "what it writes; redirect to another file")


def _input_at(st: os.stat_result, inputs: Iterable[Path]) -> Path | None:
    """The input that is the file ``st`` describes (device and inode: any name, any link)."""
    for source in inputs:
        try:
            if os.path.samestat(st, os.stat(source)):
                return source
        except OSError:
            continue
    return None


@contextlib.contextmanager
def replaced(path: Path, binary: bool = False) -> Iterator[IO[Any]]:
    """Write ``path`` whole or not at all: into a temporary file beside it,
    renamed over it only when the block ends without an error, so a failed or
    interrupted write leaves the old file as it was (and no half file)."""
    folder = path.parent
    tmp = folder / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    except OSError as e:
        raise UserError(f"cannot write {path} ({e.strerror}); check that its folder exists and is writable") \
            from None
    try:
        with contextlib.suppress(OSError):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))  # replacing a file keeps its permissions
        mode = "wb" if binary else "w"
        extra = {} if binary else {"newline": "", "encoding": "utf-8", "errors": "backslashreplace"}
        with open(fd, mode, **extra) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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

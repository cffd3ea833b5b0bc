"""Writing a checkpoint's files so that a kill at any instant leaves the old
file or the new one: a private temporary file beside the target (0600 from
its first instant, named with our pid so the next save can tell a dead
writer's leftovers), fsync, ``os.replace``, fsync the folder; links
(``latest.pt``, ``best.pt``) repointed the same way.  ``checkpoint.py`` puts
them together; a write that hits the process's file size limit becomes one
plain line (``CheckpointWriteError``)."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


class CheckpointWriteError(OSError):
    """A save that failed for a reason worth one plain line (``str`` is just that line)."""

    def __str__(self) -> str:
        return str(self.strerror)


def size_limit_error(e: BaseException, path: Path, tmp: Path) -> CheckpointWriteError | None:
    """The save hit the process's file size limit (``ulimit -f``; Python ignores
    SIGXFSZ, so the write fails with EFBIG, which torch reports as an
    ``[enforce fail at inline_container.cc]``): say so, or None if it did not."""
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return None
    if limit == resource.RLIM_INFINITY:
        return None
    try:
        full = tmp.stat().st_size >= limit
    except OSError:
        full = False
    if not (full or getattr(e, "errno", None) == errno.EFBIG):
        return None
    return CheckpointWriteError(errno.EFBIG, f"file size limit reached writing checkpoint {path} "
                                             f"(ulimit -f allows {limit} bytes); raise it (ulimit -f unlimited)")


def private_file(path: Path) -> Any:
    """A new file open for writing, 0600 from its first instant: a checkpoint
    holds the weights, the optimizer and the RNG state, which are the run
    owner's alone (``latest.pt`` and ``best.pt`` are links to it or copies)."""
    path.unlink(missing_ok=True)  # a leftover of ours (same pid) from a failed write
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    return os.fdopen(fd, "wb")


def link_atomic(src: Path, dst: Path) -> None:
    """Point ``dst`` at the same bytes as ``src``, atomically."""
    tmp = tmp_name(dst)
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:  # no hard links here (some network or FAT filesystems)
            with open(src, "rb") as fi, private_file(tmp) as fo:
                shutil.copyfileobj(fi, fo)
                fo.flush()
                os.fsync(fo.fileno())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(dst.parent)

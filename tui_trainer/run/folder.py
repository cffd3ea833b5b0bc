"""Run folders: a fresh one per run, an existing run is never clobbered, and
one writer at a time.

One writer.  A run folder is locked (``.lock``, an advisory ``flock``) while a
process trains in it, so resuming a run that is still going (say after SSH
dropped and the run carried on) is refused instead of interleaving two
writers.  The kernel drops the lock when the process dies, even by kill -9.
"""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer is then up to the user
    fcntl = None  # type: ignore[assignment]

from ..config import UserError
from ..files import checked_folder_name
from ..records import json_object
from .log_writer import LOG_NAME

DEFAULT_ROOT = Path("outputs")
LOCK_NAME = ".lock"


def holds_run(path: Path) -> bool:
    return path.is_dir() and ((path / LOG_NAME).exists() or any(path.glob("*.pt")))


def runs_in(folder: Path, limit: int = 1000) -> list[str]:
    """Names of the run folders directly inside ``folder`` (sorted)."""
    try:
        return sorted(p.name for p in folder.iterdir() if (p / LOG_NAME).is_file())[:limit]
    except OSError:
        return []


def is_live(folder: Path) -> bool:
    """True while a process trains in ``folder``: its ``.lock`` is held.
    The kernel drops the lock when that process dies, even by kill -9, so
    this is never fooled by a stale file."""
    if fcntl is None:
        return False
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def last_end(folder: Path, tail_bytes: int = 1 << 16) -> dict[str, Any] | None:
    """The run's last ``run_end`` record if its log ends with one (read from
    the tail only); None when the run did not end cleanly or has no log."""
    try:
        # O_NONBLOCK and a check of the open file: a FIFO in the log's place must not hang us
        fd = os.open(Path(folder) / LOG_NAME, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        os.lseek(fd, max(0, st.st_size - tail_bytes), os.SEEK_SET)
        lines = os.read(fd, tail_bytes).splitlines()
    except OSError:
        return None
    finally:
        os.close(fd)
    for raw in reversed(lines):
        if b'"type"' not in raw:
            continue
        rec = json_object(raw)
        if rec is None:
            continue
        if rec.get("type") == "run_end":
            return rec
        if rec.get("type") in ("train", "eval", "checkpoint", "run_start"):
            return None  # records after the last run_end: a later session did not end
    return None


def check_new_run_dir(out: str | None) -> None:
    """Refuse, before anything is written, an --out that already holds a run."""
    if out is None:
        return
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} exists and is not a folder; pass a new folder name")
    if holds_run(path):
        raise UserError(f"--out {path} already holds a run; pass a new folder, or --resume {path} to continue it")


def create_run_dir(out: str | None, name: str | None = None, root: Path = DEFAULT_ROOT) -> Path:
    """Create and return the run folder: ``out`` exactly, or a fresh name under ``root``
    (``name``: one folder inside it, never a path that leads elsewhere)."""
    if out is None and name is not None:
        checked_folder_name(name)
    try:
        if out is not None:
            path = Path(out)
            check_new_run_dir(out)
            path.mkdir(parents=True, exist_ok=True)
            return path
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the run folder {out or root} ({e.strerror}); "
                        "pass --out with a folder on a writable disk") from None
    base = name or time.strftime("run-%Y%m%d-%H%M%S")
    for i in range(1, 10_000):
        path = root / (base if i == 1 else f"{base}-{i}")
        try:
            os.mkdir(path)  # atomic: two runs started in the same second get different folders
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise UserError(f"cannot create the run folder {path} ({e.strerror}); "
                            "pass --out with a folder on a writable disk") from None
    raise UserError(f"could not find a free run name under {root}; pass --out")


def discard_unstarted(folder: Path) -> None:
    """Remove a run folder this start created when training never began (a
    stop or an error while it loaded): its lock and an empty log go, then
    the folder if nothing else is in it.  Never a byte of a real run."""
    for name in (LOCK_NAME, LOG_NAME):
        p = Path(folder) / name
        try:
            if name == LOCK_NAME or os.lstat(p).st_size == 0:
                p.unlink()
        except OSError:
            pass
    try:
        os.rmdir(folder)
    except OSError:
        pass  # something else is in it: it stays


class RunLock:
    """An advisory lock on a run folder, held while a process trains in it.

    The file is 0600, like every file in the folder that carries state: a
    lock others can open is a lock another user's ``flock -s`` can hold,
    keeping the owner from resuming their own run."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        if fcntl is None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_NONBLOCK", 0), 0o600)
        except OSError as e:
            raise UserError(f"cannot open the lock {self.path} ({e.strerror}); remove it if it is not a "
                            "regular file of yours, then try again") from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise UserError(f"the lock {self.path} is not a regular file; remove it, then try again")
        if stat.S_IMODE(mode) != 0o600:
            try:
                os.fchmod(fd, 0o600)  # a lock left by an older version, made 0644
            except OSError:
                pass  # not ours to change: the flock below says whether we may go on
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = verified_holder(fd, self.path.parent)
            finally:
                os.close(fd)
            if holder is None:
                raise UserError(f"run {self.path.parent} is locked by another process (not a tui-trainer "
                                f"that could be identified); find it with `fuser {self.path}` and let it "
                                "end before resuming") from None
            raise UserError(f"run {self.path.parent} is in use by another tui-trainer (pid {holder}); "
                            f"follow it with `tui-trainer view --follow {self.path.parent}`, or stop it "
                            f"(kill -TERM {holder}) before resuming") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (harmless)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def verified_holder(fd: int, folder: Path) -> int | None:
    """The pid written in the lock file open at ``fd``, when that process is
    seen holding the lock exclusively (``/proc/locks``, or, where there is
    none, the run's control socket answering with that pid); None otherwise:
    a pid read from a file alone may be stale or planted, and must not be
    offered to ``kill``."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", errors="replace").strip()
        st = os.fstat(fd)
    except OSError:
        return None
    if not text.isdigit() or not 0 < int(text) < 1 << 22:
        return None
    pid = int(text)
    holders = lock_holders(st)
    if holders is not None:
        return pid if holders.get(pid) == "WRITE" else None
    try:
        from ..control.channel import request

        answer = request(folder, "status", timeout=1.0)
        return pid if isinstance(answer, dict) and answer.get("pid") == pid else None
    except Exception:
        return None


def lock_holders(st: os.stat_result, table: str = "/proc/locks") -> dict[int, str] | None:
    """{pid: "READ" or "WRITE"} of the flocks held on the file ``st`` describes,
    from the kernel's table; None where there is no such table."""
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        fd = os.open(table, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        chunks = []
        while len(chunks) < 256:  # 4 MB: far more locks than a machine holds
            chunk = os.read(fd, 1 << 14)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    out: dict[int, str] = {}
    for line in b"".join(chunks).decode("ascii", errors="replace").splitlines():
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 6547 fe:00:2146329 0 EOF"; waiters have "->" after the number
        if len(parts) < 6 or parts[1] != "FLOCK" or parts[5].lower() != want or not parts[4].isdigit():
            continue
        out[int(parts[4])] = "WRITE" if parts[3] == "WRITE" or out.get(int(parts[4])) == "WRITE" else parts[3]
    return out

"""Run folders: a fresh one per run, an existing run is never clobbered, and
one writer at a time.

One writer.  A run folder is locked (``.lock``, an advisory ``flock``) while a
process trains in it, so resuming a run that is still going (say after SSH
dropped and the run carried on) is refused instead of interleaving two
writers.  The kernel drops the lock when the process dies, even by kill -9.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer is then up to the user
    fcntl = None  # type: ignore[assignment]

from .config import UserError
from .runlog import LOG_NAME

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
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY)
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
    import json

    try:
        with open(Path(folder) / LOG_NAME, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - tail_bytes))
            lines = f.read().splitlines()
    except OSError:
        return None
    for raw in reversed(lines):
        if b'"type"' not in raw:
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("type") == "run_end":
            return rec
        if isinstance(rec, dict) and rec.get("type") in ("train", "eval", "checkpoint", "run_start"):
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
    """Create and return the run folder: ``out`` exactly, or a fresh name under ``root``."""
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


class RunLock:
    """An advisory lock on a run folder, held while a process trains in it."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        if fcntl is None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise UserError(f"run {self.path.parent} is in use by another tui-trainer (pid {pid}); "
                            f"follow it with `tui-trainer view --follow {self.path.parent}`, or stop it "
                            f"(kill -TERM {pid}) before resuming") from None
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

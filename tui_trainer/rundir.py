"""Run folders: a fresh one per run, and an existing run is never clobbered."""
from __future__ import annotations

import os
import time
from pathlib import Path

from .config import UserError
from .runlog import LOG_NAME

DEFAULT_ROOT = Path("outputs")


def holds_run(path: Path) -> bool:
    return path.is_dir() and ((path / LOG_NAME).exists() or any(path.glob("*.pt")))


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
    if out is not None:
        path = Path(out)
        check_new_run_dir(out)
        path.mkdir(parents=True, exist_ok=True)
        return path
    root.mkdir(parents=True, exist_ok=True)
    base = name or time.strftime("run-%Y%m%d-%H%M%S")
    for i in range(1, 10_000):
        path = root / (base if i == 1 else f"{base}-{i}")
        try:
            os.mkdir(path)  # atomic: two runs started in the same second get different folders
            return path
        except FileExistsError:
            continue
    raise UserError(f"could not find a free run name under {root}; pass --out")

"""Checkpoints: written atomically, loaded without unpickling arbitrary code.

Layout inside a run folder:
    ckpt-step00000400.pt   one per save, the newest ``keep`` retained
    latest.pt              hard link (or copy) of the newest save
    best.pt                hard link (or copy) of the save with the lowest val loss

Each file is written to a temporary name in the same folder, flushed and
fsynced, then ``os.replace``d into place: a kill at any instant leaves the old
file or the new one, never a torn one.
"""
from __future__ import annotations

import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from .config import UserError

LATEST = "latest.pt"
BEST = "best.pt"
_STEP_RE = re.compile(r"^ckpt-step(\d+)\.pt$")


class CheckpointError(UserError):
    pass


def _fsync_dir(path: Path) -> None:
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


def atomic_save(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def _link_atomic(src: Path, dst: Path) -> None:
    """Point ``dst`` at the same bytes as ``src``, atomically."""
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:  # no hard links here (some network or FAT filesystems)
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    _fsync_dir(dst.parent)


def step_path(run_dir: Path, step: int) -> Path:
    return run_dir / f"ckpt-step{step:08d}.pt"


def save_checkpoint(state: dict[str, Any], run_dir: str | os.PathLike[str], step: int, *,
                    keep: int, best: bool) -> Path:
    """Write this step's checkpoint, repoint latest (and best), prune old ones."""
    run_dir = Path(run_dir)
    path = atomic_save(state, step_path(run_dir, step))
    _link_atomic(path, run_dir / LATEST)
    if best:
        _link_atomic(path, run_dir / BEST)
    prune(run_dir, keep)
    return path


def list_step_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for p in run_dir.iterdir():
        m = _STEP_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def prune(run_dir: Path, keep: int) -> None:
    # latest.pt and best.pt are links of their own, so removing a step file
    # never removes the bytes they point at.
    steps = list_step_checkpoints(run_dir)
    for _, p in steps[: max(0, len(steps) - max(keep, 1))]:
        p.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain
    containers only, so a hostile file cannot run code.  Any unreadable file
    becomes a one-line ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; pass a run folder that has {LATEST}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError,
            OSError, AttributeError, KeyError, IndexError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is truncated or not a tui-trainer checkpoint "
                              f"({first[:120]}); resume from another checkpoint in the folder") from None
    if not isinstance(state, dict) or state.get("format") != "tui-trainer/1":
        raise CheckpointError(f"{path} is not a tui-trainer checkpoint; pass a checkpoint this tool wrote")
    return state

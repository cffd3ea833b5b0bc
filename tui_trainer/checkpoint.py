"""Checkpoints: written atomically, loaded without unpickling arbitrary code.

Layout inside a run folder:
    ckpt-step00000400.pt   one per save: the newest, plus ``keep`` older ones
    latest.pt              hard link (or copy) of the newest save
    best.pt                hard link (or copy) of the save with the lowest val loss

Each file is written to a temporary name in the same folder, flushed and
fsynced, then ``os.replace``d into place: a kill at any instant leaves the old
file or the new one, never a torn one.  ``latest.pt`` is repointed only after
the step file is complete, so it always names a whole checkpoint; a kill
between the two leaves ``latest.pt`` at the previous save, which is still a
valid place to resume from.  Temporary files a killed writer left behind are
removed by the next save.

Loading uses ``torch.load(weights_only=True)``: tensors and plain containers
only, so a hostile file cannot run code, and every unreadable file (truncated,
random bytes, someone else's pickle) becomes a one-line ``CheckpointError``.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from .config import UserError

FORMAT = "tui-trainer/1"
LATEST = "latest.pt"
BEST = "best.pt"
_STEP_RE = re.compile(r"^ckpt-step(\d+)\.pt$")
_TMP_RE = re.compile(r"^\..+\.tmp-\d+$")
# What a checkpoint must hold for --resume to continue a run from it.
HINT = "resume from another ckpt-step*.pt file in that folder"
REQUIRED_KEYS = ("format", "step", "tokens", "config", "model", "optimizer", "sampler", "rng")


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


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_save(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, rename."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only still there if the write failed
    _fsync_dir(path.parent)
    return path


def _link_atomic(src: Path, dst: Path) -> None:
    """Point ``dst`` at the same bytes as ``src``, atomically."""
    tmp = _tmp_name(dst)
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:  # no hard links here (some network or FAT filesystems)
            with open(src, "rb") as fi, open(tmp, "wb") as fo:
                shutil.copyfileobj(fi, fo)
                fo.flush()
                os.fsync(fo.fileno())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(dst.parent)


def step_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / f"ckpt-step{step:08d}.pt"


def save_checkpoint(state: dict[str, Any], run_dir: str | os.PathLike[str], step: int, *,
                    keep: int, best: bool) -> Path:
    """Write this step's checkpoint, repoint latest (and best), prune old ones."""
    run_dir = Path(run_dir)
    remove_stale_temps(run_dir)
    path = atomic_save(state, step_path(run_dir, step))
    _link_atomic(path, run_dir / LATEST)
    if best:
        _link_atomic(path, run_dir / BEST)
    prune(run_dir, keep)
    return path


def remove_stale_temps(run_dir: Path) -> None:
    """Delete temporary files of writers that were killed mid-save.  One
    process writes a run folder at a time (see ``resume.RunLock``), so any
    temporary file not named with our pid is a leftover."""
    mine = f".tmp-{os.getpid()}"
    for p in Path(run_dir).iterdir():
        if _TMP_RE.match(p.name) and not p.name.endswith(mine):
            p.unlink(missing_ok=True)


def list_step_checkpoints(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    found = []
    for p in Path(run_dir).iterdir():
        m = _STEP_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def prune(run_dir: Path, keep: int) -> None:
    """Keep the newest step file and the ``keep`` before it.

    latest.pt and best.pt are links of their own, so removing a step file
    never removes the bytes they point at."""
    steps = list_step_checkpoints(run_dir)
    for _, p in steps[: max(0, len(steps) - (max(keep, 0) + 1))]:
        p.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.  Any file that is not a
    whole tui-trainer checkpoint becomes a one-line ``CheckpointError``."""
    path = Path(path)
    if path.is_dir():
        path = path / LATEST
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; pass a run folder that has {LATEST}, "
                              "or one of its ckpt-step*.pt files")
    hint = HINT
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # any unreadable file: truncated, random bytes, a foreign pickle
        # torch's first sentence names the fault ("...failed finding central
        # directory", "Weights only load failed"); the rest is advice for coders.
        text = str(e).strip().splitlines()[0].split(". ")[0].rstrip(".") if str(e).strip() else ""
        reason = text[:90] if text else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is truncated or not a tui-trainer checkpoint "
                              f"({reason}); {hint}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a tui-trainer checkpoint (no {FORMAT!r} format tag); "
                              "pass a checkpoint this tool wrote")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}; {hint}")
    return state

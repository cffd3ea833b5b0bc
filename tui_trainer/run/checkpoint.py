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

The policy (when a save is due, which save is the best, what is kept, and
that a diverged model never overwrites a good checkpoint) is
``CheckpointManager``'s, in one place; a run owns one.  torch is imported only
to write or read a file, so the run machinery stays importable without it.
"""
from __future__ import annotations

import errno
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Literal

from .checkpoint_writer import BackgroundWriter, Snapshotter, Write
from ..config import UserError

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
    import torch

    path = Path(path)
    tmp = _tmp_name(path)
    try:
        with _private_file(tmp) as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        limited = _size_limit_error(e, path, tmp)
        if limited is None:
            raise
        raise limited from None
    finally:
        tmp.unlink(missing_ok=True)  # only still there if the write failed
    _fsync_dir(path.parent)
    return path


class CheckpointWriteError(OSError):
    """A save that failed for a reason worth one plain line (``str`` is just that line)."""

    def __str__(self) -> str:
        return str(self.strerror)


def _size_limit_error(e: BaseException, path: Path, tmp: Path) -> CheckpointWriteError | None:
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


def _private_file(path: Path) -> Any:
    """A new file open for writing, 0600 from its first instant: a checkpoint
    holds the weights, the optimizer and the RNG state, which are the run
    owner's alone (``latest.pt`` and ``best.pt`` are links to it or copies)."""
    path.unlink(missing_ok=True)  # a leftover of ours (same pid) from a failed write
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    return os.fdopen(fd, "wb")


def _link_atomic(src: Path, dst: Path) -> None:
    """Point ``dst`` at the same bytes as ``src``, atomically."""
    tmp = _tmp_name(dst)
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:  # no hard links here (some network or FAT filesystems)
            with open(src, "rb") as fi, _private_file(tmp) as fo:
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
    import torch

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
        raise CheckpointError(f"checkpoint {path} is not a tui-trainer checkpoint (no {FORMAT!r} format tag); "
                              f"{hint}")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}; {hint}")
    return state


# --- the policy -------------------------------------------------------------

Reason = Literal["scheduled", "manual", "final", "best"]


class CheckpointManager:
    """When a run saves, what counts as best, and what is refused.

    - ``due(step, total)``: a scheduled save every ``every`` steps and at the
      last step.
    - ``save(...)``: writes ``ckpt-stepN.pt``, repoints ``latest.pt`` (and
      ``best.pt`` when this step's eval is the lowest val loss so far), keeps
      ``keep`` older step files, and reports through ``emit`` (a ``status``
      "checkpointing", then the ``checkpoint`` record once the file is
      complete).  A model that is diverged or has non-finite weights is
      refused with an ``ack``: the last good checkpoint stays.
    - ``background=True``: the state is copied to CPU memory and written on a
      thread while training goes on (``checkpoint_writer``, ``guard``); at
      most one write is in flight, a save that comes due before it ended
      waits for it (and says so), and a final save is always written before
      ``save`` returns.
      ``poll()`` at each step boundary logs a finished write, or raises the
      error it ended with; ``wait()`` does the same for the one in flight.
    - ``best_val``: the lowest val loss saved as best so far (in the checkpoint,
      so a resumed run keeps comparing against it).

    ``folder`` None (or ``enabled`` False: a data-parallel rank other than 0)
    makes every save a no-op.
    """

    def __init__(self, folder: Path | None, *, every: int, keep: int,
                 emit: Callable[[Any], None], enabled: bool = True):
        self.folder = folder
        self.every = max(1, every)
        self.keep = keep
        self.emit = emit
        self.enabled = enabled and folder is not None
        self.best_val = math.inf
        self.last_step = -1  # step of the last save (or of the checkpoint resumed from)
        self._snapshots = Snapshotter()
        self._writer = BackgroundWriter()
        self._guarded = False  # see guard()

    def due(self, step: int, total: int) -> bool:
        return step % self.every == 0 or step == total

    def is_new_best(self, val: float | None) -> bool:
        return val is not None and math.isfinite(val) and val < self.best_val

    def guard(self, optimizer: Any) -> None:
        """``optimizer`` is what changes the saved tensors in place: its step
        waits until a background snapshot is copied.  With a guard, the copy
        is made on the writer's thread, overlapping the next forward and
        backward; without one (a loop of your own), on the caller's thread."""
        optimizer.register_step_pre_hook(lambda *_: self._writer.wait_copied())
        self._guarded = True

    def save(self, step: int, state: Callable[[], dict[str, Any]], *, reason: Reason,
             val_loss: float | None, healthy: bool, state_after: str, background: bool = False,
             check: Callable[[Any], bool] | None = None) -> Path | None:
        """Save at ``step``; ``val_loss`` is this step's eval (None if none),
        ``healthy`` False refuses, and so does ``check(state)`` False (run on
        the copy, in the background: a non-finite weight); ``state_after`` is
        the status to report once written ("running" or "paused");
        ``background`` writes on a thread (never a final save).  The path the
        file has (or will have)."""
        from ..records import Status

        if not self.enabled:
            return None
        if not healthy:
            return self._refuse(step)
        t = time.perf_counter()
        self.emit(Status(step=step, state="checkpointing"))
        self.wait(step)  # one write at a time; its buffers are the next snapshot's
        best = self.is_new_best(val_loss)
        before = self.best_val, self.last_step
        if best:
            self.best_val = val_loss  # type: ignore[assignment]
        assert self.folder is not None
        folder, keep = self.folder, self.keep
        meta = {"reason": reason, "val_loss": val_loss, "before": before}
        if background and reason != "final":
            snap = self._snapshots.take(state())
            if not self._guarded:
                snap.complete()
            job = Write(step=step, meta=meta, blocked_s=time.perf_counter() - t)
            self._writer.start(job, snap, check, lambda s: save_checkpoint(s, folder, step, keep=keep, best=best))
            self.last_step = step
            self.emit(Status(step=step, state=state_after))  # type: ignore[arg-type]
            return step_path(folder, step)
        full = state()
        if check is not None and not check(full):
            self.best_val = before[0]
            self._refuse(step)
            self.emit(Status(step=step, state=state_after))  # type: ignore[arg-type]
            return None
        path = save_checkpoint(full, folder, step, keep=keep, best=best)
        self.last_step = step
        took = time.perf_counter() - t
        self._log(Write(step=step, meta=meta, blocked_s=took, write_s=took, path=path))
        self.emit(Status(step=step, state=state_after))  # type: ignore[arg-type]
        return path

    def _refuse(self, step: int) -> None:
        from ..records import Ack

        # A diverged model must never overwrite a good checkpoint.
        self.emit(Ack(step=step, command="checkpoint", ok=False,
                      message="model diverged: checkpoint refused, the last good one is kept"))

    def poll(self) -> None:
        """At a step boundary: log the background write if it has ended (or
        raise what it failed with)."""
        if self.enabled and self._writer.pending is not None and not self._writer.busy:
            self.wait()

    def wait(self, step: int | None = None) -> None:
        """Wait for the write in flight, if any, then log it (or raise its
        error, the one a synchronous save would have raised).  ``step``: a
        save waiting at that step, said in a ``status`` record."""
        from ..records import Status

        if not self.enabled:  # a rank that does not write, or a forked child (its copy of a job has no thread)
            return
        if self._writer.busy and step is not None:
            self.emit(Status(step=step, state="checkpointing", detail="waiting for the previous checkpoint write"))
        job = self._writer.take()
        if job is None:
            return
        if job.error is not None:
            raise job.error
        if job.refused:  # nothing was written: as before the save
            self.best_val, self.last_step = job.meta["before"]
            return self._refuse(job.step)
        self._log(job)

    def _log(self, job: Write) -> None:
        from ..records import Checkpoint, clean_text

        self.emit(Checkpoint(step=job.step, path=clean_text(str(job.path)), reason=job.meta["reason"],
                             val_loss=job.meta["val_loss"], blocked_s=round(job.blocked_s, 4),
                             write_s=round(job.write_s, 4)))

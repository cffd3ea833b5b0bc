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
``CheckpointManager``'s, in one place: a run owns one, and its loop asks it
(``after``) at each point where a save may follow.  The bytes reach the disk
through ``atomic_file`` (here, or on a thread: ``checkpoint_writer``).  torch
is imported only to write or read a file, so the run machinery stays
importable without it.
"""
from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

from .atomic_file import CheckpointWriteError  # noqa: F401  (re-exported: a save's one-line error)
from .atomic_file import fsync_dir as _fsync_dir, link_atomic as _link_atomic, private_file as _private_file
from .atomic_file import size_limit_error as _size_limit_error, tmp_name as _tmp_name
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
# What just happened, as a loop tells it to ``CheckpointManager.after``.
Moment = Literal["step", "eval", "save", "end"]


class RunView(Protocol):
    """What a manager reads of the run that owns it (``run.Run``)."""

    stopping: bool
    paused: bool
    total_steps: int


@dataclass
class Source:
    """What a loop gives its manager, once (``bind``)."""

    state: Callable[[], dict[str, Any]]  # the checkpoint's contents, made only when a save is written
    check: Callable[[Any], bool] | None = None  # on the copy: False refuses (a non-finite weight)
    healthy: Callable[[], bool] = lambda: True  # False refuses at once (the loop saw the model diverge)
    background: bool = False  # write on a thread while training goes on


class CheckpointManager:
    """The one place that decides when a run checkpoints, which save is the
    best and what is refused, and that writes: the loop asks, the manager
    decides (torchtitan's ``CheckpointManager.save(step, force)``).  A loop
    says once what a checkpoint holds (``bind``), then calls ``after``:

    - ``after(step)`` once each step is trained, with ``val_loss`` when it had
      an eval: a *scheduled* save every ``every`` steps and at the last step
      (``best.pt`` too when the eval is the lowest so far); between schedules
      a *best* save when it is (not while the run stops: the final save is).
    - ``after(step, "eval", val_loss=v)`` after an eval asked for: *best* if lowest.
    - ``after(step, "save")``: a save asked for now, *manual* (a loop of your
      own gives ``state`` and its ``reason``).
    - ``after(step, "end", clean=...)``: the write in flight is waited for
      (logged, or its error raised), then a *final* save unless this step is
      saved, nothing was trained, the run ended on an error (``clean`` False)
      or the model diverged.

    *Refused* (an ``ack``; the last good checkpoint stays): the loop says the
    model diverged (``healthy``), or the copy has a non-finite weight
    (``check``).  A save writes ``ckpt-stepN.pt``, repoints ``latest.pt`` (and
    ``best.pt``), keeps ``keep`` older step files, and reports a ``status``
    "checkpointing", then the ``checkpoint`` record once the file is whole.
    ``background``: the state is copied to CPU memory and written on a thread
    while training goes on (``checkpoint_writer``, ``guard``); one write in
    flight at most, a save due before it ended waits for it (and says so), a
    final save is written before ``after`` returns.  ``poll()`` at each step
    boundary logs a finished write, or raises the error it ended with.

    ``best_val`` and ``last_step`` are read from outside and set by methods
    only (``restore``: a resumed run's).  ``folder`` None, or ``enabled``
    False (a data-parallel rank other than 0; a forked child: ``disable``),
    makes every save a no-op.
    """

    def __init__(self, folder: Path | None, *, every: int, keep: int,
                 emit: Callable[[Any], None], enabled: bool = True, run: RunView | None = None):
        self.folder = folder
        self.every = max(1, every)
        self.keep = keep
        self.emit = emit
        self._may_write = enabled
        self.enabled = enabled and folder is not None
        self.best_val = math.inf
        self.last_step = -1  # step of the last save (or of the checkpoint resumed from)
        self._run = run
        self._source: Source | None = None
        self._snapshots = Snapshotter()
        self._writer = BackgroundWriter()
        self._guarded = False  # see guard()

    # --- set up: by the run that owns it, and by its loop ---
    def use_folder(self, folder: Path, *, every: int, keep: int) -> None:
        """The run's folder, once it exists (a run made before its folder: ``Run.take_folder``)."""
        assert self.folder is None, "a manager's folder is given once"
        self.folder, self.every, self.keep = Path(folder), max(1, every), keep
        self.enabled = self._may_write

    def disable(self) -> None:
        """Write nothing from now on (a forked child's copy of the run)."""
        self._may_write = self.enabled = False

    def set_every(self, every: int) -> None:
        """The cadence, changed while training (the live setting ``checkpoint_every``)."""
        self.every = max(1, every)

    def restore(self, step: int, best_val: float = math.inf) -> None:
        """A resumed run: the step it continues from (saved there already) and
        the val loss its ``best.pt`` was chosen by."""
        self.last_step, self.best_val = step, best_val

    def bind(self, state: Callable[[], dict[str, Any]], *, check: Callable[[Any], bool] | None = None,
             healthy: Callable[[], bool] | None = None, background: bool = False, optimizer: Any = None) -> None:
        """What the loop's checkpoints hold (see ``Source``); ``optimizer``: ``guard`` it."""
        self._source = Source(state, check, healthy or (lambda: True), background)
        if optimizer is not None:
            self.guard(optimizer)

    # --- the loop asks ---
    def after(self, step: int, moment: Moment = "step", *, val_loss: float | None = None,
              state: Callable[[], Any] | None = None, reason: Reason | None = None,
              clean: bool = True) -> Path | None:
        """The loop's one question, asked after ``moment`` at ``step`` (see
        the class docstring).  The path of the checkpoint written or being
        written, or None when there is none."""
        if not self.enabled:
            return None
        src = self._source
        if moment == "end":
            self.wait()  # before the final save: it may raise the error the write in flight ended with
            if not clean or step <= 0 or step == self.last_step or src is None or not src.healthy():
                return None
            return self._save_from(src, step, "final", val_loss)
        if moment == "save" and state is not None:  # a loop of your own, saving what it gives
            return self.save(step, state, reason=reason or "manual", val_loss=val_loss, healthy=True,
                             state_after=self._state_after())
        if src is None:
            return None  # nothing to save from: a loop of your own saves when it says so
        if moment == "save":
            return self._save_from(src, step, reason or "manual", val_loss)
        if moment == "step" and self.due(step):
            return self._save_from(src, step, "scheduled", val_loss)
        if self.is_new_best(val_loss) and not (self._run is not None and self._run.stopping):
            return self._save_from(src, step, "best", val_loss)
        return None

    def _save_from(self, src: Source, step: int, reason: Reason, val_loss: float | None) -> Path | None:
        return self.save(step, src.state, reason=reason, val_loss=val_loss, healthy=src.healthy(),
                         state_after=self._state_after(), background=src.background, check=src.check)

    def _state_after(self) -> str:
        return "paused" if self._run is not None and self._run.paused else "running"

    def due(self, step: int, total: int | None = None) -> bool:
        """A scheduled save at ``step``: every ``every`` steps, and at the last
        (``total``; default: the run's planned steps)."""
        if total is None:
            total = self._run.total_steps if self._run is not None else 0
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
        """Write the save ``after`` decided on (the one caller in the package).
        ``val_loss``: this step's eval (None if none); ``healthy`` False or
        ``check(state)`` False (on the copy) refuses; ``state_after``: the
        status once written; ``background``: on a thread (never a final save)."""
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

"""Checkpoints written in the background: a snapshot at the step boundary, the
write on one thread while training goes on.

The same two halves as ``torch.distributed.checkpoint.async_save`` and
torchtitan's ``async_with_pinned_mem``: training waits only while the state is
copied into CPU memory (pinned when it lives on a GPU; the buffers are
allocated at the first save and reused), then the serialisation and the I/O
happen elsewhere.  DCP writes a folder of shards; here the second half is the
existing single-file atomic writer (``checkpoint.save_checkpoint``: temporary
file, fsync, rename, fsync the folder, ``latest.pt``/``best.pt`` links,
pruning) run as it is on one thread, so a kill -9 at any instant still leaves
the old file or the new one.

The copy is needed on CPU too: the optimizer step updates the weights and the
Adam moments in place, so the thread must not read the live tensors.  On CPU
the copy itself is made on the thread, overlapping the next step's forward and
backward: the optimizer step, the only thing that changes those tensors, waits
for it (``CheckpointManager.guard``).  On a GPU the copies are queued on the
training thread (non-blocking, in stream order before the next step's
kernels), and the thread waits for them to land.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

Key = tuple[Any, ...]


class Snapshot:
    """A state's structure with CPU buffers in place of its tensors; the
    copies into them are done by ``complete`` (GPU copies are already queued)."""

    def __init__(self, tree: Any, pending: list[tuple[Any, Any]], event: Any):
        self.tree, self._pending, self._event = tree, pending, event

    def complete(self) -> Any:
        for buf, src in self._pending:
            buf.copy_(src)
        self._pending = []
        if self._event is not None:
            self._event.synchronize()  # the queued device-to-host copies have landed
        return self.tree


class Snapshotter:
    """Copies a state (nested dicts, lists and tuples of tensors and plain
    values) into CPU buffers it keeps from one save to the next."""

    def __init__(self) -> None:
        self._buffers: dict[Key, Any] = {}

    def take(self, state: Any) -> Snapshot:
        """Buffers for every tensor of ``state``; GPU tensors are copied at once
        (non-blocking, into pinned memory), CPU ones when the snapshot is completed."""
        import torch

        seen: dict[Key, Any] = {}  # one buffer per storage view: tied weights stay one tensor in the file
        pending: list[tuple[Any, Any]] = []
        cuda = [False]

        def walk(obj: Any, path: Key) -> Any:
            if isinstance(obj, torch.Tensor):
                return self._buffer_for(obj.detach(), path, seen, pending, cuda)
            if isinstance(obj, dict):
                return {k: walk(v, (*path, k)) for k, v in obj.items()}
            if isinstance(obj, list):
                return [walk(v, (*path, i)) for i, v in enumerate(obj)]
            if isinstance(obj, tuple):
                return tuple(walk(v, (*path, i)) for i, v in enumerate(obj))
            return obj  # numbers, strings, None: immutable

        tree = walk(state, ())
        event = None
        if cuda[0]:
            event = torch.cuda.Event()
            event.record()  # after every copy queued above, before any later kernel
        return Snapshot(tree, pending, event)

    def copy(self, state: Any) -> Any:
        return self.take(state).complete()

    def _buffer_for(self, t: Any, path: Key, seen: dict[Key, Any], pending: list[tuple[Any, Any]],
                    cuda: list[bool]) -> Any:
        import torch

        view = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()),
                t.dtype) if t.numel() else None
        if view is not None and view in seen:
            return seen[view]
        buf = self._buffers.get(path)
        if buf is None or buf.shape != t.shape or buf.dtype != t.dtype:
            # contiguous, and no larger than the tensor: torch.save writes a view's whole storage
            buf = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=t.device.type == "cuda")
            self._buffers[path] = buf
        if t.device.type == "cuda":
            cuda[0] = True
            buf.copy_(t, non_blocking=True)
        elif t.device.type == "cpu":
            pending.append((buf, t))
        else:  # mps and the rest: a plain blocking copy
            buf.copy_(t)
        if view is not None:
            seen[view] = buf
        return buf


@dataclass
class Write:
    """One background write: what it is for, and how it ended."""

    step: int
    meta: dict[str, Any]      # what the checkpoint record says besides the times
    blocked_s: float          # training held up: the snapshot, waits for the write before or for the copy
    write_s: float = 0.0
    path: Path | None = None
    refused: bool = False     # the snapshot failed its check (a non-finite weight): nothing written
    error: BaseException | None = None
    copied: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class BackgroundWriter:
    """At most one write in flight, each on a thread of its own (a daemon: a
    second Ctrl-C leaves at once, and the unfinished temporary file is removed
    by the next save)."""

    def __init__(self) -> None:
        self.pending: Write | None = None

    def start(self, job: Write, snapshot: Snapshot, check: Callable[[Any], bool] | None,
              write: Callable[[Any], Path]) -> None:
        """Complete ``snapshot`` (then ``job.copied``), ``check`` it, ``write`` it, on a thread."""
        assert self.pending is None, "one checkpoint write at a time"
        self.pending = job

        def body() -> None:
            t = time.perf_counter()
            try:
                state = snapshot.complete()
                job.copied.set()
                if check is not None and not check(state):
                    job.refused = True
                else:
                    job.path = write(state)
            except BaseException as e:  # noqa: BLE001 - handed to the training thread, raised there
                job.error = e
            finally:
                job.write_s = time.perf_counter() - t
                job.copied.set()
                job.done.set()

        threading.Thread(target=body, name="checkpoint-writer", daemon=True).start()

    @property
    def busy(self) -> bool:
        return self.pending is not None and not self.pending.done.is_set()

    def wait_copied(self) -> None:
        """Block until the snapshot in flight is copied (the saved tensors may
        change from then on); the wait counts as blocked time."""
        job = self.pending
        if job is not None and not job.copied.is_set():
            t = time.perf_counter()
            job.copied.wait()
            job.blocked_s += time.perf_counter() - t

    def take(self) -> Write | None:
        """The write in flight, waited for; None if there is none."""
        job, self.pending = self.pending, None
        if job is not None:
            job.done.wait()
        return job

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
Adam moments in place, so the thread must not read the live tensors.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

Key = tuple[Any, ...]


class Snapshotter:
    """Copies a state (nested dicts, lists and tuples of tensors and plain
    values) into CPU buffers it keeps from one save to the next."""

    def __init__(self) -> None:
        self._buffers: dict[Key, Any] = {}

    def copy(self, state: Any) -> Any:
        import torch

        seen: dict[Key, Any] = {}  # one buffer per storage view: tied weights stay one tensor in the file
        on_gpu = [False]

        def walk(obj: Any, path: Key) -> Any:
            if isinstance(obj, torch.Tensor):
                return self._copy_tensor(obj, path, seen, on_gpu)
            if isinstance(obj, dict):
                return {k: walk(v, (*path, k)) for k, v in obj.items()}
            if isinstance(obj, list):
                return [walk(v, (*path, i)) for i, v in enumerate(obj)]
            if isinstance(obj, tuple):
                return tuple(walk(v, (*path, i)) for i, v in enumerate(obj))
            return obj  # numbers, strings, None: immutable

        out = walk(state, ())
        if on_gpu[0]:
            torch.cuda.synchronize()  # one wait for every non-blocking copy
        return out

    def _copy_tensor(self, t: Any, path: Key, seen: dict[Key, Any], on_gpu: list[bool]) -> Any:
        import torch

        t = t.detach()
        view = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()),
                t.dtype) if t.numel() else None
        if view is not None and view in seen:
            return seen[view]
        buf = self._buffers.get(path)
        if buf is None or buf.shape != t.shape or buf.dtype != t.dtype:
            pin = t.device.type == "cuda"
            # contiguous, and no larger than the tensor: torch.save writes a view's whole storage
            buf = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=pin)
            self._buffers[path] = buf
        cuda = t.device.type == "cuda"
        on_gpu[0] = on_gpu[0] or cuda
        buf.copy_(t, non_blocking=cuda)
        if view is not None:
            seen[view] = buf
        return buf

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._buffers.values())


@dataclass
class Write:
    """One background write: what it is for, and how it ended."""

    step: int
    meta: dict[str, Any]      # what the checkpoint record says besides the times
    blocked_s: float          # training time spent on the snapshot (and on waiting for the write before)
    write_s: float = 0.0
    path: Path | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class BackgroundWriter:
    """At most one write in flight, each on a thread of its own (a daemon: a
    second Ctrl-C leaves at once, and the unfinished temporary file is removed
    by the next save)."""

    def __init__(self) -> None:
        self.pending: Write | None = None

    def start(self, job: Write, write: Callable[[], Path]) -> None:
        assert self.pending is None, "one checkpoint write at a time"
        self.pending = job

        def body() -> None:
            t = time.perf_counter()
            try:
                job.path = write()
            except BaseException as e:  # noqa: BLE001 - handed to the training thread, raised there
                job.error = e
            finally:
                job.write_s = time.perf_counter() - t
                job.done.set()

        threading.Thread(target=body, name="checkpoint-writer", daemon=True).start()

    @property
    def busy(self) -> bool:
        return self.pending is not None and not self.pending.done.is_set()

    def take(self) -> Write | None:
        """The write in flight, waited for; None if there is none."""
        job, self.pending = self.pending, None
        if job is not None:
            job.done.wait()
        return job

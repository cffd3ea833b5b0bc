"""Run folders for the runs browser's tests, written in a few milliseconds (no training)."""
from __future__ import annotations

import math
from pathlib import Path

from tui_trainer.records import (
    Change,
    Eval,
    Paused,
    RunEnd,
    RunStart,
    Sample,
    TrainStep,
)
from tui_trainer.run.folder import RunLock
from tui_trainer.run.log_writer import JsonlSink

BASE = dict(n_layer=2, n_embd=64, max_lr=1e-3, batch_size=32, seed=1337)


def write_run(folder: Path, steps: int = 50, *, eval_every: int = 10, end: str | None = "finished",
              config: dict | None = None, name: str | None = None, loss=None, start_time: float = 1.7e9,
              samples: bool = True, pause: bool = False, extra: bool = False, parent: dict | None = None) -> Path:
    """A run folder whose log has a run_start, ``steps`` train lines, evals
    (val = train + 0.1) and samples every ``eval_every``, and a run_end with
    status ``end`` (None: no run_end, as a crash leaves it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    loss = loss or (lambda s: 4.0 - 2.0 * s / steps)
    cfg = dict(BASE, out=str(folder), name=None, steps=steps, **(config or {}))
    sink = JsonlSink(folder / "losses.jsonl")
    sink.emit(RunStart(step=0, run_name=name or folder.name, config=cfg, n_params=1000, device="cpu",
                       total_steps=steps, time=start_time, parent=parent))
    for s in range(1, steps + 1):
        more = {"acc": s / steps} if extra else {}
        sink.emit(TrainStep(step=s, train_loss=loss(s), lr=cfg["max_lr"] * min(1.0, s / 5), tokens_per_sec=1000.0 + s,
                            grad_norm=1.0 / s, elapsed_s=s * 0.5, tokens=s * 64, time=start_time + s, extra=more))
        if s % eval_every == 0:
            sink.emit(Eval(step=s, val_loss=loss(s) + 0.1, train_loss=loss(s), elapsed_s=s * 0.5,
                           time=start_time + s))
            if samples:
                sink.emit(Sample(step=s, prompt="def ", text=f"{folder.name} sample at {s}", time=start_time + s))
    if pause:
        sink.emit(Paused(step=steps, reason="user", time=start_time + steps))
    if end is not None:
        sink.emit(RunEnd(step=steps, status=end, elapsed_s=steps * 0.5, time=start_time + steps))
    sink.close()
    return folder


def append_train(folder: Path, first: int, last: int, loss: float = 1.0) -> None:
    sink = JsonlSink(Path(folder) / "losses.jsonl")
    for s in range(first, last + 1):
        sink.emit(TrainStep(step=s, train_loss=loss, lr=1e-3, tokens_per_sec=1000.0, grad_norm=1.0,
                            elapsed_s=s * 0.5, tokens=s * 64, time=1.7e9 + s))
    sink.close()


def append(folder: Path, *records) -> None:
    sink = JsonlSink(Path(folder) / "losses.jsonl")
    for r in records:
        sink.emit(r)
    sink.close()


def live(folder: Path) -> RunLock:
    """Hold the run's lock, as a training process does: ``is_live`` is then true."""
    return RunLock(folder).acquire()


__all__ = ["append", "append_train", "live", "write_run", "Change", "Eval", "RunEnd", "RunStart", "math"]

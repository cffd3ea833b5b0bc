"""Helpers shared by the tests that drive Textual apps with a Pilot."""
from __future__ import annotations

import math
import queue
import threading
import time

from tui_trainer.control.commands import Command
from tui_trainer.records import (Checkpoint, Eval, Paused, Record, Resumed, RunEnd, RunStart, Sample, Status,
                                 TrainStep)
from tui_trainer.ui.sources import RecordSource


async def until(pilot, cond, what: str, timeout: float = 60.0) -> None:
    """Let the app run until ``cond()`` holds (a deadline, not a timing assertion)."""
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class FakeTrainer:
    """A stand-in for ``engine.Trainer`` and the ``run.Run`` it reports to, in
    one object, with just what ``sources.TrainerSource`` uses of each (the
    trainer's run and step; the run's add_sink, remove_sink, send,
    request_stop, name, folder): give it as both, ``TrainerSource(f, run=f)``.
    It trains nothing and imports no torch: each step emits a train record,
    and commands are answered with the records the engine writes for them."""

    def __init__(self, steps: int = 1_000_000, run_name: str = "fake-run", step_s: float = 0.002):
        self.sinks: list = []
        self.commands: queue.Queue = queue.Queue()
        self.stop_event = threading.Event()
        self.steps, self.run_name, self.step_s = steps, run_name, step_s
        self.name, self.folder = run_name, None
        self.step = 0
        self.paused = False

    def add_sink(self, sink) -> None:
        self.sinks.append(sink)

    def remove_sink(self, sink) -> None:
        self.sinks = [s for s in self.sinks if s is not sink]

    def send(self, command) -> None:
        self.commands.put(Command(command))

    def request_stop(self) -> None:
        self.stop_event.set()
        self.commands.put(Command.STOP)

    def emit(self, record) -> None:
        for sink in list(self.sinks):
            sink.emit(record)

    def run(self):
        self.emit(RunStart(step=0, run_name=self.run_name, config={}, n_params=1, device="cpu",
                           total_steps=self.steps))
        status = "finished"
        while self.step < self.steps:
            while True:
                try:
                    cmd = self.commands.get(timeout=0.01) if self.paused else self.commands.get_nowait()
                except queue.Empty:
                    if self.paused and not self.stop_event.is_set():
                        continue
                    break
                if cmd is Command.STOP:
                    self.stop_event.set()
                elif cmd is Command.PAUSE or (cmd is Command.TOGGLE_PAUSE and not self.paused):
                    self.paused = True
                    self.emit(Paused(step=self.step))
                elif cmd in (Command.RESUME, Command.TOGGLE_PAUSE):
                    self.paused = False
                    self.emit(Resumed(step=self.step))
                elif cmd is Command.EVAL:
                    self.emit(Status(step=self.step, state="evaluating"))
                    self.emit(Eval(step=self.step, val_loss=2.0, train_loss=2.1, elapsed_s=1.0, forced=True))
                    self.emit(Sample(step=self.step, prompt="def ", text="def f(): pass"))
                    self.emit(Status(step=self.step, state="paused" if self.paused else "running"))
                elif cmd is Command.CHECKPOINT:
                    self.emit(Checkpoint(step=self.step, path=f"/fake/ckpt-step{self.step:08d}.pt",
                                         reason="manual"))
            if self.stop_event.is_set():
                status = "stopped"
                break
            self.step += 1
            self.emit(TrainStep(step=self.step, train_loss=3.0 - self.step * 1e-4, lr=1e-3,
                                tokens_per_sec=1000.0, grad_norm=1.0, elapsed_s=self.step * 0.01,
                                tokens=self.step * 64))
            time.sleep(self.step_s)
        self.emit(Checkpoint(step=self.step, path=f"/fake/ckpt-step{self.step:08d}.pt", reason="final"))
        end = RunEnd(step=self.step, status=status, elapsed_s=self.step * 0.01)
        self.emit(end)
        return end


class FakeClock:
    """A monotonic clock a test moves by hand (confirm and note windows)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, s: float) -> None:
        self.now += s


# --- deterministic screens -------------------------------------------------

T0 = 1_700_000_000.0


def fixed_records(n: int = 600, eval_every: int = 100, total: int = 2000) -> list[Record]:
    out: list[Record] = [RunStart(step=0, run_name="demo-run", config={}, n_params=12_345, device="cpu",
                                  total_steps=total, time=T0)]
    for s in range(1, n + 1):
        loss = 4.5 * math.exp(-s / 150) + 1.2 + 0.15 * math.sin(s * 0.7)
        out.append(TrainStep(step=s, train_loss=loss, lr=3e-3 * min(1.0, s / 60), tokens_per_sec=2048.0,
                             grad_norm=1.0, elapsed_s=s * 0.05, tokens=s * 128, time=T0 + s * 0.05))
        if s % eval_every == 0:
            out.append(Status(step=s, state="evaluating", time=T0))
            out.append(Eval(step=s, val_loss=loss + 0.1, train_loss=loss - 0.05, elapsed_s=s * 0.05, time=T0))
            out.append(Sample(step=s, prompt="def ", text=f"def f{s}(x):\n    return x + {s}\n", time=T0))
            out.append(Status(step=s, state="running", time=T0))
    out.append(Checkpoint(step=n, path="/runs/demo-run/ckpt_000600.pt", reason="scheduled", time=T0))
    return out


class FixedSource(RecordSource):
    """Hands over a fixed list of records at the first poll."""

    def __init__(self, recs: list[Record], run: int = 0):
        self.pending = [(run, r) for r in recs]

    def poll(self):
        out, self.pending = self.pending, []
        return out

"""The run: one folder and everything that makes a training run safe and visible.

A *loop* (model, data, optimizer, steps: ``engine.Trainer``, or a loop of the
user's own) talks to its run only through a ``Run``:

- **records**: ``emit(record)`` sends a typed record to every sink (the JSONL
  log the run opened, the headless printer, the dashboard's queue).  In a
  data-parallel run only rank 0's records go anywhere.
- **steering**: commands from keys, the control socket or signals wait in
  ``commands``; the loop calls ``between_steps(step, ...)`` at each safe point,
  which applies them there: a pause blocks until resume or stop, eval and
  checkpoint requests call the loop's handlers (``handlers.Handlers``), a stop
  turns ``stopping`` on.
  Under torchrun every rank gets rank 0's commands at the same step.
- **the folder**: created fresh (``Run.create``), reopened to resume
  (``Run.reopen``), or taken locked from the caller (``Run.locked``: cli's
  new, resumed and forked runs), so it has one writer (``folder.RunLock``).
  A ``Run`` is made here only: by those and ``Run.unlocked``.
- **checkpoint policy**: ``checkpoints``, a ``checkpoint.CheckpointManager``.
- **while it trains** (``open``): the JSONL log, the control socket
  (``tui-trainer attach``) and signal handling (``signals.RunSignals``);
  ``close`` winds them down in the reverse order and drops the lock (``outlets.Outlets``).
- **a loop of your own** (``tui_trainer.init``) gets an ``own_loop.OwnLoop``
  that has a ``Run``: ``log``, ``should_stop``, ``finish`` and the rest are its.

torch is not imported here.
"""
from __future__ import annotations

import os
import queue
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable

from ..bounds import problem
from .checkpoint import CheckpointManager
from ..control.commands import MAX_COMMANDS_PER_STEP, Command, CommandQueue, CommandSync, Dropped, Order
from ..records import Ack, Change, Paused, Record, Resumed, Sample, Status, clean_text
from .folder import RunLock, create_run_dir
from .handlers import Handlers
from .outlets import Outlets
from .log_writer import LogWriteError, Sink
from ..control.settings import Settings

PAUSE_POLL_S = 0.1
_RUNS: "weakref.WeakSet[Run]" = weakref.WeakSet()  # this process's runs, for _detach_after_fork


class Run:
    """One run as the world sees it (see the module docstring), made by the
    class methods below (``create``, ``reopen``, ``locked``, ``unlocked``)."""

    def __init__(self, folder: str | Path | None = None, *, name: str | None = None,
                 sinks: Iterable[Sink] = (), commands: queue.Queue | None = None,
                 interactive: bool = False, sync: CommandSync | None = None,
                 checkpoint_every: int = 1, keep: int = 2, lock: RunLock | None = None):
        self.folder = Path(folder) if folder is not None else None
        self.name = clean_text(name or (self.folder.name if self.folder else "run"))
        self.sinks: list[Sink] = list(sinks)
        self.commands: queue.Queue = commands if commands is not None else CommandQueue()
        self.sync = sync
        self.is_main = sync is None or sync.is_main
        self.checkpoints = CheckpointManager(self.folder, every=checkpoint_every, keep=keep, emit=self.emit,
                                             enabled=self.is_main, run=self)  # the one made for this run
        self.stop_event = threading.Event()
        self.hung_up = threading.Event()  # the terminal went away (SIGHUP)
        self.failure: str | None = None  # why the run must end failed (the log cannot be written)
        self.step = 0
        self.total_steps = 0
        self.paused = False
        self.pause_reason = ""
        self.pause_at = 0  # pause once this step has been trained (0: never)
        self.settings = Settings()
        self.settings.define("pause_at", int, lambda: self.pause_at, self._set_pause_at,
                             check=lambda v: problem("pause_at", v),
                             help="pause once that step has been trained (0 clears it)")
        self.changed: dict[str, Any] = {}  # live settings changed so far: key -> value now
        self._handlers = Handlers()
        self._interactive = interactive
        self._agreed_stop = False  # data-parallel: the stop every rank agreed on
        self._out = Outlets(lock)  # the log, socket, signal handlers and lock it opens and closes
        self.detached = False  # a copy of the run in a child process after fork: it touches nothing
        _RUNS.add(self)

    # --- the folder: the ways a run is made ---
    @classmethod
    def create(cls, out: str | None, name: str | None = None, **kw: Any) -> "Run":
        """A fresh folder (``out``, or a new name under outputs/), locked."""
        folder = create_run_dir(out, name)
        return cls(folder, lock=RunLock(folder).acquire(), **kw)

    @classmethod
    def reopen(cls, folder: str | Path, **kw: Any) -> "Run":
        """An existing run's folder, locked first: a run still going there
        must not get a second writer."""
        return cls(folder, lock=RunLock(folder).acquire(), **kw)

    @classmethod
    def locked(cls, folder: Path | None, lock: RunLock | None, **kw: Any) -> "Run":
        """A folder the caller made (new, forked) or found (resumed) and
        locked already; the run releases the lock when it closes.  None: a
        rank other than 0, which has no folder."""
        return cls(folder, lock=lock, **kw)

    @classmethod
    def unlocked(cls, folder: str | Path | None = None, **kw: Any) -> "Run":
        """A run with no lock: the lesson's ``Trainer(cfg, "outputs/x")``, a
        rank other than 0, or one whose folder comes later (``take_folder``)."""
        return cls(folder, **kw)

    def take_folder(self, folder: str | Path, lock: RunLock, *, checkpoint_every: int, keep: int) -> None:
        """A run made before its folder could be (the dashboard is up while
        torch loads): the folder, its lock and the checkpoint policy, once."""
        assert self.folder is None, "a run's folder is given once"
        self.folder = Path(folder)
        self._out.take_lock(lock)
        if self.name == "run":
            self.name = clean_text(self.folder.name)
        self.checkpoints.use_folder(self.folder, every=checkpoint_every, keep=keep)

    def install_signals(self) -> None:
        """Signal handling (from the main thread), apart from ``open``."""
        self._out.install_signals(self)

    @property
    def signals(self) -> Any:
        """The run's ``signals.RunSignals`` once installed, else None."""
        return self._out.signals

    # --- while it trains ---
    def open(self, *, log: bool = True, control: bool = True, signals: bool = True) -> "Run":
        """Start writing: the JSONL log (appended to on resume), the control
        socket and the signal handlers, each optional.  Rank 0 only."""
        if self.is_main and self.folder is not None:
            if log:
                self.sinks.insert(0, self._out.open_log(self.folder))
            if control:
                self._out.open_control(self, self.folder)
        if signals:
            self._out.install_signals(self)
        return self

    def close(self) -> None:
        """Undo ``open`` in reverse, then drop the lock (``outlets.Outlets.close``)."""
        if not self.detached:
            self._out.close()

    def detach(self) -> None:
        """In a child process after ``fork`` (``_detach_after_fork``): this
        copy of the run is not the run.  It closes its copies of the log, the
        socket and the lock without a byte written, a file unlinked or the
        lock released (the parent holds them all), gives back the signal
        handlers the run had replaced, and from now on writes nothing: no
        record, no ``run_end`` at exit, no checkpoint."""
        self.detached = True
        self.sinks = []
        self.checkpoints.disable()
        # Locks another thread held at the fork stay held forever in the child: fresh ones.
        self.commands = CommandQueue()
        stop, self.stop_event = self.stop_event, threading.Event()
        if stop.is_set():
            self.stop_event.set()
        self._out.abandon()

    # --- records ---
    def emit(self, record: Record) -> None:
        if not self.is_main or self.detached:
            return  # data-parallel: rank 0 alone writes; a forked child writes nothing
        for sink in self.sinks:
            try:
                sink.emit(record)
            except LogWriteError as e:  # the disk is full: training on unrecorded is no use
                self.failure = (f"{e.strerror}; the log is whole up to its last line: free some space, "
                                f"then continue the run from its last checkpoint (tui-trainer train --resume "
                                f"{self.folder}, or resume=True in your own loop)")
                self.remove_sink(sink)
                self.request_stop()

    def add_sink(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def remove_sink(self, sink: Sink) -> None:
        self.sinks = [s for s in self.sinks if s is not sink]

    # --- steering, from any thread ---
    def send(self, command: Command | str) -> None:
        self.commands.put(Command(command))

    def suspend(self) -> None:
        """Ctrl-Z in this process's dashboard (``ui/suspend.py``), from any thread: a pause with
        reason ``suspended`` at the loop's next safe point, so it is written after the steps it
        follows (``pause``: the loop settles first); ``send(Command.RESUME)`` ends it."""
        self.commands.put(Order(Command.PAUSE, {"reason": "suspended"}))

    def request_stop(self) -> None:
        """Stop after the current step; evals, samples and pauses notice at once."""
        self.stop_event.set()
        self.commands.put(Command.STOP)

    @property
    def stopping(self) -> bool:
        # Data-parallel: a signal seen by one rank counts from the next step's
        # sync, so no rank ever leaves the loop alone and hangs the others.
        if self.sync is not None and self.sync.enabled:
            return self._agreed_stop
        return self.stop_event.is_set()

    @property
    def interactive(self) -> bool:
        """A person is watching (a dashboard in this process, still connected):
        divergence then pauses for them instead of stopping the run."""
        return self._interactive and not self.hung_up.is_set()

    def hang_up(self) -> None:
        """The terminal is gone (signals.py): nobody is left to look at a
        diverged, paused run."""
        self.hung_up.set()
        if self.paused and self.pause_reason == "diverged":
            self.request_stop()

    # --- steering, on the loop's thread ---
    def pause(self, reason: str = "user") -> None:
        if not self.paused:
            self._settle_loop()
            self.paused, self.pause_reason = True, reason
            self.emit(Paused(step=self.step, reason=reason))  # type: ignore[arg-type]

    def _settle_loop(self) -> None:
        """The loop's steps in flight reach the log (``on_pause``) before a
        record of the run's own follows them: a pause, or what a request writes."""
        if self._handlers.on_pause is not None:
            settled = self._handlers.on_pause()
            if isinstance(settled, int):
                self.step = settled

    def set_handlers(self, **handlers: Callable[..., Any] | None) -> None:
        """What the loop does, on its own thread, when asked to evaluate,
        checkpoint or sample now, and more (``handlers.Handlers.set``: on_eval,
        on_checkpoint, on_sample, on_resume, check_prompt, on_pause, lagging).
        A request with no handler is refused at once."""
        self._handlers.set(**handlers)

    def refusal(self, command: Command) -> str | None:
        """Why this run cannot take ``command`` (None when it can)."""
        return self._handlers.refusal(command)

    def explain_refusal(self, command: Command, why: str | None) -> None:
        """Say, in the loop's own terms, why it takes no ``command`` requests
        (an integration knows better than "registered no on_eval"); None
        goes back to the generic answer."""
        self._handlers.explain(command, why)

    def prompt_refusal(self, prompt: str) -> str | None:
        """Why this run cannot sample ``prompt`` (None when it can), asked by
        the control channel before the request is accepted."""
        return self._handlers.prompt_refusal(prompt)

    def _set_pause_at(self, step: int) -> None:
        self.pause_at = step

    # --- what a loop tells its run ---
    def plan_steps(self, total: int) -> None:
        """The steps the loop means to train (status answers; a live change of ``steps``)."""
        self.total_steps = int(total)

    def restore_live(self, pause_at: int, changed: dict[str, Any]) -> None:
        """A resumed run: the pause step and the live changes its checkpoint held."""
        self.pause_at = int(pause_at)
        self.changed.update(changed)

    def reached(self, step: int) -> None:
        """The loop trained ``step`` steps without steering there (status answers say so)."""
        self.step = max(self.step, step)

    def pause_quietly(self, paused: bool) -> None:
        """Let a pause go, or take it up again, with no record: to the world the
        run stays paused (a loop answering a request outside its safe point)."""
        self.paused = paused

    def between_steps(self, step: int) -> None:
        """The loop's safe point, with ``step`` steps trained: apply the
        commands waiting, and while paused wait here (still answering eval,
        checkpoint, sample and set requests) until a resume or a stop."""
        self.step = step
        if self.sync is not None and self.sync.enabled:
            return self._between_steps_synced()
        while True:
            self.checkpoints.poll()  # a background write that ended: logged here, or its error raised
            self._check_pause_at()
            waiting = self.paused and not self.stopping
            try:
                cmd = self.commands.get(timeout=PAUSE_POLL_S) if waiting else self.commands.get_nowait()
            except queue.Empty:
                if waiting:
                    continue
                return
            self._apply(cmd)

    def _check_pause_at(self) -> None:
        if self.pause_at and self.step >= self.pause_at and not self.stopping:
            self.pause_at = 0
            self.pause("pause_at")

    def _between_steps_synced(self) -> None:
        assert self.sync is not None
        while True:
            self.checkpoints.poll()
            self._check_pause_at()
            taken: list[Command | Order] = []
            if self.is_main:  # rank 0 takes them and writes the notes of dropped ones; no rank applies those
                wait = PAUSE_POLL_S if self.paused and not self.stopping else None
                taken = [c for c in self.commands.take(wait, MAX_COMMANDS_PER_STEP) if not self._dropped(c)]
            lagging = self._handlers.lagging
            cmds, stop, settle = self.sync.sync_commands(taken, self.stop_event.is_set(),
                                                         bool(lagging is not None and lagging()))
            self._agreed_stop = self._agreed_stop or stop or Command.STOP in cmds
            if settle:  # at the same step on every rank: no rank settles alone (a frozen step is drawn again)
                self._settle_loop()
            for cmd in cmds:
                self._apply(cmd)
            if not (self.paused and not self.stopping):
                return

    def _dropped(self, item: Any) -> bool:
        """A request dropped before it was applied (late): written as an
        ``ack`` record, on the loop's thread (True), or not one (False)."""
        if not isinstance(item, Dropped):
            return False
        self.emit(Ack(step=self.step, command=item.command.value, ok=False, message=item.why))
        return True

    def _apply(self, cmd: Command | Order | Dropped | str) -> None:
        """The one place a request is applied on the loop's thread.  Nothing
        that arrives as a request (a key, the socket, an own loop's callback)
        can end the run here: an exception while serving it is written as an
        ``ack`` record (ok false, with the error), the request is dropped and
        the run goes on.  Only ``stop`` ends a run."""
        self._settle_loop()  # a request that came while steps were in flight: their records first
        if self._dropped(cmd):
            return
        try:
            if isinstance(cmd, Order):
                return self._apply_order(cmd)
            self._apply_command(Command(cmd))
        except Exception as e:  # noqa: BLE001 - the request fails, never the run
            name = cmd.command.value if isinstance(cmd, Order) else getattr(cmd, "value", str(cmd))
            why = f"{type(e).__name__}: {e}"[:300]
            self.emit(Ack(step=self.step, command=str(name)[:40], ok=False,
                          message=f"{name} failed: {why}; the request was dropped, the run goes on",
                          id=cmd.args.get("id") if isinstance(cmd, Order) else None))
            self.emit(Status(step=self.step, state="paused" if self.paused else "running"))

    def _apply_command(self, cmd: Command) -> None:
        if cmd is Command.STOP:
            self.stop_event.set()
        elif cmd is Command.PAUSE or (cmd is Command.TOGGLE_PAUSE and not self.paused):
            self.pause("user")
        elif cmd is Command.RESUME or cmd is Command.TOGGLE_PAUSE:
            if self.paused:
                self.paused, self.pause_reason = False, ""
                if self._handlers.on_resume is not None:
                    self._handlers.on_resume()
                self.emit(Resumed(step=self.step))
        elif cmd is not Command.SAMPLE and (fn := self._handlers.of(cmd)) is not None:
            fn()

    def _apply_order(self, order: Order) -> None:
        a = order.args
        if order.command is Command.SET:
            try:
                old, new = self.settings.apply(a.get("key"), a.get("value"))
            except ValueError as e:  # a bound moved since the request was accepted
                self.emit(Ack(step=self.step, command="set", ok=False, message=str(e)))
                return
            self.changed[a["key"]] = new
            self.emit(Change(step=self.step, key=a["key"], old=old, new=new, source=order.source))
        elif order.command is Command.PAUSE:  # ``suspend``
            self.pause(str(a.get("reason", "user")))
        elif order.command is Command.SAMPLE and (sample := self._handlers.of(Command.SAMPLE)) is not None:
            prompt = a.get("prompt", "")
            text = sample(prompt, a.get("tokens"), a.get("temperature"), a.get("top_k"))
            self.emit(Sample(step=self.step, prompt=prompt, text=text, requested=True, id=a.get("id")))


def _detach_after_fork() -> None:
    for run in list(_RUNS):
        run.detach()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_detach_after_fork)

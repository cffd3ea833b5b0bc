"""The run: one folder and everything that makes a training run safe and visible.

A *loop* (model, data, optimizer, steps: ``engine.Trainer``, or a loop of the
user's own) talks to its run only through a ``Run``:

- **records**: ``emit(record)`` sends a typed record to every sink (the JSONL
  log the run opened, the headless printer, the dashboard's queue).  In a
  data-parallel run only rank 0's records go anywhere.
- **steering**: commands from keys, the control socket or signals wait in
  ``commands``; the loop calls ``between_steps(step, ...)`` at each safe point,
  which applies them there: a pause blocks until resume or stop, eval and
  checkpoint requests call the loop's handlers, a stop turns ``stopping`` on.
  Under torchrun every rank gets rank 0's commands at the same step.
- **the folder**: created fresh (``Run.create``) or reopened to resume
  (``Run.reopen``), locked so it has one writer (``rundir.RunLock``).
- **checkpoint policy**: ``checkpoints``, a ``checkpoint.CheckpointManager``.
- **while it trains** (``open``): the JSONL log, the control socket
  (``tui-trainer attach``) and signal handling (``signals.RunSignals``);
  ``close`` winds them down in the reverse order and drops the lock.
- **a loop of your own** (``tui_trainer.init``): ``log``, ``should_stop``,
  ``finish`` and the rest come from ``own_loop.OwnLoop``, mixed in here.

torch is not imported here.
"""
from __future__ import annotations

import os
import queue
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from ..bounds import problem
from .checkpoint import CheckpointManager
from ..control.commands import MAX_COMMANDS_PER_STEP, Command, CommandQueue, Dropped, Order, surrogate_problem
from ..loops.own_loop import OwnLoop
from ..records import Ack, Change, Paused, Record, Resumed, Sample, Status, clean_text
from .folder import RunLock, create_run_dir
from .log_writer import LogWriteError
from ..control.settings import Settings

PAUSE_POLL_S = 0.1
_RUNS: "weakref.WeakSet[Run]" = weakref.WeakSet()  # this process's runs, for _detach_after_fork


class Sink(Protocol):
    def emit(self, record: Record) -> None: ...


class CommandSync(Protocol):
    """Data-parallel agreement (``distributed.Dist``): every rank calls
    ``sync_commands`` at the same point of each step and gets rank 0's
    commands and the OR of every rank's stop flag."""

    enabled: bool
    is_main: bool

    def sync_commands(self, commands: list[Command], stop: bool) -> tuple[list[Command], bool]: ...


class Run(OwnLoop):
    """One run as the world sees it (see the module docstring).  What a loop
    of your own calls (``log``, ``should_stop``, ``finish``, ``with``...) is
    ``own_loop.OwnLoop``'s half of it."""

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
        self._handlers: dict[Command, Callable[..., Any]] = {}
        self._why_not: dict[Command, str] = {}  # a loop's own words for a request it cannot take
        self._on_resume: Callable[[], Any] | None = None
        self._check_prompt: Callable[[str], str | None] | None = None  # set_handlers: a prompt's check
        self._interactive = interactive
        self._agreed_stop = False  # data-parallel: the stop every rank agreed on
        self._lock = lock
        self._closing = threading.Lock()
        self._log: Any = None
        self._control: Any = None
        self.signals: Any = None
        self.detached = False  # a copy of the run in a child process after fork: it touches nothing
        _RUNS.add(self)

    # --- the folder ---
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

    def take_folder(self, folder: str | Path, lock: RunLock, *, checkpoint_every: int, keep: int) -> None:
        """A run made before its folder could be (the dashboard is up while
        torch loads): the folder, its lock and the checkpoint policy, once."""
        assert self.folder is None, "a run's folder is given once"
        self.folder, self._lock = Path(folder), lock
        if self.name == "run":
            self.name = clean_text(self.folder.name)
        self.checkpoints.use_folder(self.folder, every=checkpoint_every, keep=keep)

    def install_signals(self) -> None:
        """Signal handling (from the main thread), apart from ``open``."""
        if self.signals is None:
            self._install_signals()

    # --- while it trains ---
    def open(self, *, log: bool = True, control: bool = True, signals: bool = True) -> "Run":
        """Start writing: the JSONL log (appended to on resume), the control
        socket and the signal handlers, each optional.  Rank 0 only."""
        if not self.is_main or self.folder is None:
            if signals:
                self._install_signals()
            return self
        if log:
            from .log_writer import LOG_NAME, JsonlSink

            self._log = JsonlSink(self.folder / LOG_NAME)
            self.sinks.insert(0, self._log)
        if control:
            from ..control.channel import start_for_run

            self._control = start_for_run(self, self.folder)
        if signals and self.signals is None:
            self._install_signals()
        return self

    def _install_signals(self) -> None:
        from .signals import RunSignals

        self.signals = RunSignals(self).install()

    def close(self) -> None:
        """Undo ``open`` in reverse, then drop the lock.  Safe to call twice,
        and from another thread; a Ctrl-C arriving meanwhile waits until the
        socket and lock are gone (or it would leave a stale socket behind)."""
        if self.detached:
            return
        with self._closing:
            if self.signals is not None:
                self.signals.hold()
            try:
                if self._control is not None:
                    self._control.close()
                    self._control = None
                if self._log is not None:
                    self._log.close()
                if self._lock is not None:
                    self._lock.release()
                    self._lock = None
            finally:
                if self.signals is not None:
                    self.signals.uninstall()

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
        self._closing = threading.Lock()
        self.commands = CommandQueue()
        if self._loop is not None:
            self._loop.lock = threading.Lock()
        stop, self.stop_event = self.stop_event, threading.Event()
        if stop.is_set():
            self.stop_event.set()
        for part, how in ((self._log, "abandon"), (self._control, "abandon"), (self._lock, "release")):
            if part is not None:
                try:
                    getattr(part, how)()  # our copies only: closing a copy unlocks nothing
                except Exception:
                    pass
        self._log = self._control = self._lock = None
        if self.signals is not None:
            try:
                self.signals.uninstall()
            except Exception:
                pass
            self.signals = None

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
            self.paused, self.pause_reason = True, reason
            self.emit(Paused(step=self.step, reason=reason))  # type: ignore[arg-type]

    def set_handlers(self, *, on_eval: Callable[[], Any] | None = None,
                     on_checkpoint: Callable[[], Any] | None = None,
                     on_sample: Callable[..., str] | None = None,
                     on_resume: Callable[[], Any] | None = None,
                     check_prompt: Callable[[str], str | None] | None = None) -> None:
        """What the loop does, on its own thread, when asked to evaluate,
        checkpoint or sample now (``on_sample(prompt, tokens, temperature,
        top_k) -> text``).  A request with no handler is refused at once.
        ``check_prompt(prompt)`` says why a sample's prompt cannot be taken
        (its tokenizer's word), asked when the request arrives; without it a
        prompt must be text (no lone surrogates)."""
        for cmd, fn in ((Command.EVAL, on_eval), (Command.CHECKPOINT, on_checkpoint),
                        (Command.SAMPLE, on_sample)):
            if fn is not None:
                self._handlers[cmd] = fn
            else:
                self._handlers.pop(cmd, None)
        self._on_resume = on_resume
        self._check_prompt = check_prompt

    def refusal(self, command: Command) -> str | None:
        """Why this run cannot take ``command`` (None when it can)."""
        if command in (Command.EVAL, Command.CHECKPOINT, Command.SAMPLE) and command not in self._handlers:
            if command in self._why_not:
                return self._why_not[command]
            what = {Command.EVAL: "on_eval", Command.CHECKPOINT: "on_checkpoint", Command.SAMPLE: "on_sample"}
            return f"this run's loop takes no {command.value} requests (it registered no {what[command]})"
        return None

    def explain_refusal(self, command: Command, why: str | None) -> None:
        """Say, in the loop's own terms, why it takes no ``command`` requests
        (an integration knows better than "registered no on_eval"); None
        goes back to the generic answer."""
        if why:
            self._why_not[command] = why
        else:
            self._why_not.pop(command, None)

    def prompt_refusal(self, prompt: str) -> str | None:
        """Why this run cannot sample ``prompt`` (None when it can), asked by
        the control channel before the request is accepted."""
        if self._check_prompt is None:
            return surrogate_problem(prompt)
        try:
            return self._check_prompt(prompt)
        except Exception as e:  # noqa: BLE001 - a checker that fails refuses, it does not fail the run
            return f"the prompt could not be checked ({type(e).__name__})"

    def _set_pause_at(self, step: int) -> None:
        self.pause_at = step

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
            if self.is_main:
                try:
                    waiting = self.paused and not self.stopping
                    taken.append(self.commands.get(timeout=PAUSE_POLL_S) if waiting
                                 else self.commands.get_nowait())
                    while len(taken) < MAX_COMMANDS_PER_STEP:
                        taken.append(self.commands.get_nowait())
                except queue.Empty:
                    pass
                taken = [c for c in taken if not self._dropped(c)]  # rank 0 writes the notes; no rank applies them
            cmds, stop = self.sync.sync_commands(taken, self.stop_event.is_set())
            self._agreed_stop = self._agreed_stop or stop or Command.STOP in cmds
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
                if self._on_resume is not None:
                    self._on_resume()
                self.emit(Resumed(step=self.step))
        elif cmd in self._handlers and cmd is not Command.SAMPLE:
            self._handlers[cmd]()

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
        elif order.command is Command.SAMPLE and Command.SAMPLE in self._handlers:
            prompt = a.get("prompt", "")
            text = self._handlers[Command.SAMPLE](prompt, a.get("tokens"), a.get("temperature"), a.get("top_k"))
            self.emit(Sample(step=self.step, prompt=prompt, text=text, requested=True, id=a.get("id")))


def _detach_after_fork() -> None:
    for run in list(_RUNS):
        run.detach()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_detach_after_fork)

"""Where the dashboard's records come from, and how it steers a run: no Textual here.

A *source* hands the dashboard records; a *steering* capability, when the
dashboard has one, carries its commands to a run.  The two are separate
because they vary separately: a log read back has a source and nothing to
steer; the live dashboard reads the training thread's queue and steers that
trainer in-process; ``attach`` follows a log file and steers over the run's
control channel (``ui/attach.py``).

The training thread never calls into the UI: its records go into a queue
(``QueueSink.emit`` is one ``put``, never blocks), drained by the UI's timer,
so a fast loop cannot flood the event loop and a slow terminal cannot slow
training.

Writing a source: subclass ``RecordSource`` and implement ``poll``; implement
``start``, ``stop`` and ``done`` only if something runs behind the source that
must be wound down before the app may exit.
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from ..control.commands import Command
from ..records import Record, RunEnd
from ..curves.series import RunSeries

MAX_PER_POLL = 50_000  # records handed over per poll, so one poll never freezes the screen


class RecordSource:
    """Where the dashboard's records come from.

    ``poll()`` is called on the UI thread a few times a second and returns
    the records that arrived since the last call, each with the index of the
    run it belongs to (0 for a single run; a new index adds a run).  It must
    return quickly: do blocking reads in a thread of your own.
    """

    #: Set by the app: called (UI thread) when run ``i`` was read again from
    #: the start, so rows already shown for it are no longer its rows.
    on_reset: Callable[[int], None] | None = None
    #: ``alerts.TerminalOut`` (deferred) whose bells and notifications the app writes; and
    #: ``alerts.AlertSink`` fed with the records polled (attach, view --follow): set by the caller.
    alert_out: Any = None
    alerts: Any = None

    def poll(self) -> list[tuple[int, Record]]:
        return []

    def take_swapped(self) -> bool:
        """True once after whole series were replaced without records (a log load)."""
        return False

    def take_series(self) -> dict[int, RunSeries]:
        """Once each: whole series to put in place of run ``i`` before the
        records ``poll`` hands out next (a resumed run's history)."""
        return {}

    def status_text(self) -> str:
        """A few words for the status line, e.g. ``following 2 files``."""
        return ""

    def start(self) -> None:
        """Called once the app is up."""

    def stop(self) -> None:
        """Asked to wind down; the app exits once ``done`` is true."""

    @property
    def done(self) -> bool:
        """True when nothing behind the source is still running."""
        return True

    @property
    def result(self) -> Any:
        """What the app returns when it exits (the live run's ``RunEnd``)."""
        return None


class QueueSink:
    """An engine sink that puts each record, tagged with its run, into a queue."""

    def __init__(self, q: queue.SimpleQueue, run: int = 0):
        self.queue = q
        self.run = run

    def emit(self, record: Record) -> None:
        self.queue.put((self.run, record))


class QueueSource(RecordSource):
    """Records pushed by ``QueueSink``s (from any thread), drained by ``poll``."""

    def __init__(self, q: queue.SimpleQueue | None = None):
        self.queue: queue.SimpleQueue = q if q is not None else queue.SimpleQueue()

    def sink(self, run: int = 0) -> QueueSink:
        return QueueSink(self.queue, run)

    def poll(self) -> list[tuple[int, Record]]:
        out = []
        try:
            while len(out) < MAX_PER_POLL:
                out.append(self.queue.get_nowait())
        except queue.Empty:
            pass
        return out


class LiveTrainer(Protocol):
    """All a ``TrainerSource`` uses of a trainer (``engine.Trainer`` has it):
    its loop and its step.  A resumed one says so (``resumed``)."""

    step: int

    def run(self) -> RunEnd: ...


class LiveRun(Protocol):
    """All a ``TrainerSource`` and ``LocalSteering`` use of the run the
    trainer reports to (``run.Run`` has it; ``cli`` holds it): its records,
    its steering, its name and folder."""

    name: str
    folder: Path | None

    def add_sink(self, sink: Any) -> None: ...
    def remove_sink(self, sink: Any) -> None: ...
    def send(self, command: Command) -> None: ...
    def request_stop(self) -> None: ...


class TrainerSource(QueueSource):
    """A live run: ``trainer.run()`` in a thread, its records through a queue
    from its ``run`` (the ``run.Run`` the trainer reports to), which is also
    what the dashboard steers.

    Given ``prepare`` instead of a trainer, the thread first builds the
    trainer (``prepare(say, cancelled)``: importing torch, loading data,
    building the model take seconds, and the window is up meanwhile, saying
    what it is doing through ``say``).  If that fails, ``error`` holds the
    exception and ``on_fail`` is called; if the window was closed meanwhile,
    ``cancelled()`` is true and ``prepare`` should give up before it writes
    anything.
    """

    def __init__(self, trainer: LiveTrainer | None = None, *, run: LiveRun,
                 prepare: Callable[[Callable[[str], None], Callable[[], bool]], LiveTrainer] | None = None):
        super().__init__()
        assert (trainer is None) != (prepare is None), "a trainer, or a way to prepare one"
        self.trainer = trainer
        self.run = run
        self.prepare = prepare
        self.phase = "starting…" if prepare is not None else ""
        self.error: BaseException | None = None
        self.on_fail: Callable[[], Any] | None = None
        self.ready = threading.Event()  # set once the trainer exists (or failed to)
        self._sink = self.sink(0)
        if trainer is not None:
            run.add_sink(self._sink)
            self.ready.set()
        self.thread: threading.Thread | None = None
        self.end: RunEnd | None = None
        self.stopping = False
        self.detached = False
        # A resumed run's history (its log before this session), read in a
        # thread; live records wait in the queue until the UI has taken it.
        self.history_pending = False
        self._history: RunSeries | None = None
        self._history_read = threading.Event()

    def _say(self, phase: str) -> None:
        self.phase = phase

    def _prepare(self) -> bool:
        assert self.prepare is not None
        try:
            trainer = self.prepare(self._say, lambda: self.stopping)
        except BaseException as e:  # shown after the window closes (cli prints it)
            self.error = e
            self.ready.set()
            if self.on_fail is not None:
                self.on_fail()
            return False
        if not self.detached:
            self.run.add_sink(self._sink)
        self.trainer, self.phase = trainer, ""
        self.ready.set()
        if self.stopping:
            self.run.request_stop()  # q while it was loading: a run of no steps
        return True

    def start(self) -> None:
        if self.thread is None:
            # A daemon thread: a second Ctrl-C at the shell must not hang on a
            # long run; run_dashboard joins it on every ordinary way out.
            self.thread = threading.Thread(target=self._run, name="trainer", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        if self.trainer is None and not self._prepare():
            return
        self._read_history(self.trainer)
        try:
            self.end = self.trainer.run()
        except BaseException as e:  # the engine catches training errors; this is a sink or setup failing
            self.end = RunEnd(step=getattr(self.trainer, "step", 0), status="failed",
                              elapsed_s=0.0, error=f"{type(e).__name__}: {e}")
            self.queue.put((0, self.end))

    def _read_history(self, trainer: LiveTrainer) -> None:
        """A resumed run: read its log as it is now, before this session
        writes its ``run_start`` (the seam), in a thread of its own."""
        folder = self.run.folder
        if getattr(trainer, "resumed", False) is not True or folder is None:
            return
        from ..run.log_writer import LOG_NAME

        log = Path(folder) / LOG_NAME
        try:
            end = log.stat().st_size
        except OSError:
            return
        self.history_pending = True

        def read() -> None:
            from ..logs.history import read_history

            try:
                self._history = read_history(log, end, trainer.step, self.run.name)
            except Exception:  # noqa: BLE001 - an unreadable history shows the live records alone
                self._history = None
            self._history_read.set()

        threading.Thread(target=read, name="history", daemon=True).start()

    def take_series(self) -> dict[int, RunSeries]:
        if not self.history_pending or not self._history_read.is_set():
            return {}
        self.history_pending = False  # poll hands out the live records from now on
        history, self._history = self._history, None
        return {0: history} if history is not None else {}

    def poll(self) -> list[tuple[int, Record]]:
        return [] if self.history_pending else super().poll()

    def send(self, command: Command) -> None:
        if Command(command) is Command.STOP:
            self.stop()
        elif self.trainer is not None:  # nothing to steer while it is still loading
            self.run.send(Command(command))

    def stop(self) -> None:
        self.stopping = True
        if self.trainer is not None:
            self.run.request_stop()

    def detach(self) -> None:
        """The terminal is gone: stop feeding the UI; the trainer goes on headless."""
        self.detached = True
        if self.trainer is not None:
            self.run.remove_sink(self._sink)

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    @property
    def done(self) -> bool:
        return self.thread is None or not self.thread.is_alive()

    @property
    def result(self) -> RunEnd | None:
        return self.end

    def status_text(self) -> str:
        if self.phase:
            return self.phase
        if self.history_pending:
            return "reading the run's log…"
        if self.stopping and not self.done:
            return "stopping…"
        return ""


# --- steering -----------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    """A run's answer to a command: ``text`` for a toast, ``short`` for the status line."""

    text: str
    short: str = ""
    ok: bool = True


class Steering(Protocol):
    """The dashboard's ability to steer a run, when it has one.

    ``mode`` names it for the key table (``ui/keys.py``): ``"live"`` when the
    window trains the run itself (closing it stops the run), ``"attach"`` when
    the run is another process's (closing the window leaves it going).
    ``send`` never blocks; answers that arrive later (over a socket) are
    collected by the UI thread with ``take_answers``.  What a command did shows
    in the run's records either way (a ``pause``, an ``eval``, a ``checkpoint``).
    """

    mode: str

    def can_send(self) -> bool:
        """True while commands can reach a running run."""
        ...

    def send(self, command: Command) -> None: ...

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        """One request as the control socket takes it (``{"cmd": "set", "key":
        ..., "value": ...}``, ``{"cmd": "sample", "prompt": ...}``, ``{"cmd":
        "status"}``...) and the run's answer dict, refusals included (``ok``
        false, a one-line ``error``).  May block (a socket): call it off the UI
        thread."""
        ...

    def take_answers(self) -> list[Answer]: ...


class LocalSteering:
    """Steering the run this process trains (the live dashboard)."""

    mode = "live"

    def __init__(self, source: TrainerSource):
        self.source = source

    def can_send(self) -> bool:
        return not self.source.done and not self.source.stopping

    def send(self, command: Command) -> None:
        self.source.send(command)

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        """Handled in-process exactly as the socket handles it (the same
        checks, the same answer), as coming from the keys."""
        from ..control.channel import TrainerControl  # the protocol; imports no torch

        target = self.source.run  # the run.Run the trainer reports to, as the socket steers it
        if self.source.trainer is None or not hasattr(getattr(target, "commands", None), "offer"):
            return {"ok": False, "error": "this run takes no typed requests"}
        if not self.can_send() and req.get("cmd") not in ("status", "ping"):
            return {"ok": False, "error": "the run is stopping" if self.source.stopping else "the run has ended"}
        return TrainerControl(target, source="keys").handle(req)

    def take_answers(self) -> list[Answer]:
        return []  # an in-process queue answers nothing; the records say what happened

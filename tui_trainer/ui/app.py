"""The dashboard: one Textual app for a live run and for logs read back.

Records reach the app only through a *source* (see ``RecordSource``), polled
by a timer a few times a second.  The training thread never calls into the UI:
its records go into a queue (``QueueSink.emit`` is one ``put``, never blocks),
so a fast loop cannot flood the event loop and a slow terminal cannot slow
training.  The app turns records into ``RunSeries`` state and hands that to
the widgets.

Writing a source (the viewer does, for followed files): subclass
``RecordSource`` and implement ``poll``; set ``can_steer`` and implement
``send`` only if commands can reach a running engine; implement ``start``,
``stop`` and ``done`` only if something runs behind the source that must be
wound down before the app may exit.
"""
from __future__ import annotations

import asyncio
import math
import queue
import sys
import threading
import time
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.widgets import Footer

from ..commands import Command
from ..records import Record, RunEnd
from ..series import RunSeries
from .plot import VAL_COLOUR, CurvePlot, rich_colour
from .widgets import Alert, EvalLog, HelpScreen, SamplePane, StatusLine, fmt_count

POLL_S = 0.25          # drain the source 4 times a second
PLOT_S = 0.5           # redraw plots at most twice a second (plotext runs on the UI thread)
WINDOW_STEPS = 1000    # the "recent window" of the plots
MAX_PER_POLL = 50_000  # records applied per poll, so one poll never freezes the screen
COMPACT_BELOW = (120, 36)
DASHBOARD_SWITCH_S = 0.001  # sys.setswitchinterval while a live run trains beside the UI


class RecordSource:
    """Where the dashboard's records come from.

    ``poll()`` is called on the UI thread every ``POLL_S`` seconds and returns
    the records that arrived since the last call, each with the index of the
    run it belongs to (0 for a single run; a new index adds a run).  It must
    return quickly: do blocking reads in a thread of your own.
    """

    can_steer = False  # True when send() reaches a running engine

    def poll(self) -> list[tuple[int, Record]]:
        return []

    def status_text(self) -> str:
        """A few words for the status line, e.g. ``live`` or ``following 2 files``."""
        return ""

    def send(self, command: Command) -> None:
        """Steer the run (pause, eval, checkpoint).  Only called when ``can_steer``."""

    def start(self) -> None:
        """Called once the app is up."""

    def stop(self) -> None:
        """Asked to wind down (q); the app exits once ``done`` is true."""

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


class TrainerSource(QueueSource):
    """A live run: ``trainer.run()`` in a thread, its records through a queue."""

    can_steer = True

    def __init__(self, trainer: Any):
        super().__init__()
        self.trainer = trainer
        self.sink_in_use = self.sink(0)
        trainer.add_sink(self.sink_in_use)
        self.thread: threading.Thread | None = None
        self.end: RunEnd | None = None
        self.stopping = False

    def start(self) -> None:
        if self.thread is None:
            # A daemon thread: a second Ctrl-C at the shell must not hang on a
            # long run; run_dashboard joins it on every ordinary way out.
            self.thread = threading.Thread(target=self._run, name="trainer", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        try:
            self.end = self.trainer.run()
        except BaseException as e:  # the engine catches training errors; this is a sink or setup failing
            self.end = RunEnd(step=getattr(self.trainer, "step", 0), status="failed",
                              elapsed_s=0.0, error=f"{type(e).__name__}: {e}")
            self.queue.put((0, self.end))

    def send(self, command: Command) -> None:
        self.trainer.send(command)

    def stop(self) -> None:
        self.stopping = True
        self.trainer.request_stop()

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
        if self.stopping and not self.done:
            return "stopping…"
        return ""


class DashboardApp(App):
    """Shows a list of runs, fed by a ``RecordSource``; steers it when it can."""

    CSS_PATH = "dashboard.tcss"
    TITLE = "tui-trainer"
    BINDINGS = [
        Binding("p", "pause", "pause"),
        Binding("e", "eval", "eval"),
        Binding("c", "checkpoint", "ckpt"),
        Binding("s", "smooth", "smooth"),
        Binding("l", "log_y", "log"),
        Binding("w", "window", "window"),
        # One footer entry for both: 80 columns must show every key and q.
        Binding("left_square_bracket", "sample(1)", "sample", key_display="[]"),
        Binding("right_square_bracket", "sample(-1)", "newer sample", show=False),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    def __init__(self, source: RecordSource | None = None, runs: list[RunSeries] | None = None, *,
                 title: str | None = None, window_steps: int = WINDOW_STEPS):
        super().__init__()
        self.source = source or RecordSource()
        self.runs: list[RunSeries] = runs if runs is not None else []
        self.window_steps = window_steps
        self.sample_run = 0   # whose samples the sample pane shows
        self.sample_back = 0  # how many samples back from the latest
        self.quitting = False
        self._plotted_at = 0.0
        self._plots_dirty = True
        self._evals_seen = -1
        self._samples_seen: tuple[int, int, int] = (0, -1, -1)
        self._keys_state: tuple | None = None
        if title:
            self.title = title

    # --- layout ---
    def compose(self) -> ComposeResult:
        yield StatusLine(id="status")
        yield Alert(id="alert")
        with Horizontal(id="top"):
            yield CurvePlot("loss", id="loss")
            yield EvalLog(id="evals")
        with Horizontal(id="bottom"):
            yield CurvePlot("lr", id="lr")
            with VerticalScroll(id="sample-box"):
                yield SamplePane(id="sample")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        # The panes' screen: queries go here, not to whatever screen is on top (help).
        self.main = self.screen
        self.main.query_one("#evals").border_title = "evals"
        self.main.query_one("#sample-box").border_title = "sample"
        for plot in self.main.query(CurvePlot):
            plot.runs = self.runs
        self._apply_size()
        self.poll_source()
        self.poll_timer = self.set_interval(POLL_S, self.poll_source)
        self.source.start()

    def on_resize(self) -> None:
        self._apply_size()

    def _apply_size(self) -> None:
        w, h = self.size
        self.screen.set_class(w < COMPACT_BELOW[0] or h < COMPACT_BELOW[1], "-compact")

    # --- feeding ---
    def poll_source(self) -> None:
        """Drain the source, fold records into the runs, update what changed."""
        if not self.main.query(StatusLine):
            return  # shutting down (or a screen without the panes): nothing to update
        batch = self.source.poll()
        for i, record in batch:
            while i >= len(self.runs):
                self.runs.append(RunSeries(f"run {len(self.runs) + 1}"))
            self.runs[i].apply(record)
        if batch:
            self._plots_dirty = True
        self.update_view()
        if self.quitting and self.source.done:
            for i, record in self.source.poll():  # whatever the last moments sent
                if i < len(self.runs):
                    self.runs[i].apply(record)
            self.poll_timer.stop()
            self.exit(self.source.result)

    def update_view(self, force_plots: bool = False) -> None:
        self.main.query_one(StatusLine).show(self.runs, self.source.status_text())
        self.main.query_one(Alert).show(self.runs)
        evals = sum(r.evals_version for r in self.runs)
        if evals != self._evals_seen:
            self._evals_seen = evals
            self.main.query_one(EvalLog).show(self.runs)
        self._show_sample()
        now = time.monotonic()
        if force_plots or (self._plots_dirty and now - self._plotted_at >= PLOT_S):
            self._plotted_at, self._plots_dirty = now, False
            self._title_plots()
            for plot in self.main.query(CurvePlot):
                plot.runs = self.runs
                plot.refresh()
        # Refreshing bindings rebuilds the footer: only when what it shows changes.
        keys = (self.source.can_steer, self.quitting, all(r.ended for r in self.runs))
        if keys != self._keys_state:
            self._keys_state = keys
            self.refresh_bindings()

    def _title_plots(self) -> None:
        """Current figures and the plot options in the pane titles (compact
        mode has no bottom border, so nothing goes in subtitles)."""
        loss = self.main.query_one("#loss", CurvePlot)
        t = Text("loss")
        if len(self.runs) == 1:
            r = self.runs[0]
            if math.isfinite(r.train_loss):
                t.append(f" {r.train_loss:.3f}")
            if loss.smooth and math.isfinite(r.smoothed_loss):
                t.append(f" ema {r.smoothed_loss:.3f}")
            t.append(" ")
            t.append("●", style=f"color({VAL_COLOUR})")
            t.append(" val")
        else:
            for i, r in enumerate(self.runs):
                t.append(" ■", style=rich_colour(i))
                t.append(f" {r.name[:16]}")
        flags = [f for f, on in (("ema", loss.smooth), ("log", loss.log_y),
                                 (f"last {fmt_count(self.window_steps)}", loss.window)) if on]
        if flags:
            t.append(" · " + " ".join(flags), style="italic")
        loss.border_title = Content.from_rich_text(t)
        lr = self.main.query_one("#lr", CurvePlot)
        lr.border_title = "learning rate" + ("" if lr.window is None else f" · last {fmt_count(self.window_steps)}")

    def _sample_series(self) -> RunSeries | None:
        return self.runs[min(self.sample_run, len(self.runs) - 1)] if self.runs else None

    def _show_sample(self) -> None:
        run = self._sample_series()
        seen = run.samples_seen if run else -1
        last_run, last_seen, last_back = self._samples_seen
        if (id(run), seen, self.sample_back) == self._samples_seen:
            return
        if run is not None and id(run) == last_run and self.sample_back and seen > last_seen:
            self.sample_back += seen - last_seen  # looking back: new samples do not move the view
        if run is not None:
            self.sample_back = max(0, min(self.sample_back, len(run.samples) - 1))
        self._samples_seen = (id(run), seen, self.sample_back)
        title = self.main.query_one(SamplePane).show(run, self.sample_back)
        if run is not None and len(self.runs) > 1:
            title = f"{run.name[:16]} {title}"
        box = self.main.query_one("#sample-box")
        box.border_title = title
        box.border_subtitle = Content("[ ] older/newer") if run and len(run.samples) > 1 else ""

    # --- keys ---
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("pause", "eval", "checkpoint"):
            if not self.source.can_steer:
                return False  # hidden: nothing to steer
            if self.quitting or (self.runs and all(r.ended for r in self.runs)):
                return None   # shown, greyed out
        return True

    def _steer(self, command: Command) -> None:
        if self.check_action(command.value, ()):
            self.source.send(command)

    def action_pause(self) -> None:
        self._steer(Command.TOGGLE_PAUSE)

    def action_eval(self) -> None:
        self._steer(Command.EVAL)

    def action_checkpoint(self) -> None:
        self._steer(Command.CHECKPOINT)

    def action_smooth(self) -> None:
        self._toggle(lambda p: setattr(p, "smooth", not p.smooth), kinds=("loss",))

    def action_log_y(self) -> None:
        self._toggle(lambda p: setattr(p, "log_y", not p.log_y), kinds=("loss",))

    def action_window(self) -> None:
        loss = self.main.query_one("#loss", CurvePlot)
        window = None if loss.window else self.window_steps
        self._toggle(lambda p: setattr(p, "window", window), kinds=("loss", "lr"))

    def _toggle(self, change, kinds: tuple[str, ...]) -> None:
        for plot in self.main.query(CurvePlot):
            if plot.kind in kinds:
                change(plot)
        self.update_view(force_plots=True)

    def action_sample(self, delta: int) -> None:
        run = self._sample_series()
        if run is None or not run.samples:
            return
        self.sample_back = max(0, min(len(run.samples) - 1, self.sample_back + delta))
        self._show_sample()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        if self.quitting:
            return  # already winding down: a second q changes nothing
        if self.source.done:
            self.exit(self.source.result)
            return
        self.quitting = True
        self.source.stop()
        self.update_view()


def run_dashboard(trainer: Any, mouse: bool = True, signals: Any = None) -> RunEnd | None:
    """Train with the dashboard up; returns the run's ``RunEnd`` (None if it never ran).

    Whatever way the app ends, the training thread is asked to stop and is
    joined, so the run log always gets its run-end record before the caller
    closes it.
    """
    source = TrainerSource(trainer)
    app = DashboardApp(source, [RunSeries(trainer.run_name)], title=f"tui-trainer · {trainer.run_name}")
    # SSH dropped (signals.RunSignals): close the UI, the run carries on headless.
    if signals is not None:
        signals.on_hangup(lambda: _detach(app, source))
    # SIGTERM/SIGINT (signals.RunSignals): close the UI; the finally below
    # stops the trainer after its step, with a final checkpoint and run_end.
    if signals is not None:
        signals.on_stop(lambda: _exit_soon(app))
    # The training thread gives up the GIL around every torch op; with the
    # default 5 ms switch interval it then waits up to 5 ms each time the UI
    # thread happens to hold it (a convoy), which cost a third of the tokens/sec
    # on 2 cores.  1 ms keeps the handover quick (benchmarks/bench_dashboard.py).
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, DASHBOARD_SWITCH_S))
    try:
        app.run(mouse=mouse)
    finally:
        sys.setswitchinterval(switch)
        if not source.done and not getattr(source, "detached", False):
            source.stop()
            source.join()
    return source.end


def _detach(app: App, source: TrainerSource) -> None:
    """The terminal is gone: stop feeding the UI and close it; the trainer
    thread goes on writing its log and checkpoints (cli waits for it)."""
    source.detached = True  # type: ignore[attr-defined]
    source.trainer.remove_sink(source.sink_in_use)
    _exit_soon(app)


def _exit_soon(app: App) -> None:
    try:  # we are in a signal handler on the app's thread: schedule, don't call
        asyncio.get_running_loop().call_soon_threadsafe(app.exit)
    except RuntimeError:
        pass

"""The dashboard: one Textual app for a live run, an attached run and logs read back.

What differs between the three is given, not inherited: a *source* of records
(``sources.RecordSource``: the training thread's queue, or files) and, when
the run can be steered, a *steering* capability (``sources.Steering``:
in-process for the live dashboard, the control channel for ``attach``, none
for ``view``).  Its ``mode`` and the run's state pick the keys that work from
the one key table (``keys.py``); the footer, the help screen and the key
handling all read it.

Records are polled by a timer a few times a second and folded into
``RunSeries`` state that the widgets show.  Every key gets a visible answer:
a toast, and a note at the end of the status line (``answers``).  The app
holds its parts and gives them itself: ``answers.Answers`` (the note, the
stop prompt), ``sample_view.SampleView`` (whose samples, how far back),
``command_line.TypedCommands`` (``:`` and ``g``) and ``controls.PaneControls``
(the keys that compare runs and look closer).
"""
from __future__ import annotations

import asyncio
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

from textual.app import App, ComposeResult
from textual.containers import Horizontal, VerticalScroll

from ..control.commands import Command
from ..records import Record, RunEnd
from ..curves.series import RunSeries
from .sources import LocalSteering, RecordSource, Steering, TrainerSource
from . import keys, safe
from .answers import CONFIRM_S, NOTE_S, Answers  # noqa: F401 (app's names)
from .command_line import TypedCommands
from .controls import PaneControls
from .plot import CurvePlot
from .sample_view import SampleView
from .suspend import BINDING as SUSPEND_KEY, Suspender
from .titles import plot_title
from .alert import Alert
from .eval_log import EvalLog
from .footer import KeysFooter
from .help_screen import HelpScreen
from .sample_pane import SamplePane
from .status_line import StatusLine

POLL_S = 0.25          # drain the source 4 times a second
PLOT_S = 0.5           # redraw plots at most twice a second (plotext runs on the UI thread)
WINDOW_STEPS = 1000    # the "recent window" of the plots
COMPACT_BELOW = (120, 36)
DASHBOARD_SWITCH_S = 0.001  # sys.setswitchinterval while a live run trains beside the UI


class DashboardApp(App):
    """Shows a list of runs fed by ``source``; steers run 0 when given ``steering``."""

    # Absolute, so an app built or subclassed elsewhere (a benchmark, a test) finds it.
    CSS_PATH = str(Path(__file__).with_name("dashboard.tcss"))
    TITLE = "tui-trainer"
    BINDINGS = [*keys.bindings(), SUSPEND_KEY]

    def __init__(self, source: RecordSource | None = None, runs: list[RunSeries] | None = None, *,
                 steering: Steering | None = None, title: str | None = None,
                 window_steps: int = WINDOW_STEPS, clock: Callable[[], float] = time.monotonic,
                 browser: Any = None):
        super().__init__()
        self.source = source or RecordSource()
        self.steering = steering
        # A folder of runs to come back to (``runs_table.Browser``, view DIR): escape shows its table.
        self.browser = browser
        self.runs: list[RunSeries] = runs if runs is not None else []
        self.window_steps = window_steps
        self.clock = clock    # tests step a fake one through the confirm and note windows
        self.samples = SampleView(self)  # whose samples the sample pane shows, and how far back
        self.answers = Answers(self)     # the status line's note, the stop prompt, the toasts records earn
        self.quitting = False
        self._plotted_at = -math.inf
        self._plots_dirty = True
        self._evals_seen = -1
        self._keys_state: tuple | None = None
        self.source.on_reset = self._run_reset
        self.typed = TypedCommands(self)  # the command line (:) and the prompt box (g)
        if title:
            self.title = safe.plain(title, 80, newlines=False)

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
        yield KeysFooter(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        # The panes' screen: queries go here, not to whatever screen is on top (help).
        self.main = self.screen
        self.main.query_one("#evals").border_title = "evals"
        for plot in self.main.query(CurvePlot):
            plot.runs = self.runs
        self._apply_size()
        self.controls = PaneControls(self)  # the inspector, and the runs table when browsing
        self.suspender = Suspender(self, install=True)  # ctrl+z, fg and bg
        self.poll_source()
        self.poll_timer = self.set_interval(POLL_S, self.poll_source)
        self.source.start()
        if self.mode == "attach" and self.steering.can_send():  # what its loop takes, for keys and hints
            self.typed.ask_status()
        self.call_after_refresh(self._refit)

    def on_resize(self, event: Any = None) -> None:
        # The event's size: here ``self.size`` can still be the old one, and the compact layout
        # came a resize late (80x24 drawn as at 200x50, and the other way round).
        self._apply_size(getattr(event, "size", None))
        self.call_after_refresh(self._refit)

    def _refit(self) -> None:
        """The panes have their new sizes: fit the titles to them again."""
        if self.main.query(StatusLine):
            self.samples.forget()
            self.update_view(force_plots=True)

    def _apply_size(self, size: Any = None) -> None:
        w, h = size if size is not None else self.size
        screen = getattr(self, "main", None) or self.screen  # the panes', even with help on top
        screen.set_class(w < COMPACT_BELOW[0] or h < COMPACT_BELOW[1], "-compact")

    # --- mode and state: which keys work ---
    @property
    def mode(self) -> str:
        return self.steering.mode if self.steering is not None else "view"

    @property
    def state(self) -> str:
        """``running``, ``stopping``, ``ended`` or ``offline`` (see keys.py)."""
        if self.quitting:
            return "stopping"
        if self.steering is None or (self.runs and all(r.ended for r in self.runs)):
            return "ended"
        return "running" if self.steering.can_send() else "offline"

    @property
    def caps(self) -> frozenset[str]:
        """What the keys may need (``keys.NEEDS``): several runs, a runs table, the requests the run takes."""
        offers = self.typed.offers  # None until the run has said (its status answer): all of them
        has = {"runs": len(self.runs) > 1, "browser": self.browser is not None}
        return frozenset(w for w in keys.NEEDS if has.get(w, offers is None or w in offers))

    def action_suspend_process(self) -> None:  # ctrl+z: Textual's, with a pause in the log (ui/suspend.py)
        self.suspender.suspend()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return keys.works(action, parameters, self.mode, self.state, self.caps)

    # --- feeding ---
    def poll_source(self) -> None:
        """Drain the source, fold records into the runs, update what changed."""
        if not self.main.query(StatusLine):
            return  # shutting down: nothing to update
        history = self.source.take_series()  # a resumed run's history, before its live records
        for i, series in history.items():
            self.runs[i] = series.replace(self.runs[i]) if i < len(self.runs) else series
            self._run_reset(i)
        batch = self.source.poll()
        for i, record in batch:
            while i >= len(self.runs):
                self.runs.append(RunSeries(f"run {len(self.runs) + 1}"))
            self.runs[i].apply(record)
            if i == 0 and self.steering is not None:
                self._answer(record)
        if self.steering is not None:
            for a in self.steering.take_answers():
                self.say(a.text, ok=a.ok)
                if self.state == "running":  # an answer after the run's end must not hide the end
                    self.set_note(a.short or a.text)
        self._alerts()
        swapped = self.source.take_swapped() or bool(history)
        if batch or swapped:
            self._plots_dirty = True
        self.update_view(force_plots=swapped)
        if self.quitting and self.source.done:
            for i, record in self.source.poll():  # whatever the last moments sent
                if i < len(self.runs):
                    self.runs[i].apply(record)
            self.poll_timer.stop()
            self.exit(self.source.result)

    def _answer(self, r: Record) -> None:
        self.answers.record(r)

    def _alerts(self) -> None:
        """--notify, --on-event (``alerts``): Textual owns the terminal, so its driver writes them."""
        out = self.source.alert_out
        for kind, text in out.take() if out is not None else ():
            if kind == "say":
                self.say(text, ok=False)
            elif self._driver is not None and not self.is_headless:
                self._driver.write(text)  # as App.bell does: in order with the frames

    def say(self, message: str, *, ok: bool = True, warn: bool = False, timeout: float | None = None) -> None:
        """A toast: plain text, never markup (messages can hold a log's strings)."""
        severity = "error" if not ok else "warning" if warn else "information"
        self.notify(safe.plain(message, 500), severity=severity, markup=False,
                    timeout=timeout if timeout is not None else 4 if ok else 8)

    def set_note(self, text: str, seconds: float = NOTE_S) -> None:
        self.answers.set_note(text, seconds)

    def _run_reset(self, run: int) -> None:
        """A run was read again from the start (truncated, replaced, resumed over)."""
        self.main.query_one(EvalLog).reset()  # the panes' screen, even with help open
        self._evals_seen = -1

    def update_view(self, force_plots: bool = False) -> None:
        mode, state = self.mode, self.state
        if state != "running":
            self.answers.drop_prompt()
        self.main.query_one(StatusLine).show(self.runs, self.answers.note_text())
        self.main.query_one(Alert).show(self.runs, mode)
        evals = sum(r.evals_version for r in self.runs)
        if evals != self._evals_seen:
            self._evals_seen = evals
            self.main.query_one(EvalLog).show(self.runs)
        self.samples.show()
        now = time.monotonic()
        self.controls.refresh(force_plots or self._plots_dirty)
        if force_plots or (self._plots_dirty and now - self._plotted_at >= PLOT_S):
            self._plotted_at, self._plots_dirty = now, False
            self._title_plots()
            for plot in self.main.query(CurvePlot):
                plot.runs = self.runs
                plot.refresh()
        # Refreshing bindings rebuilds the footer: only when what it shows changes.
        if (mode, state, self.caps) != self._keys_state:
            self._keys_state = (mode, state, self.caps)
            self.refresh_bindings()

    def _title_plots(self) -> None:
        """Current figures and the plot options in the pane titles, cut to fit
        (compact mode has no bottom border, so nothing goes in subtitles)."""
        for plot in self.main.query(CurvePlot):
            plot.border_title = plot_title(plot, self.runs, self.window_steps)

    # --- keys: each gets an answer ---
    def action_pause(self) -> None:
        paused = bool(self.runs) and self.runs[0].state in ("paused", "diverged")
        self._send(Command.TOGGLE_PAUSE, "resume" if paused else "pause")

    def action_eval(self) -> None:
        self._send(Command.EVAL, "eval")

    def action_checkpoint(self) -> None:
        self._send(Command.CHECKPOINT, "checkpoint")

    def action_command_line(self) -> None:
        self.typed.open("command")

    def action_prompt(self) -> None:
        self.typed.open("prompt")

    def get_system_commands(self, screen: Any) -> Any:
        yield from super().get_system_commands(screen)
        yield from self.typed.palette(screen)  # ctrl+p: the steering commands too

    def action_stop_run(self) -> None:
        if self.answers.confirmed("x again: stop the run",
                           "press x again to stop the run (final checkpoint); q only closes this window"):
            self._send(Command.STOP, "stop")

    def _send(self, command: Command, verb: str) -> None:
        assert self.steering is not None  # check_action hides these keys without steering
        self.steering.send(command)
        self.set_note(f"{verb} requested…")

    def action_refuse(self, key: str) -> None:
        self.say(keys.refusal(key, self.mode, self.state, self.caps), warn=True)

    def action_smooth(self) -> None:
        self._toggle(lambda p: setattr(p, "smooth", not p.smooth), kinds=("loss",))

    def action_log_y(self) -> None:
        self._toggle(lambda p: setattr(p, "log_y", not p.log_y), kinds=("loss",))

    def action_window(self) -> None:
        loss = self.main.query_one("#loss", CurvePlot)
        window = None if loss.window else self.window_steps
        self._toggle(lambda p: setattr(p, "window", window), kinds=("loss", "lr"))

    def _toggle(self, change: Callable[[CurvePlot], Any], kinds: tuple[str, ...]) -> None:
        for plot in self.main.query(CurvePlot):
            if plot.kind in kinds:
                change(plot)
        self.update_view(force_plots=True)  # the answer: the plot and its title's flags

    def action_sample(self, delta: int) -> None:
        self.samples.step(delta)

    def action_panes(self, name: str, *args: Any) -> None:
        """The keys that compare runs and look closer: ``controls.PaneControls``."""
        getattr(self.controls, name)(*args)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.mode, self.state, self.caps))

    async def action_quit(self, how: str | None = None) -> None:
        """q: stop the live run (asking once more), close an attached window, quit a viewer."""
        if self.mode == "live" and self.state == "running":
            if not self.answers.confirmed("q again: stop the run", "press q again to stop the run (final checkpoint)"):
                return
        elif self.quitting:
            self.say("stopping: the window closes once the run has saved its final checkpoint"
                     if self.mode == "live" else "closing…")
            return
        if self.source.done:
            self.exit(self.source.result)
            return
        self.quitting = True
        self.source.stop()
        self.update_view()


def run_dashboard(trainer: Any = None, *, run: Any = None, mouse: bool = True, signals: Any = None,
                  source: TrainerSource | None = None) -> RunEnd | None:
    """Train with the dashboard up; returns the run's ``RunEnd`` (None if it never ran).

    ``signals`` (``signals.RunSignals``, or None) registers the ways out a
    signal opens: ``on_hangup`` (SSH dropped: close the UI, the run carries on
    headless) and ``on_stop`` (SIGTERM/SIGINT: close the UI; the run stops
    after its step).  Whatever way the app ends, the training thread is asked
    to stop and is joined, so the run log always gets its run-end record
    before the caller closes it.

    Given a ``trainer``, ``run`` is the ``run.Run`` it reports to, which the
    dashboard steers.  Given a ``source`` that prepares its trainer
    (``TrainerSource(run=..., prepare=...)``)
    instead of a trainer, the window is up before torch is even imported, and
    an error while preparing closes it and is raised here.
    """
    source = source if source is not None else TrainerSource(trainer, run=run)
    name = run.name if trainer is not None and run is not None else ""  # else named by its run_start
    app = DashboardApp(source, [RunSeries(name)], steering=LocalSteering(source),
                       title="tui-trainer" + (f" · {name}" if trainer is not None else ""))
    source.on_fail = lambda: app.call_from_thread(app.exit)
    if signals is not None:
        signals.on_hangup(lambda: _detach(app, source))
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
        if not source.done and not source.detached:
            source.stop()
            source.join()
    app.typed.print_forks()  # the :fork commands, to copy once the window is gone
    if source.error is not None:
        raise source.error
    return source.end


def _detach(app: App, source: TrainerSource) -> None:
    """The terminal is gone: stop feeding the UI and close it; the trainer
    thread goes on writing its log and checkpoints (cli waits for it)."""
    source.detach()
    _exit_soon(app)


def _exit_soon(app: App) -> None:
    try:  # we are in a signal handler on the app's thread: schedule, don't call
        asyncio.get_running_loop().call_soon_threadsafe(app.exit)
    except RuntimeError:
        pass

"""One run's state for display: its curves (``curves.Curve``), evals,
samples and status fields, fed one record at a time.

No Textual here.  The dashboard and the viewer both feed a ``RunSeries``
through ``apply(record)`` (or ``extend_train`` for a whole log at once) and the
widgets read it.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, get_args

import numpy as np

from .curve import Curve, columns
from .pace import Pace
from .pauses import PausePoints
from ..fmt import fmt_value
from ..records import Ack, BadStep, Change, Checkpoint, EndStatus, EngineState, Eval, Paused, Record, Resources, Resumed, RunEnd, RunStart, Sample, Status, TrainStep
from .smoothing import EMA_BETA, ema, ema_step

SAMPLES_KEPT = 50
MARKERS_KEPT = 500
ENDED = frozenset(get_args(EndStatus))
STATES = ("starting", *get_args(EngineState), *get_args(EndStatus))  # what a RunSeries.state can be


@dataclass
class Marker:
    """Something a person did to the run, at a step: ``kind`` is change,
    pause, resume, eval or checkpoint; ``label`` says what, briefly."""

    step: int
    kind: str
    label: str


@dataclass
class EvalPoint:
    step: int
    train: float | None  # None: the eval gave no train loss (not a NaN)
    val: float
    elapsed: float
    bpb: float | None = None  # val bits per byte; None: not in the log


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _positive(v: Any) -> float | None:
    return float(v) if _finite(v) and not isinstance(v, bool) and 0 < v < 1e30 else None


class RunSeries:
    """Everything the dashboard shows about one run, fed one record at a time."""

    def __init__(self, name: str = "run"):
        self.name = name
        self.loss = Curve()
        self.smooth = Curve()        # EMA of the train loss, bucketed the same way
        self.lr_curve = Curve()
        self.evals: list[EvalPoint] = []
        self.samples: deque[tuple[int, str]] = deque(maxlen=SAMPLES_KEPT)
        self.samples_requested: deque[bool] = deque(maxlen=SAMPLES_KEPT)  # beside samples: asked for by a person
        self.samples_seen = 0
        self.step = 0
        self.total_steps = 0
        self.tokens = 0
        self.tokens_per_sec = 0.0
        self.lr = math.nan
        self.train_loss = math.nan
        self.elapsed_s = 0.0
        self._state = "starting"     # what the records say (``state`` is what to show)
        self.unheld = ""             # set by a file reader: the state to show while no process holds the run's lock
        self.started = False         # a run_start was read (a tui-trainer run, not someone else's log)
        self.detail = ""
        self.faint = False           # a fork's ancestor, drawn up to the fork step only (logs/lineage.py)
        self.error: str | None = None
        self.message = ""            # the engine's last refusal or note (an Ack that was not ok)
        self.bad_steps = 0           # NaN/inf steps the engine skipped
        self.bad_lines = 0           # unreadable log lines (set by a file reader)
        self.last_checkpoint: Checkpoint | None = None
        self.n_params = 0
        self.device = ""
        self.config: dict[str, Any] = {}
        self.version = 0             # bumped on every change; widgets redraw when it moves
        self.evals_version = 0
        self._eval_cache: tuple[int, np.ndarray] = (-1, np.empty((0, 2)))
        self._ema_state, self._ema_count = 0.0, 0
        self.pace = Pace()  # the rates: medians over the recent steps (``rates``)
        self._compiling = False  # the next train record's step compiled the model: not its pace
        self._live_steps = 0  # train records applied one by one
        # Interventions drawn on the plots: changes, pauses, manual evals and checkpoints.
        self.markers: deque[Marker] = deque(maxlen=MARKERS_KEPT)
        self.markers_version = 0
        self.changes: dict[str, Any] = {}  # live settings as changed so far
        self.ended_by_record = False  # a run_end was read (a diverged run then is over, not paused)
        self.flops_per_token: float | None = None  # for MFU (run_start)
        self.peak_flops: float | None = None
        self.tokens_per_step: float | None = None  # run_start: every micro-batch of every process
        self.resources: Resources | None = None  # the latest memory sample
        self.pauses = PausePoints()  # the compile, evals and checkpoints: their own time, not the rate's
        self._away_s = 0.0  # the time of the pause points since the last train record: not a step's

    # --- feeding ---
    def apply(self, r: Record) -> None:
        self.version += 1
        if isinstance(r, TrainStep):
            going = self.pauses.going_on
            self.pauses.end(r.time)
            self._away(going)
            self._train(r)
        elif isinstance(r, Eval):
            self.evals.append(EvalPoint(r.step, r.train_loss, r.val_loss, r.elapsed_s, r.val_bpb))
            self.evals_version += 1
            self.elapsed_s = max(self.elapsed_s, r.elapsed_s)
            if r.forced:
                self._mark(r.step, "eval", "eval now")
        elif isinstance(r, Sample):
            self.samples.append((r.step, r.text))
            self.samples_requested.append(r.requested is True)
            self.samples_seen += 1
        elif isinstance(r, Resources):
            self.resources = r
        elif isinstance(r, Change):
            self.changes[r.key] = r.new
            self._mark(r.step, "change", f"{r.key} {fmt_value(r.old)}→{fmt_value(r.new)}")
            if r.key == "steps" and isinstance(r.new, int):
                self.total_steps = r.new
        elif isinstance(r, Status):
            going = self.pauses.going_on
            self.pauses.status(r)
            self._away(going)
            if r.state == "compiling":
                self._compiling = True
            if self._state not in ENDED:
                self._state = "diverged" if self.diverged and r.state == "paused" else r.state
                self.detail = r.detail
        elif isinstance(r, Paused):
            self._state = "diverged" if r.reason == "diverged" else "paused"
            self._mark(r.step, "pause", "diverged" if r.reason == "diverged" else "pause")
        elif isinstance(r, Resumed):
            self._state = "running"
            self.pace.gap()  # the pause is not step time
            self._mark(r.step, "resume", "resume")
        elif isinstance(r, BadStep):
            self.bad_steps += 1
        elif isinstance(r, Checkpoint):
            self.last_checkpoint = r
            self.pauses.checkpoint(r)
            if r.reason == "manual":
                self._mark(r.step, "checkpoint", "checkpoint")
        elif isinstance(r, Ack):
            if not r.ok:
                self.message = f"{r.command}: {r.message}"
        elif isinstance(r, RunStart):
            self.name = r.run_name or self.name
            self.total_steps = r.total_steps
            self.step = max(self.step, r.step)
            self.n_params, self.device, self.config = r.n_params, r.device, r.config
            self.flops_per_token, self.peak_flops = _positive(r.flops_per_token), _positive(r.peak_flops)
            self.tokens_per_step = _positive(r.tokens_per_step)  # absent in older logs
            self._state, self.error, self.started = "running", None, True
            self.pace = Pace()  # a new session: neither the time between sessions nor an earlier pace counts
            self._live_steps = 0
            self.pauses = PausePoints()
            self.ended_by_record = False  # a resumed run is not over
            if isinstance(r.parent, dict) and not self.markers:  # a fork: where it left its parent
                self._mark(r.step, "fork", f"forked from {r.parent.get('name')}@{r.parent.get('step')}")
            if isinstance(r.live, dict):
                self.changes.update(r.live)
            if r.inexact:
                self.message = (f"resumed with {', '.join(map(str, r.inexact))} changed: not bit-identical "
                                f"to an uninterrupted run from step {r.step}")
        elif isinstance(r, RunEnd):
            self.pauses.end(r.time)
            self.ended_by_record = True
            self._state = r.status
            self.error = r.error
            self.step = max(self.step, r.step)
            self.elapsed_s = max(self.elapsed_s, r.elapsed_s)

    def replace(self, old: "RunSeries") -> "RunSeries":
        """This series, to be shown in place of ``old``: its versions moved
        past ``old``'s, so every widget redraws (a version never repeats)."""
        self.version += old.version + 1
        self.evals_version += old.evals_version + 1
        self.samples_seen += old.samples_seen + 1
        return self

    def _mark(self, step: int, kind: str, label: str) -> None:
        self.markers.append(Marker(step, kind, label))
        self.markers_version += 1

    @property
    def state(self) -> str:
        """The run's state: what its records say, unless a file reader found
        no process holding the run's lock (``unheld``, e.g. ``crashed``) and
        no run_end was read."""
        return self.unheld if self.unheld and self._state not in ENDED else self._state

    @state.setter
    def state(self, value: str) -> None:
        self._state = value

    @property
    def diverged(self) -> bool:
        return self._state == "diverged"

    @property
    def ended(self) -> bool:
        return self._state in ENDED

    def _train(self, r: TrainStep) -> None:
        self.step = r.step
        self.lr = r.lr
        self.tokens = r.tokens or self.tokens
        self.tokens_per_sec = r.tokens_per_sec
        self.elapsed_s = r.elapsed_s
        if self._state not in ENDED:
            self._state = "running"
        self._live_steps += 1
        compiled, self._compiling = self._compiling, False
        away, self._away_s = self._away_s, 0.0
        self.pace.add(r.step, r.tokens, r.elapsed_s, r.tokens_per_sec, compiled, away_s=away)
        if _finite(r.lr):
            self.lr_curve.append(r.step, r.lr)
        if _finite(r.train_loss):
            self.train_loss = r.train_loss
            self.loss.append(r.step, r.train_loss)
            self._ema_state, self._ema_count, smoothed = ema_step(self._ema_state, self._ema_count,
                                                                   r.train_loss)
            self.smooth.append(r.step, smoothed)

    def _away(self, p: Any) -> None:
        """``p``, the pause point that was going on, if it has just ended: its time is its own, not the
        next step's (a run that evaluates every few steps showed a rate and ETA that swung at each eval)."""
        if p is not None and p.ended is not None and p.seconds is not None:
            self._away_s += p.seconds

    def seed_rates(self, recent: list[TrainStep]) -> None:
        """Feed the rate estimator a log's recent train records of its latest
        session, oldest first (a log read whole: ``extend_train`` feeds no
        rates), so a window opened on a running run shows its pace at once."""
        self.pace = Pace()
        for r in recent[-self.pace.kept:]:
            self.pace.add(r.step, r.tokens, r.elapsed_s, r.tokens_per_sec)

    def extend_train(self, steps: np.ndarray, losses: np.ndarray, lrs: np.ndarray | None = None) -> None:
        """Bulk path: many train steps at once (a log read back from disk).
        Non-finite values are dropped, as ``apply`` drops them."""
        steps = np.asarray(steps, dtype=np.float64)
        losses = np.asarray(losses, dtype=np.float64)
        if not len(steps):
            return
        self.version += 1
        self._compiling = False  # the compile's step is among these
        ok = np.isfinite(losses)
        xs, ys = steps[ok], losses[ok]
        self.loss.extend(xs, ys)
        sm, self._ema_state, self._ema_count = ema(ys, EMA_BETA, self._ema_state, self._ema_count)
        self.smooth.extend(xs, sm)
        if len(ys):
            self.train_loss = float(ys[-1])
        if lrs is not None:
            lrs = np.asarray(lrs, dtype=np.float64)
            okl = np.isfinite(lrs)
            self.lr_curve.extend(steps[okl], lrs[okl])
            if okl.any():
                self.lr = float(lrs[okl][-1])
        self.step = max(self.step, int(steps[-1]))

    # --- queries ---
    def train_points(self, width: int, window: int | None = None, smooth: bool = False, *,
                     start: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Train loss for a plot ``width`` columns wide: min/max per column, or
        the EMA when ``smooth``.  ``window`` keeps the last N steps of this run;
        ``start`` (overrides it) keeps x >= start, for lining up several runs."""
        if start is None and window is not None:
            start = self.step - window
        if smooth:
            return self.smooth.points(width, start, mean=True)
        return self.loss.points(width, start)

    def lr_points(self, width: int, window: int | None = None, *,
                  start: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        if start is None and window is not None:
            start = self.step - window
        return self.lr_curve.points(width, start, mean=True)

    def eval_points(self, start: float | None = None, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(step, val loss) of the evals at or after ``start``, finite only; with
        ``width``, at most one point (the mean) per column."""
        if not self.evals:
            return np.empty(0), np.empty(0)
        if self._eval_cache[0] != self.evals_version:
            a = np.array([(e.step, e.val) for e in self.evals], dtype=np.float64)
            self._eval_cache = (self.evals_version, a[np.isfinite(a[:, 1])])
        a = self._eval_cache[1]
        if start is not None:
            a = a[a[:, 0] >= start]
        x, y = a[:, 0], a[:, 1]
        if width is not None and len(x) > width:
            x, y = columns(x, y, y, y, np.ones_like(y), width, mean=True)
        return x, y

    @property
    def smoothed_loss(self) -> float:
        return self.smooth.last_y

    def rates(self) -> tuple[float, float]:
        """(steps/s, tokens/s): the medians over the last few dozen steps
        (``pace.Pace``); NaN when unknown.  Before two steps have a pace of
        their own, a log read at once shows the run's average."""
        sps, tps = self.pace.rates()
        if _finite(tps):
            return sps, tps
        if self._live_steps and not self.pace.has_steps:
            return sps, math.nan  # only the step that compiled so far: no pace yet
        if _finite(self.elapsed_s) and self.elapsed_s > 0 and self.tokens > 0:
            return sps, self.tokens / self.elapsed_s  # a log read at once: the run's average
        return sps, self.tokens_per_sec if self.tokens_per_sec else math.nan

    def mfu(self) -> float:
        """Model FLOPs utilisation at the smoothed token rate; NaN when unknown."""
        _, tps = self.rates()
        if not (self.flops_per_token and self.peak_flops and _finite(tps) and tps > 0):
            return math.nan
        mfu = tps * self.flops_per_token / self.peak_flops
        # Over 100%: the peak was measured low (a CPU peak taken on a busy machine), not a figure to show.
        return mfu if mfu <= 1.0 else math.nan

    def pause_text(self, now: float | None = None, most: int = 3) -> str:
        """The compile, eval or checkpoint going on, then those just ended,
        each as its own time ("checkpointing 1.2 s", "eval 0.40 s";
        ``pauses.PausePoints.text``) at wall time ``now`` (default: now); "" when none."""
        return self.pauses.text(self.state, time.time() if now is None else now, most)

    def eta_s(self) -> float:
        sps, _ = self.rates()
        if self.ended or self.state in ("paused", self.unheld) or not self.total_steps or not (sps > 0):
            return math.nan  # a paused run, or one no process trains, has no time of arrival
        return max(0, self.total_steps - self.step) / sps

    def sample(self, back: int = 0) -> tuple[int, str, int, int] | None:
        """The sample ``back`` places before the latest: (step, text, index, count)."""
        if not self.samples:
            return None
        back = max(0, min(back, len(self.samples) - 1))
        step, text = self.samples[-1 - back]
        return step, text, len(self.samples) - back, len(self.samples)

    def sample_requested(self, back: int = 0) -> bool:
        """Whether the sample ``back`` places before the latest was asked for
        (the prompt box, ``attach --sample``), not drawn at an eval."""
        if not self.samples_requested:
            return False
        return self.samples_requested[-1 - max(0, min(back, len(self.samples_requested) - 1))]

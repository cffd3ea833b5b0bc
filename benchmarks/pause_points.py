"""What an engine arm's pause points cost, read from its records (``bench_gpu.py``).

``Tape`` is a sink on the trainer: it notes when each record came and feeds
a ``RunSeries`` as the status line and the console do.  An arm trains
``window`` steps undisturbed (its throughput and the rate the status line
shows at steps 10, 20 and 40 come from those), then goes on to three
scheduled evals (each with its sample) and checkpoints, ``pause_every``
steps apart, as a run's cadence makes them: far enough apart that a
checkpoint's background write has ended before the next is due.  So each arm
gives three evals, samples and checkpoints: the first (cold: a compile, a
first allocation) and later ones.

A watchdog stops the run (``request_stop``) when no record came for
``step_limit_s`` (``first_step_limit_s`` before the first train record: the
compile), or when the bench's deadline passed.
"""
from __future__ import annotations

import math
import statistics
import threading
import time
from typing import Any

from tui_trainer.curves.series import RunSeries

PAUSE_EVERY = 80     # steps between an arm's evals and checkpoints: more than a 124M write takes on an H200
SHOWN_AT = (10, 20, 40)  # steps at which the shown rate is noted


class Tape:
    def __init__(self, window: int, *, step_limit_s: float, first_step_limit_s: float, deadline: float):
        self.window = window
        self.series = RunSeries()
        self.trains: list[tuple[int, float, int]] = []  # (step, time it came, tokens so far)
        self.shown: dict[int, float] = {}  # step: the tokens/s the status line showed there
        self.evals: list[float] = []    # seconds from its status record to its eval record
        self.samples: list[float] = []  # seconds from the eval record to its sample (the sample_tokens draw)
        self.checkpoints: list[dict[str, Any]] = []
        self.problem = ""  # why the watchdog stopped the run, if it did
        self._limits = (step_limit_s, first_step_limit_s, deadline)
        self._eval_began: float | None = None
        self._eval_at: float | None = None
        self._last = time.perf_counter()
        self._done = threading.Event()

    # --- the sink ---
    def emit(self, r: Any) -> None:
        now = time.perf_counter()
        self._last = now
        try:
            self._note(r, now)
        except Exception as e:  # a figure lost, never the run
            self.problem = self.problem or f"tape: {type(e).__name__}: {e}"

    def _note(self, r: Any, now: float) -> None:
        self.series.apply(r)
        if r.type == "train":
            self.trains.append((r.step, now, r.tokens))
            if r.step in SHOWN_AT and r.step <= self.window:  # after it, the pause points
                self.shown[r.step] = self.series.rates()[1]
        elif r.type == "status" and r.state == "evaluating":
            self._eval_began = now
        elif r.type == "eval" and self._eval_began is not None:
            self.evals.append(now - self._eval_began)
            self._eval_began, self._eval_at = None, now
        elif r.type == "sample" and self._eval_at is not None:
            self.samples.append(now - self._eval_at)
            self._eval_at = None
        elif r.type == "checkpoint":
            self.checkpoints.append({"step": r.step, "reason": r.reason, "blocked_s": r.blocked_s,
                                     "write_s": r.write_s})
        elif r.type == "run_end":
            self._done.set()

    # --- the watchdog ---
    def watch(self, run: Any) -> threading.Thread:
        """Stop ``run`` (the run the trainer reports to) when it stalls or the budget is spent."""
        def loop() -> None:
            step_limit, first_limit, deadline = self._limits
            while not self._done.wait(0.5):
                now = time.perf_counter()
                limit = step_limit if self.trains else first_limit
                why = (f"no step for {now - self._last:.0f}s (limit {limit:.0f}s)" if now - self._last > limit
                       else "the bench's time budget ran out" if now > deadline else "")
                if why:
                    self.problem = self.problem or f"stopped: {why}"
                    run.request_stop()
                    return

        t = threading.Thread(target=loop, name="bench-watchdog", daemon=True)
        t.start()
        return t

    def finish(self) -> None:
        self._done.set()

    # --- the figures ---
    def tokens_per_sec(self, first: int, last: int) -> float:
        """Tokens/s between the train records of steps ``first`` and ``last`` (wall time)."""
        got = [t for t in self.trains if first <= t[0] <= last]
        if len(got) < 2:
            return math.nan
        (_, t0, k0), (_, t1, k1) = got[0], got[-1]
        return (k1 - k0) / (t1 - t0) if t1 > t0 else math.nan

    def figures(self, steady: float) -> dict[str, Any]:
        def first_later(xs: list[float]) -> dict[str, float | None]:
            return {"first": xs[0] if xs else None,
                    "later": statistics.median(xs[1:]) if len(xs) > 1 else None, "all": xs}

        saves = [c for c in self.checkpoints if c["reason"] != "final"]  # a final save is synchronous, and not due
        return {"checkpoints": self.checkpoints, "eval_s": first_later(self.evals),
                "blocked_s": first_later([c["blocked_s"] for c in saves if c["blocked_s"] is not None]),
                "write_s": first_later([c["write_s"] for c in saves if c["write_s"] is not None]),
                "sample_s": first_later(self.samples), "steady_tok_s": steady,
                "shown_tok_s": {str(k): v for k, v in self.shown.items()},
                "shown_vs_steady": {str(k): v / steady if steady and steady == steady else None
                                    for k, v in self.shown.items()},
                "problem": self.problem or None}


PAUSE_HEADER = (f"{'':<20} {'ckpt blocked':>15}  {'ckpt write':>15}  {'eval':>15}  {'sample':>15}  "
                f"{'shown/steady':>17}  {'steady':>11}\n"
                f"{'':<20} {'first   later':>15}  {'first   later':>15}  {'first   later':>15}  "
                f"{'first   later':>15}  {'@10   @20   @40':>17}  {'tok/s':>11}")


def pause_row(name: str, f: dict[str, Any]) -> str:
    """One line of the pause-point table (under ``PAUSE_HEADER``)."""
    def s(v: Any) -> str:
        return f"{v:6.2f}s" if isinstance(v, (int, float)) and v == v else "      -"

    def fl(key: str) -> str:
        return f"{s(f[key]['first'])} {s(f[key]['later'])}"

    ratio = " ".join(f"{f['shown_vs_steady'].get(str(k)) or math.nan:5.2f}" for k in SHOWN_AT)
    out = (f"{name:<20} {fl('blocked_s')}  {fl('write_s')}  {fl('eval_s')}  {fl('sample_s')}  {ratio}  "
           f"{f['steady_tok_s']:>11,.0f}")
    return out + (f"  ({f['problem']})" if f.get("problem") else "")

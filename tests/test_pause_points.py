"""Evals and checkpoints as their own time (curves/pauses.py): the status line
and the console say "checkpointing 1.2 s" / "checkpoint 5.0 s" / "eval 0.40 s",
while the rate and the ETA stay those of training time."""
from __future__ import annotations

import io
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tui_trainer.curves.pauses import SHOWN_S, fmt_seconds
from tui_trainer.curves.series import RunSeries
from tui_trainer.records import Checkpoint, Eval, RunStart, Sample, Status, TrainStep
from tui_trainer.run.console import ConsoleSink

T0 = 1_800_000_000.0  # the records' wall time at the run's start
STEP_S = 0.1
TOKENS = 1024


class Timeline:
    """The records of a run at 0.1 s a step, with pause points between steps,
    each at its own wall time (``time``) as the engine would write them."""

    def __init__(self, total: int = 200):
        self.t = 0.0  # seconds since T0
        self.step = 0
        self.out: list = [RunStart(step=0, run_name="r", config={}, n_params=1, device="cpu", total_steps=total,
                                   time=T0)]

    def steps(self, n: int) -> "Timeline":
        for _ in range(n):
            self.step += 1
            self.t += STEP_S
            self.out.append(TrainStep(step=self.step, train_loss=2.0, lr=1e-3, tokens_per_sec=TOKENS / STEP_S,
                                      grad_norm=1.0, elapsed_s=self.t, tokens=TOKENS * self.step, time=T0 + self.t))
        return self

    def status(self, state: str, after: float = 0.0, detail: str = "") -> "Timeline":
        self.t += after
        self.out.append(Status(step=self.step, state=state, detail=detail, time=T0 + self.t))  # type: ignore[arg-type]
        return self

    def checkpoint(self, blocked: float, write: float | None = None) -> "Timeline":
        """A checkpoint that held training up ``blocked`` s; its record now
        (synchronous: ``write`` None) or after the next 5 steps (a background write)."""
        self.status("checkpointing")
        if write is None:
            self.t += blocked
            self.out.append(Checkpoint(step=self.step, path="ckpt.pt", reason="scheduled", blocked_s=blocked,
                                       write_s=blocked, time=T0 + self.t))
            return self.status("running")
        at = self.step
        self.status("running", blocked).steps(5)
        self.out.append(Checkpoint(step=at, path="ckpt.pt", reason="scheduled", blocked_s=blocked, write_s=write,
                                   time=T0 + self.t))
        return self

    def eval(self, took: float, sample: float = 0.1) -> "Timeline":
        self.status("evaluating")
        self.t += took
        self.out.append(Eval(step=self.step, val_loss=2.0, train_loss=2.0, elapsed_s=self.t, time=T0 + self.t))
        self.t += sample
        self.out.append(Sample(step=self.step, prompt="", text="abc", time=T0 + self.t))
        return self.status("running")


def fed(tl: Timeline) -> RunSeries:
    s = RunSeries()
    for r in tl.out:
        s.apply(r)
    return s


def test_a_checkpoint_that_blocked_5_s_shows_its_time_and_does_not_move_the_eta():
    before = fed(Timeline().steps(50))
    eta = before.eta_s()
    assert math.isclose(eta, 150 * STEP_S, rel_tol=1e-6)
    tl = Timeline().steps(50).status("checkpointing")
    going = fed(tl)
    assert going.pause_text(now=T0 + tl.t + 1.25) == "checkpointing 1.2 s"  # while it goes on, counting
    assert math.isclose(going.eta_s(), eta, rel_tol=1e-6)
    tl = Timeline().steps(50).checkpoint(5.0)
    done = fed(tl)
    assert done.pause_text(now=T0 + tl.t + 1) == "checkpoint 5.0 s"
    assert math.isclose(done.eta_s(), eta, rel_tol=1e-6)
    tl.steps(1)
    s = fed(tl)
    assert math.isclose(s.eta_s(), 149 * STEP_S, rel_tol=1e-6)  # the next step: one step less, not 5 s more
    assert math.isclose(s.rates()[1], TOKENS / STEP_S)
    assert s.pause_text(now=T0 + tl.t + 1) == "checkpoint 5.0 s"  # right after: still said
    assert s.pause_text(now=T0 + tl.t + SHOWN_S + 1) == ""  # a while later: gone


def test_a_background_write_shows_the_blocked_time_and_the_write():
    tl = Timeline().steps(20).checkpoint(0.2, write=1.3)
    s = fed(tl)
    assert s.pause_text(now=T0 + tl.t) == "checkpoint 0.20 s (write 1.3 s)"
    assert math.isclose(s.eta_s(), 175 * STEP_S, rel_tol=1e-6)


def test_an_eval_shows_its_time_while_it_goes_on_and_after():
    tl = Timeline().steps(30).status("evaluating")
    assert fed(tl).pause_text(now=T0 + tl.t + 0.3) == "evaluating 0.30 s"
    tl = Timeline().steps(30).eval(0.4).steps(2)
    s = fed(tl)
    assert s.pause_text(now=T0 + tl.t) == "eval 0.50 s"  # the losses and the sample: time away from training
    assert math.isclose(s.eta_s(), 168 * STEP_S, rel_tol=1e-6)


def test_an_eval_and_the_checkpoint_after_it_both_show_the_latest_first():
    tl = Timeline().steps(40).eval(0.4).checkpoint(0.2, write=1.3)
    s = fed(tl)
    assert s.pause_text(now=T0 + tl.t) == "checkpoint 0.20 s (write 1.3 s), eval 0.50 s"
    assert s.pause_text(now=T0 + tl.t, most=1) == "checkpoint 0.20 s (write 1.3 s)"  # a narrow status line
    tl.steps(10).status("evaluating")
    s = fed(tl)
    assert s.pause_text(now=T0 + tl.t + 0.3) == "evaluating 0.30 s, checkpoint 0.20 s (write 1.3 s)"
    assert s.pause_text(now=T0 + tl.t + SHOWN_S + 2) == f"evaluating {SHOWN_S + 2:.1f} s"


def test_the_compile_shows_as_its_own_time():
    tl = Timeline().status("compiling", detail="torch.compile").steps(1).status("running", detail="compiled")
    tl.out[-2].time = T0 + 9.9  # the compiled step ended 9.9 s after the compile began
    tl.out[-1].time = T0 + 9.9
    assert fed(tl).pause_text(now=T0 + 10) == "compiled in 9.9 s"


def test_a_resumed_session_forgets_the_last_one_s_pause():
    tl = Timeline().steps(5).status("checkpointing")
    tl.out.append(RunStart(step=5, run_name="r", config={}, n_params=1, device="cpu", total_steps=200,
                           time=T0 + tl.t + 60))
    s = fed(tl)
    assert s.pause_text(now=T0 + tl.t + 61) == ""


@settings(max_examples=50, deadline=None)
@given(times=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**20, 10**20),
                                st.just(T0)), min_size=4, max_size=4),
       blocked=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
       now=st.floats(allow_nan=True, allow_infinity=True))
def test_hostile_times_never_crash_and_show_a_bounded_figure(times, blocked, now):
    s = RunSeries()
    s.apply(Status(step=1, state="checkpointing", time=times[0]))
    text = s.pause_text(now=now)
    s.apply(Checkpoint(step=1, path="p", reason="manual", blocked_s=blocked, write_s=blocked, time=times[1]))
    s.apply(Status(step=1, state="running", time=times[2]))
    s.apply(Status(step=1, state="evaluating", time=times[3]))
    for t in (text, s.pause_text(now=now), s.pause_text()):
        assert len(t) < 60 and t.isprintable() and "nan" not in t and "inf" not in t, t


@pytest.mark.parametrize("v, want", [(0.213, "0.21 s"), (1.25, "1.2 s"), (59.94, "59.9 s"), (65, "1:05"),
                                     (-1, "-"), (math.nan, "-"), (None, "-"), (True, "-"), (1e300, "-")])
def test_fmt_seconds(v, want):
    assert fmt_seconds(v) == want


def test_the_console_says_each_pause_s_own_time_and_the_eta_does_not_jump():
    tl = Timeline().steps(50).checkpoint(5.0).steps(10).checkpoint(0.2, write=1.3).eval(0.4).steps(4)
    out = io.StringIO()
    sink = ConsoleSink(log_every=10, stream=out)
    for r in tl.out:
        sink.emit(r)
    lines = out.getvalue().splitlines()
    assert "checkpoint   50 | ckpt.pt (scheduled) | blocked 5.0 s, write 5.0 s" in lines
    assert "checkpoint   60 | ckpt.pt (scheduled) | blocked 0.20 s, write 1.3 s" in lines
    assert any(ln.startswith("eval     65 |") and "| took 0.40 s |" in ln for ln in lines), lines
    etas = {ln.split()[1].split("/")[0]: ln.rsplit("ETA ", 1)[1]
            for ln in lines if ln.startswith("step ") and "ETA " in ln}
    assert etas["50"] == "0:15" and etas["60"] == "0:14", etas  # 150 and 140 steps of 0.1 s


async def test_the_status_line_widget_shows_the_checkpoint_s_time_not_an_eta_jump():
    from textual.app import App

    from tui_trainer.ui.status_line import StatusLine

    class One(App):
        def compose(self):
            yield StatusLine(id="status")

    app = One()
    async with app.run_test(size=(160, 6)) as pilot:
        line = app.query_one(StatusLine)
        base = Timeline().steps(50)
        line.show([fed(base)])
        await pilot.pause()
        assert "ETA 0:15" in line._shown.plain and "checkpoint" not in line._shown.plain
        tl = Timeline().steps(50).checkpoint(5.0).steps(1)
        for r in tl.out:  # as now: the status line reads the wall clock
            r.time += _now() - (T0 + tl.t)
        line.show([fed(tl)])
        await pilot.pause()
        shown = line._shown.plain
        assert "checkpoint 5.0 s" in shown and "ETA 0:15" in shown, shown
        going = Timeline().steps(50).status("checkpointing")
        going.out[-1].time = _now() - 1.0
        line.show([fed(going)])
        await pilot.pause()
        shown = line._shown.plain
        got = re.search(r"checkpointing (\d+\.\d+) s", shown)
        assert "CHECKPOINTING" in shown and got and 1.0 <= float(got[1]) < 600, shown  # counting from its start


def _now() -> float:
    import time

    return time.time()


FAILED = "torch.compile failed (InductorError); running eagerly"


def test_a_compile_that_failed_is_said_not_shown_as_compiled():
    """--compile without a C++ compiler: the engine trains eagerly and says so
    in its status; the status line said "compiled in 6.6 s" and the console
    nothing at all."""
    tl = Timeline().status("compiling", detail="torch.compile").status("running", after=6.6, detail=FAILED).steps(3)
    assert fed(tl).pause_text(now=T0 + tl.t) == "compile failed after 6.6 s: eager"
    out = io.StringIO()
    sink = ConsoleSink(log_every=10, stream=out)
    for r in tl.out:
        sink.emit(r)
    lines = out.getvalue().splitlines()
    assert f"note: {FAILED}" in lines and not any("compiled" in ln for ln in lines), lines


def test_the_console_says_how_long_the_compile_took():
    tl = Timeline().status("compiling", detail="torch.compile").steps(1).status("running", detail="compiled")
    tl.out[-2].time = T0 + 9.9  # the compiled step ended 9.9 s after the compile began
    out = io.StringIO()
    sink = ConsoleSink(log_every=10, stream=out)
    for r in tl.out:
        sink.emit(r)
    lines = out.getvalue().splitlines()
    assert lines[1:3] == ["compile | compiled in 9.9 s", "step      1/200 | loss 2.0000 | lr 1.00e-03 | - tok/s | grad 1"], lines


async def test_the_dashboard_says_a_failed_compile_and_the_devices_notes():
    """What headless prints (the compile's failure, the notes on the first
    line: a switch asked for and off, a CPU run's memory) the dashboard,
    which shows no device, says in a toast."""
    from tests.uitools import FixedSource, fixed_records, until
    from tui_trainer.ui.app import DashboardApp

    app = DashboardApp(FixedSource(fixed_records(n=5)))
    async with app.run_test(size=(120, 30)) as pilot:
        app._answer(RunStart(step=0, run_name="r", config={}, n_params=1, total_steps=9, device=(
            "cpu (fp32, 2 threads); torch.compile on CPU needs a C++ compiler and none is on PATH: running eagerly; "
            "memory: at least 10.4 GiB of this machine's 23.5 GiB")))
        app._answer(RunStart(step=0, run_name="r", config={}, n_params=1, total_steps=9, device="cpu (fp32)"))
        app._answer(Status(step=0, state="running", detail=FAILED))
        await until(pilot, lambda: len(app._notifications) >= 2, "the toasts")
        said = [str(n.message) for n in app._notifications]
        assert said == ["torch.compile on CPU needs a C++ compiler and none is on PATH: running eagerly; memory: at "
                        "least 10.4 GiB of this machine's 23.5 GiB", FAILED], said
        await pilot.press("q")

"""The rate, ETA and MFU the console and the status line show (series.RunSeries):
the steady pace from the first steps, whatever the compile and the warm-up
took, and no jump in the ETA at a checkpoint or an eval."""
from __future__ import annotations

import io
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tui_trainer.run.console import ConsoleSink
from tui_trainer.fmt import fmt_mfu
from tui_trainer.records import RunStart, Status, TrainStep
from tui_trainer.curves.series import RunSeries

TOKENS = 1024  # per step


def start(total=1000, fpt=None, peak=None) -> RunStart:
    return RunStart(step=0, run_name="r", config={}, n_params=1, device="cpu", total_steps=total,
                    flops_per_token=fpt, peak_flops=peak)


def records(step_times: list[float], overhead: float = 0.0, gaps: dict[int, float] | None = None):
    """Train records of steps that took ``step_times`` seconds each, with
    ``overhead`` seconds of loop between steps and ``gaps`` {step: seconds}
    of something else (a checkpoint, an eval) before a step."""
    elapsed = 0.0
    for k, dt in enumerate(step_times, start=1):
        elapsed += (gaps or {}).get(k, 0.0) + dt + overhead
        yield TrainStep(step=k, train_loss=2.0, lr=1e-3, tokens_per_sec=TOKENS / dt, grad_norm=1.0,
                        elapsed_s=elapsed, tokens=TOKENS * k)


@settings(max_examples=40, deadline=None)
@given(first=st.floats(10, 300), warmup=st.integers(0, 6), slow=st.floats(1.5, 5), jitter=st.floats(0, 0.08),
       steady=st.floats(0.001, 2.0), compiled=st.booleans(), seed=st.integers(0, 2**16))
def test_by_step_20_the_rate_is_within_10_percent_of_the_steady_rate(first, warmup, slow, jitter, steady,
                                                                     compiled, seed):
    """Step 1 took 10-300x a steady step (the compile), the next few were
    slow (warm-up), every step jitters: at step 20 both rates are the steady
    ones, and at step 10 too after a warm-up of up to 4 slow steps."""
    rng = random.Random(seed)
    times = [steady * first] + [steady * slow] * warmup
    times += [steady * (1 + rng.uniform(-jitter, jitter)) for _ in range(40 - len(times))]
    s = RunSeries()
    s.apply(start())
    if compiled:
        s.apply(Status(step=0, state="compiling"))
    for r in records(times, overhead=steady * 0.02):
        s.apply(r)
        if compiled and r.step == 1:
            s.apply(Status(step=1, state="running", detail="compiled in 9.9s"))
        if r.step in (10, 20, 40) and (r.step > 10 or warmup <= 4):
            sps, tps = s.rates()
            assert abs(tps / (TOKENS / steady) - 1) < 0.10, (r.step, tps, TOKENS / steady)
            assert abs(sps * steady * 1.02 - 1) < 0.10, (r.step, sps, 1 / (steady * 1.02))
            assert abs(s.eta_s() / ((1000 - r.step) * steady * 1.02) - 1) < 0.10, r.step
    assert s.step == 40


def test_the_console_shows_the_steady_rate_at_steps_10_and_20():
    out = io.StringIO()
    sink = ConsoleSink(log_every=10, stream=out)
    sink.emit(start())
    for r in records([10.0] + [0.3] * 4 + [0.1] * 15):  # 10 s of compile, slow first steps, then 10k tok/s
        sink.emit(r)
    lines = out.getvalue().splitlines()
    for step, eta in (("10", "1:39"), ("20", "1:38")):  # 990 and 980 steps of 0.1 s to go
        line = next(ln for ln in lines if ln.startswith(f"step {step:>6}"))
        assert "10.2k tok/s" in line and f"ETA {eta}" in line, line


def test_the_step_that_compiled_shows_no_rate_rather_than_a_false_one():
    s = RunSeries()
    s.apply(start())
    s.apply(Status(step=0, state="compiling"))
    s.apply(next(records([18.0])))
    assert math.isnan(s.rates()[1])  # "-", not 57 tok/s
    s.apply(Status(step=1, state="running", detail="compiled in 18.0s"))
    for r in list(records([18.0, 0.1, 0.1]))[1:]:
        s.apply(r)
    assert math.isclose(s.rates()[1], TOKENS / 0.1)


def test_a_checkpoint_or_an_eval_is_no_jump_in_the_eta():
    """5 s of checkpoint before step 51 and an eval before step 56, at 0.1 s a step."""
    s = RunSeries()
    s.apply(start(total=200))
    etas = {}
    for r in records([0.1] * 60, gaps={51: 5.0, 56: 2.0}):
        s.apply(r)
        etas[r.step] = s.eta_s()
    for k in range(21, 61):
        assert abs(etas[k] - (200 - k) * 0.1) < 0.01, (k, etas[k])
    assert math.isclose(s.rates()[1], TOKENS / 0.1)


def test_a_pause_and_a_resumed_session_are_not_step_time():
    s = RunSeries()
    s.apply(start(total=100))
    recs = list(records([0.1] * 40, gaps={21: 600.0}))
    for r in recs[:20]:
        s.apply(r)
    s.apply(start(total=100))  # a new session (a resume): its first gap is the time between sessions
    for r in recs[20:]:
        s.apply(r)
    assert abs(s.eta_s() - 6.0) < 0.01


def test_mfu_below_a_tenth_of_a_percent_shows_as_such():
    assert fmt_mfu(0.0004) == "<0.1%" and fmt_mfu(0.0) == "<0.1%" and fmt_mfu(1e-12) == "<0.1%"
    assert fmt_mfu(0.001) == "0.1%" and fmt_mfu(0.02) == "2.0%" and fmt_mfu(0.354) == "35%"
    for v in (math.nan, math.inf, -0.5, None, "x", True, 10**400):
        assert fmt_mfu(v) == "-"
    # The demo's model on a GPU: 1e5 tok/s x 1e6 FLOPs against 989 TFLOP/s is 0.01%.
    out = io.StringIO()
    sink = ConsoleSink(log_every=10, stream=out)
    sink.emit(start(fpt=1e6, peak=989e12))
    for r in records([TOKENS / 1e5] * 10):
        sink.emit(r)
    assert "MFU <0.1%" in out.getvalue().splitlines()[-1], out.getvalue()


def test_the_loops_own_time_between_steps_is_in_the_shown_rate():
    """Steps of 0.1 s with 0.03 s of loop between them (logging, steering,
    the sinks) and a checkpoint now and then: the rate the run gets is
    1024 tokens per 0.13 s, not per 0.1 s; the checkpoints stay out of it."""
    s = RunSeries()
    s.apply(start())
    for r in records([0.1] * 40, overhead=0.03, gaps={12: 3.0, 25: 3.0, 38: 3.0}):
        s.apply(r)
        if r.step in (10, 20, 40):
            sps, tps = s.rates()
            assert abs(tps / (TOKENS / 0.13) - 1) < 0.01, (r.step, tps)
            assert abs(sps * 0.13 - 1) < 0.01, (r.step, sps)


def test_a_run_that_evaluates_every_few_steps_shows_a_steady_rate():
    """An eval (and its sample) of 0.5 s after every second step of 0.1 s, as
    a short run's defaults give: the rate and the ETA are those of the steps
    from step 3 on, not a swing between 10k and 2k tok/s at each eval (the
    median of two gaps, one with an eval in it, was their mean)."""
    from tests.test_pause_points import STEP_S, TOKENS as TPS, Timeline, fed

    tl = Timeline(total=40)
    for _ in range(10):
        tl.steps(2).eval(0.4, sample=0.1).checkpoint(0.01)
        s = fed(tl)
        sps, tps = s.rates()
        if tl.step >= 4:
            assert abs(tps * STEP_S / TPS - 1) < 0.01, (tl.step, tps)
            assert abs(sps * STEP_S - 1) < 0.01, (tl.step, sps)
            assert abs(s.eta_s() - (40 - tl.step) * STEP_S) < 0.01, (tl.step, s.eta_s())
    out = io.StringIO()
    sink = ConsoleSink(log_every=1, stream=out)
    for r in tl.out:
        sink.emit(r)
    rates = {ln.split(" | ")[3] for ln in out.getvalue().splitlines() if ln.startswith("step ") and "ETA" in ln}
    assert rates == {"10.2k tok/s"}, rates


def test_mfu_under_torchrun_is_against_every_ranks_device(monkeypatch):
    """The token rate of a torchrun run is every rank's (tokens_per_step
    counts the processes), so its peak is every rank's device: against one
    device's, 2 CPU ranks read 42% where one process at the same pace per
    rank read 21%, and 8 GPUs at 40% each read 320%, shown as '-'."""
    from types import SimpleNamespace

    from tui_trainer.train import engine
    from tui_trainer.train.model import GPT, GPTConfig

    monkeypatch.setattr(engine, "peak_flops", lambda *args: 1e12)
    model = GPT(GPTConfig(vocab_size=256, context_length=16, n_layer=1, n_head=2, n_embd=16))

    def flops(world: int):
        trainer = SimpleNamespace(dist=SimpleNamespace(is_main=True, world_size=world), model=model,
                                  hw=SimpleNamespace(device="cpu", dtype="fp32", tf32=True))
        return engine.Trainer._flops(trainer)

    (fpt, one), (fpt8, eight) = flops(1), flops(8)
    assert fpt == fpt8 and one == 1e12 and eight == 8e12
    s = RunSeries()
    s.apply(start(fpt=fpt8, peak=eight))
    for r in records([TOKENS * fpt8 / (0.4 * 8e12)] * 10):  # the run's rate: 8 ranks, each at 40% of its device
        s.apply(r)
    assert abs(s.mfu() - 0.4) < 1e-6


def test_a_run_that_evaluates_every_step_still_has_an_eta():
    """--eval-every 1: every gap between steps holds an eval; the ETA is that
    of the steps, known from step 2 (the evals' own time taken out of each
    gap rather than each gap dropped)."""
    from tests.test_pause_points import STEP_S, Timeline, fed

    tl = Timeline(total=20)
    for _ in range(6):
        tl.steps(1).eval(0.3, sample=0.2)
    s = fed(tl)
    assert abs(s.eta_s() - 14 * STEP_S) < 0.01, s.eta_s()

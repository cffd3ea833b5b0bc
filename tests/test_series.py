"""RunSeries: bounded, downsampled series and the state the dashboard shows."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tui_trainer.records import (Ack, BadStep, Checkpoint, Eval, Paused, Resumed, RunEnd, RunStart, Sample,
                                 Status, TrainStep)
from tui_trainer.curves.curve import Buckets, Curve
from tui_trainer.curves.series import RunSeries
from tui_trainer.curves.smoothing import ema


def train(step: int, loss: float, lr: float = 1e-3, elapsed: float | None = None) -> TrainStep:
    return TrainStep(step=step, train_loss=loss, lr=lr, tokens_per_sec=1000.0, grad_norm=1.0,
                     elapsed_s=step * 0.01 if elapsed is None else elapsed, tokens=step * 64, time=0.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=300), st.integers(2, 6).map(lambda k: 2 * k),
       st.integers(1, 300))
def test_buckets_keep_exact_min_max_sum_and_count(ys, cap, split):
    """Whatever the merging, buckets partition the stream and keep its extremes and totals."""
    xs = np.arange(len(ys), dtype=float)
    y = np.array(ys)
    one, bulk = Buckets(cap), Buckets(cap)
    for a, b in zip(xs, y):
        one.append(a, b)
    bulk.extend(xs[:split], y[:split])
    bulk.extend(xs[split:], y[split:])
    for b in (one, bulk):
        _, lo, hi, s, c = b.view()
        assert b.n <= cap
        assert c.sum() == len(ys)
        assert lo.min() == y.min() and hi.max() == y.max()
        assert math.isclose(s.sum(), y.sum(), rel_tol=1e-9, abs_tol=1e-6)
        assert (c[:-1] == b.width).all()  # every bucket but the last is full
    for a, b in zip(one.view(), bulk.view()):
        np.testing.assert_allclose(a, b)


def test_memory_is_bounded_and_queries_are_small_for_a_long_run():
    r = RunSeries()
    n = 200_000
    steps = np.arange(1, n + 1)
    losses = 3 + np.sin(steps / 100.0)
    losses[123_456] = 50.0  # one spike in a long run must survive downsampling
    r.extend_train(steps, losses, np.full(n, 1e-3))
    assert r.loss.buckets.n <= r.loss.buckets.capacity
    x, y = r.train_points(80)
    assert 0 < len(x) <= 160
    assert y.max() == 50.0
    assert np.all(np.diff(x) >= 0)
    xs, ys = r.train_points(80, smooth=True)
    assert 0 < len(xs) <= 81 and ys.max() < 50.0


def test_recent_window_uses_raw_points_and_honours_start():
    c = Curve(buckets=16, recent=100)
    for i in range(1000):
        c.append(i, float(i % 7))
    x, y = c.points(200, start=950)
    np.testing.assert_array_equal(x, np.arange(950, 1000))  # raw points, one per step
    x, _ = c.points(10, start=0)  # older than the ring holds: the buckets answer
    assert x[0] < 100 and len(x) <= 20


def test_ema_matches_the_recurrence_and_continues_across_calls():
    rng = np.random.default_rng(0)
    y = rng.random(500)
    ref, e = [], 0.0
    for i, v in enumerate(y):
        e = 0.9 * e + 0.1 * v
        ref.append(e / (1 - 0.9 ** (i + 1)))
    a, state, count = ema(y[:123], beta=0.9)
    b, _, _ = ema(y[123:], beta=0.9, state=state, count=count)
    np.testing.assert_allclose(np.concatenate([a, b]), ref, rtol=1e-10)


def test_bulk_path_equals_the_record_path():
    one, bulk = RunSeries(), RunSeries()
    steps = np.arange(1, 3001)
    losses = 4 / np.sqrt(steps)
    lrs = np.linspace(1e-3, 1e-4, len(steps))
    for s, l, lr in zip(steps, losses, lrs):
        one.apply(train(int(s), float(l), float(lr)))
    bulk.extend_train(steps, losses, lrs)
    for smooth in (False, True):
        for a, b in zip(one.train_points(60, smooth=smooth), bulk.train_points(60, smooth=smooth)):
            np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(one.lr_points(60)[1], bulk.lr_points(60)[1])
    assert one.step == bulk.step == 3000


def test_state_follows_the_records():
    r = RunSeries("x")
    r.apply(RunStart(step=0, run_name="demo", config={}, n_params=1, device="cpu", total_steps=100, time=0.0))
    assert (r.name, r.state, r.total_steps) == ("demo", "running", 100)
    for s in range(1, 11):
        r.apply(train(s, 2.0, elapsed=s * 0.5))
    assert r.step == 10 and math.isclose(r.rates()[0], 2.0)
    assert math.isclose(r.eta_s(), 45.0)
    r.apply(Status(step=10, state="evaluating", time=0.0))
    assert r.state == "evaluating"
    r.apply(Eval(step=10, val_loss=2.5, train_loss=2.1, elapsed_s=5.0, time=0.0))
    r.apply(Sample(step=10, prompt="a", text="abc", time=0.0))
    r.apply(Status(step=10, state="running", time=0.0))
    assert r.evals[-1].val == 2.5 and r.sample() == (10, "abc", 1, 1)
    r.apply(BadStep(step=11, train_loss=math.nan, grad_norm=math.nan, consecutive=1, time=0.0))
    r.apply(Paused(step=10, reason="diverged", time=0.0))
    assert r.state == "diverged" and r.bad_steps == 1
    r.apply(Status(step=10, state="paused", time=0.0))  # an eval while diverged keeps the alarm up
    assert r.state == "diverged"
    r.apply(Ack(step=10, command="checkpoint", ok=False, message="refused", time=0.0))
    assert "refused" in r.message
    r.apply(Resumed(step=10, time=0.0))
    assert r.state == "running"
    r.apply(Paused(step=10, time=0.0))
    assert r.state == "paused"
    assert math.isnan(r.eta_s())  # no arrival time while paused
    r.apply(Checkpoint(step=10, path="p", reason="manual", time=0.0))
    assert r.last_checkpoint is not None and r.last_checkpoint.reason == "manual"
    r.apply(RunEnd(step=10, status="failed", elapsed_s=6.0, error="boom", time=0.0))
    assert r.ended and r.error == "boom" and math.isnan(r.eta_s())
    r.apply(Status(step=10, state="running", time=0.0))
    assert r.state == "failed"  # an ended run stays ended


def test_samples_are_bounded_and_browsable():
    r = RunSeries()
    for s in range(80):
        r.apply(Sample(step=s, prompt="", text=f"t{s}", time=0.0))
    assert len(r.samples) == 50 and r.samples_seen == 80
    assert r.sample(0)[:2] == (79, "t79")
    assert r.sample(3)[:2] == (76, "t76")
    assert r.sample(999)[:2] == (30, "t30")  # clamped to the oldest kept


def test_nonfinite_losses_are_not_plotted():
    r = RunSeries()
    r.apply(train(1, 2.0))
    r.apply(train(2, math.nan))
    r.extend_train(np.array([3, 4]), np.array([np.inf, 1.0]), np.array([1e-3, np.nan]))
    x, y = r.train_points(40)
    assert np.isfinite(y).all() and set(x) == {1.0, 4.0}


def test_columns_of_x_values_past_floats_range_stay_on_the_plot():
    """A hostile log's x values (time, tokens) can span more than a float
    holds: the columns stay in range, with no warning (it was an invalid cast)."""
    import warnings

    from tui_trainer.curves.curve import columns

    x = np.array([-1e308, -1e300, 0.0, 1e300, 1e308, 1.7e308])
    ones = np.ones(len(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cx, cy = columns(x, ones, ones, ones, ones, width=3, mean=True)
    assert 1 <= len(cx) <= 3 and np.all(np.isfinite(cy))
    big = np.full(len(x), 1.7e308)  # y values whose sums pass float's range (test_any_records_plot)
    steps = np.arange(len(x), dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cx, cy = columns(steps, big, big, big, ones, width=2, mean=True)
    assert len(cx) == 2 and np.all(cy == 1.7e308)

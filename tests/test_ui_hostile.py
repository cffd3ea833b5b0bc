"""Hostile input on screen: anything a log file or the socket can hold reaches
the screen as plain text, and any number reaches a plot as a bounded coordinate.

Strings with Textual markup (``[/]``, ``[link=…]``, ``[@click=app.quit]``),
control characters and lone surrogates go in every text field of every
record type; extreme floats (NaN, +-inf, +-1e308, 1e-300, subnormals) and
extreme ints (steps near 2**63) in every number field.  Nothing may raise,
die natively, stall, or run an action.
"""
from __future__ import annotations

import asyncio
import dataclasses
import math
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tui_trainer import records as R
from tui_trainer.fmt import fmt_count, fmt_duration, fmt_int, fmt_loss, fmt_lr, fmt_small, fmt_step, fmt_value
from tui_trainer.records import Ack, Checkpoint, Eval, RunEnd, RunStart, Sample, Status, TrainStep
from tui_trainer.curves.series import RunSeries
from tui_trainer.ui.sources import Answer, LocalSteering, QueueSource
from tui_trainer.ui.app import DashboardApp
from tui_trainer.ui.plot import CurvePlot, nice_ticks
from tui_trainer.ui.eval_log import EvalLog
from uitools import FixedSource, fixed_records, until

SIZE = (80, 24)
MARKUP = ["[/]", "[link=https://evil.example]x[/link]", "[@click=app.quit]click[/]", "[b]bold", "[/b]",
          "[red", "]", "[$accent]x", "\x1b[2J\x1b]0;pwned\x07", "\x00\r\t\x7f\x9b", "\ud800", "🦀" * 3, "\n\n"]
EXTREME = [math.nan, math.inf, -math.inf, 1e308, -1e308, 1.7976931348623157e308, 1e-300, -1e-300, 5e-324,
           0.0, -0.0, 2.0 ** 62, 1e15]
BIG_INTS = [0, -1, 2 ** 62, 2 ** 63 - 1, -(2 ** 63), 10 ** 15]

texts = st.one_of(st.text(max_size=30), st.sampled_from(MARKUP),
                  st.lists(st.one_of(st.sampled_from(MARKUP), st.text(max_size=4)), max_size=4).map("".join))
floats = st.one_of(st.sampled_from(EXTREME), st.floats(allow_nan=True, allow_infinity=True))
ints = st.one_of(st.sampled_from(BIG_INTS), st.integers(-(2 ** 63), 2 ** 63))
configs = st.dictionaries(texts, st.one_of(texts, floats, ints, st.booleans()), max_size=3)


def _strategy(hint: typing.Any) -> st.SearchStrategy:
    """A field's values: its own type, at its extremes (a Literal is any string)."""
    args = typing.get_args(hint)
    if type(None) in args:
        return st.one_of(st.none(), _strategy(next(a for a in args if a is not type(None))))
    if hint is bool:
        return st.booleans()
    if hint is int:
        return ints
    if hint is float:
        return floats
    if typing.get_origin(hint) is dict:
        return configs
    return texts


def record_strategy(cls: type) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = {f.name: _strategy(hints[f.name]) for f in dataclasses.fields(cls) if f.name != "time"}
    return st.builds(cls, **fields)


any_record = st.one_of(*[record_strategy(cls) for cls in R.RECORD_TYPES.values()])
# A run's usual shape (train steps, evals) around the other records, shuffled,
# so every widget has something to draw.
# Where a person steered the run (the plots' marks), at any step.
marks = st.one_of(record_strategy(R.Change), record_strategy(R.Paused), record_strategy(R.Resumed),
                  st.builds(Checkpoint, step=ints, path=texts, reason=st.just("manual")),
                  st.builds(Eval, step=ints, val_loss=floats, train_loss=floats, elapsed_s=floats,
                            forced=st.just(True)))
batches = st.tuples(st.lists(record_strategy(TrainStep), min_size=2, max_size=30),
                    st.lists(record_strategy(Eval), max_size=5),
                    st.lists(marks, max_size=5),
                    st.lists(any_record, max_size=15)).map(lambda t: t[0] + t[1] + t[2] + t[3]).flatmap(st.permutations)


def hostile_run(seed_records: list) -> RunSeries:
    run = RunSeries("run")
    for r in seed_records:
        run.apply(r)
    return run


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches, st.booleans(), st.booleans(), st.booleans())
def test_any_records_plot(batch, smooth, log_y, window):
    runs = [hostile_run(batch), hostile_run(batch[::-1])]
    for kind in ("loss", "lr"):
        plot = CurvePlot(kind)
        plot.runs = runs
        plot.smooth, plot.log_y, plot.window = smooth, log_y, 1000 if window else None
        plot.x_mode = "tokens" if smooth else "step"  # marks go through the x axis's unit too
        for w, h in ((80, 14), (26, 8), (200, 40)):
            plot._draw(w, h)  # must not raise, nor die in plotext


@settings(max_examples=50, deadline=None)
@given(st.one_of(floats, ints, texts, st.none()))
def test_formatting_never_raises(v):
    for f in (fmt_loss, fmt_count, fmt_duration, fmt_step, fmt_small, fmt_value, fmt_lr, fmt_int):
        out = f(v)
        assert isinstance(out, str) and len(out) < 40


@settings(max_examples=40, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True),
       st.integers(0, 50))
def test_nice_ticks_is_total(lo, hi, n):
    ticks = nice_ticks(lo, hi, n)
    assert len(ticks) <= 24 and all(math.isfinite(t) for t in ticks)


async def run_batch(batch: list, steering=None, check=None) -> DashboardApp:
    """Every widget shows ``batch`` at 80x24; the option keys redraw it;
    ``check(app)`` looks at the screen; q quits."""
    app = DashboardApp(FixedSource(batch), steering=steering)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.update_view(force_plots=True)
        for key in ("s", "l", "w", "left_square_bracket", "question_mark", "escape"):
            await pilot.press(key)
        await pilot.pause()
        app.update_view(force_plots=True)
        for widget in app.main.query("*"):
            widget.render()
        assert app.is_running  # no crafted string ran app.quit
        if check is not None:
            check(app)
        await pilot.press("q")
    return app


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches)
def test_any_batch_through_the_app(batch):
    asyncio.run(run_batch(batch))


class Answers:
    """Steering whose answers (an attach channel's) are hostile strings."""

    mode = "attach"

    def __init__(self, texts_: list[str]):
        self.pending = [Answer(t, t, ok=i % 2 == 0) for i, t in enumerate(texts_)]

    def can_send(self) -> bool:
        return True

    def send(self, command) -> None:
        pass

    def take_answers(self) -> list[Answer]:
        out, self.pending = self.pending, []
        return out


async def test_markup_in_every_string_shows_literally():
    """One crafted run: markup in the run name, a sample, a checkpoint path, a
    config value, a status, an ack message (the Alert and a toast), an answer
    from the channel (status line and toast) and the run_end error."""
    evil = "[@click=app.quit]quit[/] [link=https://evil.example]x[/link] [/]"
    batch = [RunStart(step=0, run_name=evil, config={evil: evil}, n_params=1, device=evil, total_steps=100),
             TrainStep(step=1, train_loss=2.0, lr=1e-3, tokens_per_sec=1.0, grad_norm=1.0, elapsed_s=1.0),
             Status(step=1, state=evil, detail=evil),
             Eval(step=1, val_loss=2.0, train_loss=2.0, elapsed_s=1.0, forced=True),
             Sample(step=1, prompt=evil, text=evil),
             Checkpoint(step=1, path=f"/runs/{evil}/ckpt.pt", reason="manual"),
             Ack(step=1, command=evil, ok=False, message=evil)]

    def check(app):
        assert app.runs[0].name == evil
        assert evil in str(app.main.query_one("#alert").render())
        assert evil in str(app.main.query_one("#sample").render())
        assert evil[:20] in str(app.main.query_one("#status").render())  # the answer, cut to fit
        assert any(evil in str(n.message) for n in app._notifications)

    await run_batch(batch + [RunEnd(step=1, status="failed", elapsed_s=1.0, error=evil)],
                    steering=Answers([evil, evil]), check=check)


async def test_markup_in_a_log_file_shows_in_the_viewer(tmp_path):
    from test_logs import write_run
    from tui_trainer.run.log_writer import JsonlSink
    from tui_trainer.ui.viewer import FileSource, viewer_app

    evil = "[/][@click=app.quit]x[/] \x1b[2J"
    log = write_run(tmp_path / evil.replace("/", "_") / "losses.jsonl", steps=20, eval_every=10, end=False)
    sink = JsonlSink(log)
    sink.emit(Sample(step=20, prompt=evil, text=evil))
    sink.emit(RunEnd(step=20, status="failed", elapsed_s=1.0, error=evil))
    sink.close()
    src = FileSource([log])
    src.prepare()
    app = viewer_app(src)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].state == "failed", "the log")
        await pilot.pause()
        alert = str(app.main.query_one("#alert").render())
        assert "[/][@click=app.quit]x[/]" in alert and "\x1b" not in alert
        assert "[/][@click=app.quit]x[/]" in str(app.main.query_one("#sample").render())
        await pilot.press("q")
    src.close()


async def test_extreme_numbers_in_a_live_batch():
    """The figures no run should produce, through the live path: nothing raises."""
    q = QueueSource()
    sink = q.sink(0)
    for i, v in enumerate(EXTREME * 3):
        sink.emit(TrainStep(step=2 ** 62 + i, train_loss=v, lr=EXTREME[-i % len(EXTREME)], tokens_per_sec=1e308,
                            grad_norm=v, elapsed_s=v, tokens=2 ** 63))
        sink.emit(Eval(step=2 ** 62 + i, val_loss=v, train_loss=-v, elapsed_s=1e308))
    app = DashboardApp(q)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs and app.runs[0].step >= 2 ** 62, "the records")
        for key in ("s", "l", "w", "l"):
            await pilot.press(key)
            app.update_view(force_plots=True)
            await pilot.pause()
        assert app.main.query_one(EvalLog).row_count == len(EXTREME) * 3
        await pilot.press("q")


def test_fixed_records_still_plot_round_ticks():
    """Bounded coordinates keep the plots readable: round step ticks on x."""
    run = hostile_run(fixed_records(n=600))
    plot = CurvePlot("loss")
    plot.runs = [run]
    text = plot._draw(60, 14).plain
    assert "200" in text and "400" in text and any(0x2800 < ord(c) < 0x2900 for c in text)


@pytest.mark.parametrize("v", [math.nan, math.inf, -1e308, 1e308, 1e-300, 2 ** 70, "x", None])
def test_fmt_is_total(v):
    assert fmt_loss(v) and fmt_count(v) and fmt_duration(v) and fmt_int(v) is not None


def test_local_steering_needs_no_textual():
    assert LocalSteering.mode == "live"


def test_a_flat_curve_labels_its_value_once():
    """A constant lr (a degenerate range) gets one tick label, not the same label on three rows."""
    run = hostile_run([TrainStep(step=s, train_loss=2.0, lr=3e-3, tokens_per_sec=1.0, grad_norm=1.0,
                                 elapsed_s=float(s)) for s in range(1, 50)])
    plot = CurvePlot("lr")
    plot.runs = [run]
    text = plot._draw(40, 8).plain
    assert text.count("3e-3") == 1, text

"""A log is untrusted input: whatever a line holds, the reader neither crashes nor stalls.

Hostile lines are bad lines (skipped and counted) or records whose every field
has its annotated type; the fast (msgspec chunk) and per-line paths agree on
them; a followed file's watcher thread survives anything and shows what
happened in the status text.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args, get_origin, get_type_hints

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_logs import _flat, write_run

from tui_trainer.run import log_writer as runlog
from tui_trainer.logs import effective_records, load_series, read_records
from tui_trainer.logs.follow import Feed
from tui_trainer.logs.formats.ours import build, field_checks
from tui_trainer.logs.load import apply_items
from tui_trainer.logs.parsing import LineParser, TrainBlock, decode
from tui_trainer.logs.source import LogSource
from tui_trainer.records import RECORD_TYPES, Eval, Record, RunEnd, TrainStep
from tui_trainer.run.log_writer import dumps
from tui_trainer.curves.series import RunSeries

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Sums of values near 1e308 overflow to inf in the series' buckets (curves.py): a warning, not a failure;
# making such numbers safe to draw is the plot layer's job.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def train_dict(**kw: Any) -> dict:
    d = TrainStep(step=1, train_loss=1.0, lr=0.1, tokens_per_sec=1.0, grad_norm=1.0, elapsed_s=1.0, tokens=8,
                  time=1.0).to_dict()
    d.update(kw)
    return d


def line(d: dict) -> bytes:
    return json.dumps(d, separators=(",", ":")).encode()


def read_all_ways(lines: list[bytes]) -> dict[str, tuple[list, Any]]:
    """The lines through every path of the parser: per line in bulk, a chunk at
    once in bulk, and per line as records (following)."""
    buf = b"".join(x + b"\n" for x in lines)
    out = {}
    for name, bulk, chunk in (("feed", True, False), ("chunk", True, True), ("records", False, False)):
        p = LineParser(bulk=bulk)
        items = p.feed_chunk(buf) if chunk else p.feed(lines)
        out[name] = (items, p.counts)
    return out


def exercise(series: RunSeries) -> None:
    """Every query the widgets make of a series."""
    for width in (1, 80):
        series.train_points(width)
        series.train_points(width, smooth=True)
        series.train_points(width, window=100)
        series.lr_points(width)
        series.lr_points(width, window=100)
        series.eval_points(width=width)
    series.eval_points(start=0.0)
    series.rates()
    series.eta_s()
    series.sample()
    _ = series.smoothed_loss, series.ended, series.diverged


# --- nonfinite: a list, or the line is bad --------------------------------------------------

NONFINITE_LINES = {
    "train": lambda v: train_dict(train_loss=None, nonfinite=v),
    "eval": lambda v: {"type": "eval", "step": 1, "time": 1.0, "val_loss": None, "train_loss": 1.0,
                       "elapsed_s": 1.0, "nonfinite": v},
    "checkpoint": lambda v: {"type": "checkpoint", "step": 1, "time": 1.0, "path": "p", "reason": "manual",
                             "val_loss": None, "nonfinite": v},
}


@pytest.mark.parametrize("value", [5, "x", "val_loss", {"a": 1}, None, True, 1.5])
@pytest.mark.parametrize("kind", sorted(NONFINITE_LINES))
def test_nonfinite_that_is_not_a_list_is_a_bad_line(value, kind):
    """It used to raise TypeError out of records.from_dict (5, null), or to
    read a string as the names of its fields ("val_loss")."""
    lines = [line(train_dict(step=0)), line(NONFINITE_LINES[kind](value)), line(train_dict(step=2))]
    for name, (items, counts) in read_all_ways(lines).items():
        assert counts.bad == 1 and counts.first_bad == [2], name
    good = read_all_ways([line(NONFINITE_LINES[kind](["val_loss", "train_loss"]))])
    for name, (items, counts) in good.items():
        assert counts.bad == 0, name


def test_a_followed_bad_nonfinite_line_does_not_stop_following(tmp_path):
    """It used to kill the watcher thread silently: the screen kept saying "following"."""
    log = write_run(tmp_path / "r" / "losses.jsonl", steps=3, end=False)
    src = LogSource([log], follow=True)
    src.prepare()
    src.start()
    try:
        with open(log, "ab") as f:
            f.write(line(NONFINITE_LINES["eval"](5)) + b"\n")
            f.write(line(train_dict(step=4, train_loss=None, nonfinite=None)) + b"\n")
            f.write(dumps(TrainStep(step=5, train_loss=0.5, lr=0.1, tokens_per_sec=1.0, grad_norm=1.0,
                                    elapsed_s=5.0)).encode() + b"\n")
        got = []
        end = time.monotonic() + 5
        while time.monotonic() < end and not any(r.step == 5 for _, r in got):
            got += src.poll()
            time.sleep(0.02)
        assert [r.step for _, r in got] == [5]
        assert src.feeds[0].counts.bad == 2 and src.watcher.is_alive()
        assert src.status_text() == "following · r: 2 bad lines skipped (line 5, 6)"
    finally:
        src.close()


def test_an_unexpected_error_in_one_feed_is_shown_and_the_others_go_on(tmp_path, monkeypatch):
    a = write_run(tmp_path / "a" / "losses.jsonl", steps=3, end=False)
    b = write_run(tmp_path / "b" / "losses.jsonl", steps=3, end=False)
    real = Feed.read_new

    def read_new(self):
        if self.name == "a":
            raise RuntimeError("boom\nat line 2")
        return real(self)

    monkeypatch.setattr(Feed, "read_new", read_new)
    src = LogSource([a, b], follow=True)
    src.prepare()
    src.start()
    try:
        with open(b, "ab") as f:
            f.write(dumps(TrainStep(step=4, train_loss=0.5, lr=0.1, tokens_per_sec=1.0, grad_norm=1.0,
                                    elapsed_s=4.0)).encode() + b"\n")
        end = time.monotonic() + 5
        got = []
        while time.monotonic() < end and not got:
            got = [(i, r.step) for i, r in src.poll()]
            time.sleep(0.02)
        assert got == [(1, 4)]
        assert src.watcher.is_alive()
        assert src.status_text() == "following 2 files · a: stopped reading: RuntimeError: boom at line 2"
    finally:
        src.close()


def test_an_unexpected_error_while_preparing_is_that_files_error(tmp_path, monkeypatch):
    log = write_run(tmp_path / "a" / "losses.jsonl", steps=3)
    monkeypatch.setattr(RunSeries, "apply", lambda self, r: 1 / 0)
    src = LogSource([log])
    src.prepare()
    assert src.status_text() == "a: stopped reading: ZeroDivisionError: division by zero"


# --- nesting, huge numbers, extreme floats -------------------------------------------------------

DEEP = [b'{"a":' * 3000 + b"1" + b"}" * 3000, b"[" * 3000 + b"]" * 3000,
        b'{"type":"train","step":1,"train_loss":1,"lr":1,"x":' + b"[" * 3000 + b"]" * 3000 + b"}",
        b'{"type":"eval","step":1,"x":' + b'{"a":' * 3000 + b"1" + b"}" * 3001]


def test_deeply_nested_lines_are_bad_lines(tmp_path):
    """msgspec's chunk decoder raised RecursionError (only DecodeError was caught)."""
    lines = [line(train_dict(step=0))] + DEEP + [line(train_dict(step=2))]
    for name, (items, counts) in read_all_ways(lines).items():
        assert counts.bad == len(DEEP) and counts.lines == len(lines), name
    log = tmp_path / "deep.jsonl"
    log.write_bytes(b"".join(x + b"\n" for x in lines))
    series, counts = load_series(log)
    assert counts.bad == len(DEEP) and list(series.loss.recent.view()[0]) == [0, 2]
    assert len(read_records(log)) == 2


@pytest.mark.parametrize("field", ["step", "tokens", "grad_norm", "train_loss", "nonfinite"])
def test_integers_too_big_for_a_double_are_bad_lines(field):
    """10**400 is valid JSON: msgspec read it, orjson does not; the chunk path
    raised OverflowError (a step) or JSONDecodeError (re-reading the last line)."""
    value = [10 ** 400] if field == "nonfinite" else 10 ** 400
    lines = [line(train_dict(step=0)), line(train_dict(**{"step": 1, field: value}))]
    for name, (items, counts) in read_all_ways(lines).items():
        assert counts.bad == 1, name


@pytest.mark.parametrize("step", [2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, 2 ** 64, 10 ** 30, -1, -(2 ** 63) - 1])
def test_big_and_negative_steps_read_the_same_on_every_path(step):
    lines = [line(train_dict(step=s)) for s in (step, step)] + [line({"step": step, "loss": 1.0})]
    got = read_all_ways(lines)
    assert _flat(got["feed"][0]) == _flat(got["chunk"][0])
    assert [dataclasses.asdict(c) for _, c in got.values()] == [dataclasses.asdict(got["feed"][1])] * 3
    for items, _ in got.values():
        series = RunSeries()
        apply_items(series, items)
        exercise(series)


def test_extreme_finite_floats_pass_through_unchanged():
    big, tiny = 1e308, 1e-300
    lines = [line(train_dict(step=1, train_loss=big, lr=tiny, grad_norm=-big, tokens_per_sec=5e-324)),
             line(train_dict(step=2, train_loss=-big, lr=big)),
             line({"type": "eval", "step": 2, "time": 1.0, "val_loss": -big, "train_loss": tiny, "elapsed_s": big})]
    for name, (items, counts) in read_all_ways(lines).items():
        assert counts.bad == 0, name
        points = [p for p in _flat(items) if p[0] == "p"]
        records = [i for i in items if not isinstance(i, TrainBlock)]
        if name == "records":
            assert [(r.train_loss, r.lr, r.grad_norm) for r in records[:2]] == [(big, tiny, -big), (-big, big, 1.0)]
            assert records[0].tokens_per_sec == 5e-324
        else:
            assert points == [("p", 1.0, repr(big), repr(tiny)), ("p", 2.0, repr(-big), repr(big))]
        ev = records[-1]
        assert isinstance(ev, Eval) and (ev.val_loss, ev.train_loss, ev.elapsed_s) == (-big, tiny, big)
        series = RunSeries()
        apply_items(series, items)
        exercise(series)


# --- the field checks follow the annotations -------------------------------------------------------

@dataclass
class _Fake(Record):
    type: ClassVar[str] = "fake"
    mode: Literal["a", "b"]
    level: Literal[1, 2] | None = None
    loss: float = 0.0
    note: str | None = None
    meta: dict[str, Any] | None = None
    anything: Any = None


def test_field_checks_follow_the_annotations_and_literals():
    ok = {"step": 1, "time": 0.0, "mode": "a"}
    assert build(_Fake, ok) == _Fake(step=1, time=0.0, mode="a")
    assert build(_Fake, dict(ok, level=2, loss=3, note="n", meta={"k": [1]}, anything=[{}])).level == 2
    assert math.isnan(build(_Fake, dict(ok, loss=None)).loss)  # a plain float: null reads as NaN
    for bad in ({"mode": "c"}, {"mode": ["a"]}, {"mode": None}, {"level": True}, {"level": 3},
                {"level": "1"}, {"loss": "1"}, {"loss": True}, {"note": 5}, {"meta": []}, {"step": True},
                {"step": 1.0}, {"nonfinite": "loss"}):
        assert build(_Fake, dict(ok, **bad)) is None, bad
    assert build(_Fake, {"step": 1}) is None  # a required field is missing
    checks = {c.name: c for c in field_checks(_Fake)}
    assert checks["anything"].types is None and checks["loss"].null_is_nan and not checks["level"].null_is_nan


def test_a_status_outside_its_literals_is_a_bad_line():
    hints = get_type_hints(RunEnd)
    if get_origin(hints["status"]) is not Literal:
        pytest.skip("records.RunEnd.status is not a Literal")
    lines = [line(RunEnd(step=1, status="finished", elapsed_s=1.0).to_dict()),
             line(dict(RunEnd(step=1, status="finished", elapsed_s=1.0).to_dict(), status="exploded"))]
    for name, (items, counts) in read_all_ways(lines).items():
        assert counts.bad == 1 and [type(i) for i in items] == [RunEnd], name


def test_runlog_effective_records_is_the_readers_rule():
    recs = [{"type": "train", "step": 5}, {"type": "run_start", "step": 7, "resumed": True},
            {"type": "train", "step": 6}, {"type": "run_start", "step": 3, "resumed": True}]
    assert runlog.effective_records(recs) == effective_records(recs) == [recs[3]]


# --- property-based: anything at all in any field ---------------------------------------------

MARKUP = ["[/]", "[link=x]", "[@click=app.quit]", "[b]x[/b]", "\x1b[31mred", "\r\n\t\x00\x7f", "\u202e",
          "finished", "train", "user", "diverged", "paused", ""]
EXTREMES = [1e308, -1e308, 1e-300, 5e-324, -0.0, 10 ** 30, -(10 ** 30), 2 ** 63, 2 ** 64, -(2 ** 63) - 1,
            10 ** 400, -1, 0]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(EXTREMES),
                    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(MARKUP), st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)


def _fitting(hint: Any) -> st.SearchStrategy:
    """Values of the annotated type, so that records do get through to the series."""
    origin = get_origin(hint)
    if origin is Literal:
        return st.sampled_from(get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return st.one_of([_fitting(a) for a in get_args(hint)])
    if hint is float:
        return st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(EXTREMES[:5]), st.none())
    if hint is int:
        return st.one_of(st.integers(-5, 10 ** 6), st.sampled_from([-(2 ** 63), 2 ** 63 - 1, 2 ** 64 - 1]))
    if hint is str:
        return st.one_of(st.sampled_from(MARKUP), st.text(max_size=8))
    if hint is bool:
        return st.booleans()
    if hint is type(None):
        return st.none()
    return json_values


@st.composite
def hostile_record(draw) -> dict:
    cls = draw(st.sampled_from(sorted(RECORD_TYPES.values(), key=lambda c: c.type)))
    hints = get_type_hints(cls)
    d: dict[str, Any] = {"type": draw(st.one_of(st.just(cls.type), json_values)) if draw(st.integers(0, 9)) == 0
                         else cls.type}
    names = [f.name for f in dataclasses.fields(cls)]
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    # Mostly right, one field wrong, or anything anywhere: enough records get through to the series.
    chaos = draw(st.sampled_from(["clean", "one", "any"]))
    wrong = draw(st.sampled_from(names)) if chaos == "one" else None
    for name in names:
        kind = draw(st.integers(0, 5))
        if name == "time":  # a missing time reads as "now": keep the paths comparable
            d["time"] = draw(st.one_of(st.just(1.0), json_values)) if name == wrong or chaos == "any" else 1.0
        elif name == wrong or chaos == "any" and kind == 1:
            d[name] = draw(json_values)
        elif kind == 0 and (chaos == "any" or name not in required):
            continue  # missing
        else:
            d[name] = draw(_fitting(hints[name]))
    if draw(st.integers(0, 2)) == 0:
        d["nonfinite"] = draw(st.one_of(json_values, st.lists(st.sampled_from(names), max_size=3)))
    if draw(st.integers(0, 5)) == 0:
        d[draw(st.text(max_size=6))] = draw(json_values)  # an unknown field (or one of ours again)
    return d


def _check_reading(lines: list[bytes]) -> None:
    got = read_all_ways(lines)
    (feed, fc), (chunk, cc) = got["feed"], got["chunk"]
    assert _flat(feed) == _flat(chunk)
    assert [repr(i.last) for i in feed if isinstance(i, TrainBlock)] == \
           [repr(i.last) for i in chunk if isinstance(i, TrainBlock)]
    assert dataclasses.asdict(fc) == dataclasses.asdict(cc) == dataclasses.asdict(got["records"][1])
    for items, counts in got.values():
        assert counts.bad + counts.ignored + counts.plottable <= counts.lines
        for it in items:
            if isinstance(it, Record):  # every field as annotated
                assert build(type(it), dataclasses.asdict(it)) is not None, it
        series = RunSeries()
        apply_items(series, items)
        exercise(series)
    objects = [d for raw in lines if type(d := decode(raw)) is dict]
    effective_records(objects)


@SETTINGS
@given(st.lists(hostile_record(), min_size=1, max_size=6), st.integers(0, 6))
def test_any_json_in_any_field_of_any_record(records, at):
    lines = [line(train_dict(step=s)) for s in range(3)]
    lines[at:at] = [json.dumps(d).encode() for d in records]
    _check_reading(lines)


@SETTINGS
@given(st.lists(st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode),
                          json_values.map(lambda v: json.dumps(v).encode())), max_size=8)
       .map(lambda ls: [x.replace(b"\n", b" ") for x in ls]))
def test_any_bytes_on_any_line(lines):
    _check_reading(lines + [line(train_dict(step=9))])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(hostile_record(), min_size=1, max_size=4), st.binary(max_size=30))
def test_any_log_file_loads(tmp_path, records, torn):
    log = tmp_path / "h.jsonl"
    log.write_bytes(b"".join(json.dumps(d).encode() + b"\n" for d in records) + line(train_dict(step=7))
                    + b"\n" + torn.replace(b"\n", b" ").replace(b"\0", b" "))
    series, _ = load_series(log)
    exercise(series)
    effective_records(read_records(log))


def test_a_big_or_negative_step_does_not_break_a_series():
    series = RunSeries()
    for step in (10 ** 30, -5, 0, 2 ** 64 - 1, -(2 ** 63)):
        series.apply(TrainStep(step=step, train_loss=1.0, lr=0.1, tokens_per_sec=1.0, grad_norm=1.0,
                               elapsed_s=float(abs(step) % 7), tokens=3))
        series.apply(Eval(step=step, val_loss=1.0, train_loss=1.0, elapsed_s=1.0))
        exercise(series)
    series.extend_train(np.array([-1e30, 1e30]), np.array([1.0, 2.0]), np.array([0.1, 0.2]))
    exercise(series)

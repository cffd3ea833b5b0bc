"""Numbers keep their value in every narrow place (issue 23, item 3).

Each formatter that puts a number in a table column, the status line, a toast
or the headless console is held to one rule (``fmt``'s docstring): what it
shows, read back, is within 5% of the value, or it says it has no room
(``fmt.NO_ROOM``).  Magnitudes 1e-12..1e15, negatives, ints; widths 3..12.
"""
from __future__ import annotations

import math
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from tui_trainer import fmt
from tui_trainer.ui.settings_diff import fmt_setting

UNIT = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def parse(s: str) -> float:
    """A shown number read back as a person would: ``1,234``, ``12.3k``, ``5e-3``, ``1.2e+30``."""
    s = s.strip().replace(",", "").removesuffix("%")
    if s and s[-1] in UNIT:
        return float(s[:-1]) * UNIT[s[-1]]
    return float(s)


def parse_duration(s: str) -> float:
    if s.endswith("d"):
        return float(s[:-1]) * 86400
    parts = [int(p) for p in s.split(":")]
    return sum(p * 60 ** k for k, p in enumerate(reversed(parts)))


def close(shown: float, x: float, slack: float = 0.0) -> bool:
    return abs(shown - x) <= max(fmt.MAX_REL_ERROR * abs(x), slack)


magnitudes = st.builds(lambda sign, e, m: sign * m * 10.0 ** e,
                       st.sampled_from([1.0, -1.0]), st.integers(-12, 14), st.floats(1.0, 9.999))
numbers = st.one_of(magnitudes, st.integers(-10**15, 10**15), st.just(0), st.just(0.0))

FORMATTERS = {  # a table column, the status line, a toast, the console, the inspector, a plot's ticks
    "loss": fmt.fmt_loss, "count": fmt.fmt_count, "value": fmt.fmt_value, "small": fmt.fmt_small,
    "step": fmt.fmt_step, "lr": fmt.fmt_lr, "int": fmt.fmt_int, "setting": fmt_setting,
    "percent": lambda v: fmt.fmt_percent(fmt.as_float(v) / 100),
    **{f"fit{w}": (lambda v, w=w: fmt.fit(v, w)) for w in range(3, 13)},
}


@settings(max_examples=60, deadline=None)
@given(numbers)
def test_every_formatter_keeps_the_value(x):
    for name, f in FORMATTERS.items():
        shown = f(x)
        if name.startswith("fit"):
            assert len(shown) <= int(name[3:]), (name, x, shown)
            if shown == fmt.NO_ROOM:
                continue
        assert close(parse(shown), x), (name, x, shown)


@settings(max_examples=60, deadline=None)
@given(st.floats(0, 1e9))
def test_durations_keep_their_value_to_the_second(x):
    assert close(parse_duration(fmt.fmt_duration(x)), x, slack=0.5), (x, fmt.fmt_duration(x))


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 12), numbers)
def test_fit_is_plain_when_it_fits_and_says_no_room_only_when_nothing_fits(width, x):
    shown = fmt.fit(x, width)
    if isinstance(x, int) and len(str(x)) <= width:
        assert shown == str(x)
    if shown == fmt.NO_ROOM:  # not even the shortest scientific form within 5% fits
        short = re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{x:.0e}").replace("e+", "e")
        assert len(short) > width or not close(float(short), x)


def test_fit_examples_from_the_issue():
    assert [fmt.fit(0.01, 4), fmt.fit(0.005, 4), fmt.fit(0.005, 5)] == ["0.01", "5e-3", "0.005"]
    assert fmt.fit(1.5e-12, 3) == fmt.NO_ROOM and fmt.fit(math.nan, 3) == "nan" and fmt.fit(None, 3) == fmt.ABSENT
    assert fmt.fmt_percent(0.0004) == "0.04%" and fmt.fmt_percent(0.02) == "2.0%"  # MFU on a CPU was 0.0%
    assert fmt.fmt_count(0.4) == "0.4" and fmt.fmt_loss(0.00012) == "0.00012" and fmt.fmt_loss(None) == fmt.ABSENT


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 10**9), st.integers(1, 10**9))
def test_console_says_a_whole_number_whole(old, new):
    """``change 29 | steps 1300 -> 2605 (time)`` (README), and a fork's changes
    likewise: a step count in the headless console is the number, not ``1.3e+03``."""
    import io

    from tui_trainer.records import Change, RunStart
    from tui_trainer.run.console import ConsoleSink

    out = io.StringIO()
    sink = ConsoleSink(stream=out)
    sink.emit(Change(step=29, key="steps", old=old, new=new, source="time"))
    sink.emit(RunStart(step=7, run_name="f", config={}, n_params=1, device="cpu", total_steps=new,
                       parent={"name": "p", "step": 7, "folder": "/x", "changes": {"steps": [old, new]}}))
    lines = out.getvalue().splitlines()
    assert f"change   29 | steps {old} -> {new} (time)" in lines
    assert lines[-1].endswith(f"| steps {old} -> {new}")

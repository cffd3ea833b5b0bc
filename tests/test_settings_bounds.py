"""One validation for every way a setting arrives (issue 20, items 6, 7 and 17).

A value comes as a flag, a TOML key, a live change (``attach --set``, the
socket and the ``:`` box all go through ``Settings.parse``) or a checkpoint
read back.  Each route refuses an out-of-range value with the bound of
``bounds.BOUNDS`` in its message, and a live change keeps the rules between
settings (warmup_steps <= steps), so an accepted change never leaves a
checkpoint that a resume refuses.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tui_trainer import cli
from tui_trainer.bounds import BOUNDS, MAX_STEPS, Bound, number
from tui_trainer.run.checkpoint_schema import SchemaError, check_config_values, check_live_values
from tui_trainer.config import FIELDS, TrainConfig, UserError, field_types, load_toml, make_config, validate
from tui_trainer.control.live import define_live_settings
from tui_trainer.run.resume import how_to_go_on
from tui_trainer.train.schedule import LRSchedule
from tui_trainer.control.settings import Settings

CONFIG_NUMBERS = sorted(n for n, t in field_types().items() if t.base in (int, float))
LIVE_ONLY = ("lr_scale", "pause_at")
LIVE_CONFIG = ("max_lr", "min_lr", "steps", "eval_every", "checkpoint_every", "grad_clip", "weight_decay")


def test_every_numeric_setting_has_a_finite_bound():
    assert set(CONFIG_NUMBERS) | set(LIVE_ONLY) == set(BOUNDS)
    for name, b in BOUNDS.items():
        assert math.isfinite(b.lo) and math.isfinite(b.hi) and b.lo < b.hi, name


def live_settings(**cfg_values):
    """The built-in loop's live settings over a config, on a stand-in trainer
    (the checks read only the config), plus the run's own pause_at."""
    cfg = make_config(cfg_values)
    from tui_trainer.run.run import Run

    t = SimpleNamespace(cfg=cfg, lr_scale=1.0, step=0, schedule=LRSchedule(), emit=lambda r: None,
                        ckpts=SimpleNamespace(every=cfg.ckpt_every, set_every=lambda v: None),
                        optimizer=SimpleNamespace(param_groups=[{"weight_decay": cfg.weight_decay}, {}]))
    run = Run.unlocked()  # defines the run's own pause_at
    run.plan_steps(cfg.steps)
    t.set_lr_scale = lambda v: setattr(t, "lr_scale", v)  # as engine.Trainer's
    define_live_settings(t, run)
    t.held_run = run  # the test's view of the run the settings belong to
    return t, run.settings


# --- the routes ------------------------------------------------------------------

def by_flag(name, v) -> str:
    flag = "--" + name.replace("_", "-")
    args = cli.build_parser().parse_args(["train", f"{flag}={v!r}" if isinstance(v, float) else f"{flag}={v}"])
    with pytest.raises(UserError) as e:
        cli.config_from_args(args)
    return str(e.value)


def by_toml(name, v, tmp_path) -> str:
    p = tmp_path / "c.toml"
    text = repr(v) if not (isinstance(v, float) and not math.isfinite(v)) else str(v)
    p.write_text(f"{name} = {text}\n")
    with pytest.raises(UserError) as e:
        make_config(load_toml(p))
    return str(e.value)


def by_live(name, v) -> str:
    _, s = live_settings()
    got, why = s.parse(name, v)
    assert why is not None, (name, v, got)
    _, why_text = s.parse(name, repr(v))  # as typed after KEY= (attach --set, the : box)
    assert why_text is not None, (name, v)
    return why


def by_checkpoint(name, v) -> str:
    with pytest.raises(SchemaError) as e:
        if name in FIELDS:
            check_config_values({**TrainConfig().to_dict(), name: v})
        else:
            check_live_values({name: v})
    return str(e.value)


def outside(b: Bound, is_int: bool):
    """Values just and far outside ``b``."""
    if is_int:
        return st.one_of(st.integers(min_value=int(b.hi) + 1, max_value=int(b.hi) * 10**6 + 10),
                         st.integers(min_value=int(b.lo) - 10**6, max_value=int(b.lo) - 1))
    above = st.floats(min_value=b.hi, max_value=1e300, exclude_min=not b.hi_open)
    below = st.floats(min_value=-1e300, max_value=b.lo, exclude_max=not b.lo_open)
    return st.one_of(above, below)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_out_of_range_is_refused_with_the_same_bound_on_every_route(data, tmp_path):
    name = data.draw(st.sampled_from(sorted(BOUNDS)))
    b = BOUNDS[name]
    is_int = name in ("pause_at",) or (name in FIELDS and field_types()[name].base is int)
    v = data.draw(outside(b, is_int))
    assert not b.holds(v)
    messages = [by_checkpoint(name, v)]
    if name in FIELDS:
        messages += [by_flag(name, v), by_toml(name, v, tmp_path)]
    if name in LIVE_ONLY + LIVE_CONFIG:
        messages.append(by_live(name, v))
    for m in messages:
        assert b.range() in m, (name, v, m)  # the bound enforced is the bound named
        assert "\n" not in m


@pytest.mark.parametrize("name", [n for n in sorted(BOUNDS) if n == "lr_scale" or
                                  (n in FIELDS and field_types()[n].base is float)])
@pytest.mark.parametrize("v", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_are_refused_on_every_route(name, v, tmp_path):
    messages = [by_checkpoint(name, v)]
    if name in FIELDS:
        messages += [by_flag(name, v), by_toml(name, v, tmp_path)]
    if name in LIVE_ONLY + LIVE_CONFIG:
        messages.append(by_live(name, v))
    for m in messages:
        assert ("finite" in m or "number" in m) and "\n" not in m, m


def test_bound_words_read_back_as_the_bound():
    for b in BOUNDS.values():
        for x in (b.lo, b.hi):
            text = number(x)
            back = int(text) if isinstance(x, int) and "e" not in text else float(text)
            assert back == x, (b, text)
            assert text in b.range() or (x == 0 and "positive" in b.range()), b  # positive: (0, ...


# --- item 7: the values that made a steered run diverge ---------------------------

@pytest.mark.parametrize("key, value, bound", [
    ("weight_decay", 1e300, "at most 10"), ("grad_clip", 1e308, "at most 1e6"),
    ("lr_scale", 1e9, "at most 1000"), ("max_lr", 1e300, "at most 1e6"),
    ("steps", 10**15, "at most 1e12"), ("eval_every", 10**30, "at most 1e12"),
    ("checkpoint_every", "1e40", "at most 1e12"), ("pause_at", 2**70, "at most 1e12"),
])
def test_live_values_that_can_only_diverge_or_overflow_are_refused(key, value, bound):
    _, s = live_settings()
    got, why = s.parse(key, value)
    assert got is None and bound in why and why.startswith(key), why


# --- item 6: a live change keeps the rules between settings ----------------------

def test_live_steps_below_the_warmup_is_refused_with_the_rule():
    t, s = live_settings(steps=200, warmup_steps=100)
    got, why = s.parse("steps", 50)
    assert got is None and "warmup_steps (100)" in why, why
    assert s.parse("steps", 100) == (100, None)
    s.apply("steps", 150)
    assert t.cfg.steps == 150 and t.held_run.total_steps == 150
    validate(t.cfg)
    # min_lr and max_lr hold each other
    assert "max_lr" in s.parse("min_lr", 0.5)[1] and "min_lr" in live_settings(min_lr=1e-3)[1].parse("max_lr", 1e-4)[1]


@settings(max_examples=40, deadline=None)
@given(changes=st.lists(st.tuples(st.sampled_from(LIVE_CONFIG + LIVE_ONLY),
                                  st.one_of(st.integers(-5, 10**13), st.floats(-1.0, 2e6))), max_size=12))
def test_no_accepted_change_leaves_settings_a_resume_refuses(changes):
    t, s = live_settings(steps=300, warmup_steps=40, min_lr=1e-4)
    for key, value in changes:
        v, why = s.parse(key, value)
        if why is None:
            s.apply(key, v)
        make_config(t.cfg.to_dict())  # what a resume builds from the checkpoint's config


# --- item 17: the train-longer hint stays inside the bounds ----------------------

def test_train_longer_hint_never_asks_for_more_than_the_maximum(tmp_path):
    (tmp_path / "latest.pt").write_bytes(b"")  # only its existence is read
    end = SimpleNamespace(status="finished", step=MAX_STEPS - 3)
    [line] = how_to_go_on(end, tmp_path)
    assert line.endswith(f"--steps {MAX_STEPS}")
    assert how_to_go_on(SimpleNamespace(status="finished", step=MAX_STEPS), tmp_path) == []


# --- a sibling: a sample request's temperature and top_k ---------------------------

@pytest.mark.parametrize("key, value, words", [
    ("temperature", 1e-7, "at least 1e-6 and at most 100"),  # said "(0, 100]" while refusing 1e-7
    ("temperature", 101, "at most 100"), ("top_k", 2**33, "at most 4294967296"), ("tokens", 0, "at least 1")])
def test_a_sample_request_names_the_bound_it_enforces(key, value, words):
    from tui_trainer.control.channel import sample_args

    args, why = sample_args({"prompt": "a", key: value})
    assert args == {} and words in why, why
    assert sample_args({"prompt": "a", "temperature": 1e-6, "top_k": 2**32})[1] is None

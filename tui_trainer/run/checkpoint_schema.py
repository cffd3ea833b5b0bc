"""What a built-in trainer's checkpoint must hold, checked field by field
before any of it is used.

``checkpoint.load_checkpoint`` reads any file safely (tensors and plain
containers only) and checks the format tag.  A file can still carry the right
tag and nonsense in a field: a crafted ``latest.pt`` with ``step="abc"``, a
config that is a list, an ``lr_scale`` of NaN.  ``check_trainer_state``
refuses such a file with one line naming the field, what it holds and what was
expected, before the run folder is touched or a step is trained:

    checkpoint run/latest.pt: field 'step' is 'abc', expected an integer >= 0 and below 1e12; ...

The ranges are the ones input is held to (``bounds.BOUNDS``): the config's
values and the live settings restored from a checkpoint are validated exactly
as flags and ``attach --set`` are.  torch is imported only to check tensors.
"""
from __future__ import annotations

import math
from typing import Any

from ..bounds import BOUNDS, MAX_STEPS, Bound
from ..config import FIELDS, RESUMABLE_CHANGES, UserError, field_types
from ..control.live import LIVE_KEYS as _TRAINER_KEYS

# Settings added to the config after checkpoints were first schema-checked: a
# file from before them lacks them and takes their default (which must be the
# behaviour of the version that wrote it).
ADDED_LATER: frozenset[str] = frozenset({"grad_accum", "preset", "sync_checkpoints", "schedule",
                                          "tokenizer", "init_from", "time_budget", "text_field"})
# Keys a reader of an older file may find missing (engine.load_state_dict reads them with .get).
OPTIONAL_KEYS = ("world_size", "live", "scaler", "data_fingerprint", "vocab_size", "schedule")
STEP = Bound(0, MAX_STEPS, hi_open=True)  # below the most --steps can be, so a resume can go on
TOKENS = Bound(0, 2**63 - 1)
ELAPSED = Bound(0, 1e10)  # seconds: 300 years
WORLD = Bound(1, 2**20)
LAST_VAL_STEP = Bound(-1, MAX_STEPS, hi_open=True)
LIVE_KEYS = (*_TRAINER_KEYS, "pause_at")  # the trainer's and the run's own


class SchemaError(UserError):
    """A field of a checkpoint that is not what the trainer writes."""

    def __init__(self, field: str, value: Any, expected: str):
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(f"field {field!r} {'is missing' if value is _MISSING else 'is ' + shown(value)}"
                         f"{'' if value is _MISSING else ', expected ' + expected}")


_MISSING = object()


def shown(value: Any) -> str:
    """A field's value as a message shows it: its type for containers and tensors, short repr otherwise."""
    if isinstance(value, (str, int, float, type(None), bool)):
        text = repr(value)
        return text if len(text) <= 40 else text[:40] + "…"
    kind = type(value).__name__
    return f"a {kind}" if not hasattr(value, "__len__") else f"a {kind} of {len(value)}"


def _get(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise SchemaError(where + key, _MISSING, "")
    return d[key]


def _int(v: Any, field: str, bound: Bound) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not bound.holds(v):
        raise SchemaError(field, v, f"an integer that is {bound.range()}")
    return v


def _float(v: Any, field: str, bound: Bound | None = None, *, inf_ok: bool = False) -> float:
    ok = isinstance(v, float) and not math.isnan(v) and (inf_ok and v == math.inf or math.isfinite(v))
    if ok and bound is not None and math.isfinite(v):
        ok = bound.holds(v)
    if not ok:
        what = f"a number that is {bound.range()}" if bound is not None else "a finite number"
        raise SchemaError(field, v, what + (" (or inf)" if inf_ok else ""))
    return v


def _dict(v: Any, field: str) -> dict[str, Any]:
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise SchemaError(field, v, "a dict with text keys")
    return v


def _tensor(v: Any, field: str, *, byte: bool = False) -> Any:
    import torch

    if not isinstance(v, torch.Tensor) or (byte and (v.dtype != torch.uint8 or v.dim() != 1)):
        raise SchemaError(field, v, "a byte tensor (an RNG state)" if byte else "a tensor")
    return v


def check_trainer_state(state: dict[str, Any]) -> None:
    """Every field the built-in trainer reads back, checked for type and
    range; a ``SchemaError`` names the first one that is not as written."""
    _int(_get(state, "step", ""), "step", STEP)
    step = state["step"]
    _int(_get(state, "tokens", ""), "tokens", TOKENS)
    _float(_get(state, "elapsed_s", ""), "elapsed_s", ELAPSED)
    if "world_size" in state:
        _int(state["world_size"], "world_size", WORLD)
    best = _float(_get(state, "best_val", ""), "best_val", inf_ok=True)
    if best < 0:
        raise SchemaError("best_val", best, "a loss >= 0 (or inf)")
    last = _get(state, "last_val", "")
    if last is not None and (_float(last, "last_val") < 0):
        raise SchemaError("last_val", last, "a loss >= 0, or None")
    _int(_get(state, "last_val_step", ""), "last_val_step", LAST_VAL_STEP)
    if state["last_val_step"] > step:
        raise SchemaError("last_val_step", state["last_val_step"], f"a step at most the checkpoint's ({step})")
    check_config_values(_get(state, "config", ""))
    check_live_values(state.get("live"))
    check_schedule(state.get("schedule"), step)
    fp = state.get("data_fingerprint")
    if fp is not None and (not isinstance(fp, str) or len(fp) > 200):
        raise SchemaError("data_fingerprint", fp, "the data's fingerprint (text), or None")
    if state.get("vocab_size") is not None:
        _int(state["vocab_size"], "vocab_size", BOUNDS["vocab_size"])
    _check_model(_get(state, "model", ""))
    _check_optimizer(_get(state, "optimizer", ""))
    scaler = state.get("scaler")
    if scaler is not None:
        for k, v in _dict(scaler, "scaler").items():
            _float(float(v) if isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**62 else v,
                   f"scaler.{k}")
    sampler = _dict(_get(state, "sampler", ""), "sampler")
    _tensor(_get(sampler, "generator", "sampler."), "sampler.generator", byte=True)
    _check_rng(_get(state, "rng", ""))


def check_config_values(config: Any, where: str = "config") -> dict[str, Any]:
    """A saved config: a dict of settings, each of its type and in its range
    (the cross-field rules are checked once flags are merged in).  A setting
    the file lacks is one added after it was written: it takes its default,
    as resume has always done, so an upgrade never strands a run; but a
    setting that shapes the model or the data (one a resume may not change)
    must be there, or its default would not be what the run trained with."""
    config = _dict(config, where)
    types = field_types()
    for name in FIELDS:
        if name not in config and (name in RESUMABLE_CHANGES or name in ADDED_LATER):
            continue
        v = _get(config, name, where + ".")
        ft = types[name]
        field = f"{where}.{name}"
        if v is None:
            if not ft.optional:
                raise SchemaError(field, v, f"a {ft.base.__name__} (it cannot be empty)")
            continue
        if ft.base is bool:
            if not isinstance(v, bool):
                raise SchemaError(field, v, "true or false")
        elif ft.base is str:
            if not isinstance(v, str) or (ft.choices is not None and v not in ft.choices):
                raise SchemaError(field, v, "one of " + ", ".join(map(repr, ft.choices)) if ft.choices
                                  else "text")
        elif ft.base is int:
            _int(v, field, BOUNDS[name])
        else:
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) <= 2**53:
                v = float(v)
            _float(v, field, BOUNDS[name])
    return config


def check_live_values(live: Any) -> None:
    """The live settings restored with the run: lr_scale and pause_at, and the
    record of what was changed, each in the range ``attach --set`` allows."""
    if live is None:
        return
    live = _dict(live, "live")
    for key in ("lr_scale", "pause_at"):
        if key in live:
            v = live[key]
            if key == "lr_scale":
                _float(float(v) if type(v) is int and abs(v) <= 2**53 else v, "live.lr_scale", BOUNDS[key])
            else:
                _int(v, "live.pause_at", BOUNDS[key])
    changed = live.get("changed")
    if changed is None:
        return
    for key, v in _dict(changed, "live.changed").items():
        field = f"live.changed.{key}"
        if key not in LIVE_KEYS:
            raise SchemaError(field[:80], v, "a change of a live setting (" + ", ".join(LIVE_KEYS) + ")")
        kind = field_types()[key].base if key in FIELDS else (int if key == "pause_at" else float)
        if kind is int:
            _int(v, field, BOUNDS[key])
        else:
            _float(float(v) if type(v) is int and abs(v) <= 2**53 else v, field, BOUNDS[key])


def check_schedule(sched: Any, step: int) -> None:
    """The LR schedule's refit point (``schedule.LRSchedule``): None (the plain
    warmup + cosine), or the step of the last change of the total at or before
    the checkpoint's, and the cosine's progress there, in [0, 1]."""
    if sched is None:
        return
    sched = _dict(sched, "schedule")
    _int(_get(sched, "start", "schedule."), "schedule.start", Bound(0, step))
    _float(_get(sched, "progress", "schedule."), "schedule.progress", Bound(0, 1))


def _check_model(model: Any) -> None:
    import torch

    model = _dict(model, "model")
    if not model:
        raise SchemaError("model", model, "the model's weights (a dict of tensors)")
    for k, v in model.items():
        t = _tensor(v, f"model.{k}"[:80])
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise SchemaError(f"model.{k}"[:80], "non-finite weights", "finite weights")


def _check_optimizer(opt: Any) -> None:
    opt = _dict(opt, "optimizer")
    state, groups = _get(opt, "state", "optimizer."), _get(opt, "param_groups", "optimizer.")
    if not isinstance(state, dict):
        raise SchemaError("optimizer.state", state, "a dict")
    for pid, st in state.items():
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise SchemaError("optimizer.state", pid, "parameter numbers as keys")
        for k, v in _dict(st, f"optimizer.state.{pid}").items():
            _tensor(v, f"optimizer.state.{pid}.{k}"[:80])
    if not isinstance(groups, (list, tuple)) or not groups:
        raise SchemaError("optimizer.param_groups", groups, "a list of parameter groups")
    for i, g in enumerate(groups):
        where = f"optimizer.param_groups.{i}"
        g = _dict(g, where)
        params = _get(g, "params", where + ".")
        if not isinstance(params, (list, tuple)) or not all(type(p) is int for p in params):
            raise SchemaError(where + ".params", params, "a list of parameter numbers")
        for key in ("lr", "eps"):
            if key in g:
                _float(g[key], f"{where}.{key}")
        if "weight_decay" in g:
            wd = g["weight_decay"]
            _float(float(wd) if type(wd) is int else wd, f"{where}.weight_decay", BOUNDS["weight_decay"])
        betas = g.get("betas")
        if betas is not None:
            if not isinstance(betas, (list, tuple)) or len(betas) != 2:
                raise SchemaError(where + ".betas", betas, "two numbers in [0, 1)")
            for b in betas:
                _float(b, where + ".betas", BOUNDS["beta1"])


def _ints(v: Any, field: str, n: int) -> None:
    if not isinstance(v, (list, tuple)) or len(v) != n or \
            not all(type(x) is int and 0 <= x < 2**32 for x in v):
        raise SchemaError(field, v, f"{n} integers in [0, 2**32)")


def _check_rng(rng: Any) -> None:
    rng = _dict(rng, "rng")
    py = _get(rng, "python", "rng.")
    if not isinstance(py, (list, tuple)) or len(py) != 3 or type(py[0]) is not int or \
            not (py[2] is None or type(py[2]) is float):
        raise SchemaError("rng.python", py, "Python's random state (version, 625 integers, gauss)")
    _ints(py[1], "rng.python", 625)
    npst = _get(rng, "numpy", "rng.")
    if not isinstance(npst, (list, tuple)) or len(npst) != 5 or npst[0] != "MT19937" or \
            type(npst[2]) is not int or type(npst[3]) is not int or type(npst[4]) is not float:
        raise SchemaError("rng.numpy", npst, "NumPy's MT19937 state")
    _ints(npst[1], "rng.numpy", 624)
    _tensor(_get(rng, "torch", "rng."), "rng.torch", byte=True)
    cuda = rng.get("cuda") or []
    if not isinstance(cuda, (list, tuple)):
        raise SchemaError("rng.cuda", cuda, "a list of CUDA RNG states")
    for i, t in enumerate(cuda):
        _tensor(t, f"rng.cuda.{i}", byte=True)


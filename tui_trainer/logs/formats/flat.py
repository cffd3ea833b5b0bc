"""Flat records from someone else's logger: a step-like key and loss-like keys.

The lesson's ``{"step", "train_loss", "lr"}`` lines, nanoGPT-style ``iter``
lines, any JSONL of a step and a loss (Hugging Face's own entries, with their
``epoch``, are read first by ``hugging_face``; the key lists here still name
the common spellings, ``loss``, ``learning_rate``, ``eval_loss``, that other
loggers use too).  Of each list of keys, the first one present
with a non-null value is taken; unknown keys are ignored.  A line with a
validation loss is an eval (with its train loss, if any); else a line with a
train loss or an lr is a train point.
"""
from __future__ import annotations

import math

from ...records import Eval
from .base import BAD, IGNORED, Reading

STEP_KEYS = ("step", "iter", "global_step")
TRAIN_KEYS = ("train_loss", "loss")
LR_KEYS = ("lr", "learning_rate")
VAL_KEYS = ("val_loss", "eval_loss")
NAN = math.nan
_NUM = frozenset({int, float})


def _first(d: dict, keys: tuple[str, ...]) -> object:
    for k in keys:
        v = d.get(k)
        if v is not None:
            return v
    return None


def read(d: dict) -> Reading:
    step = _first(d, STEP_KEYS)
    if step is None:
        return IGNORED
    if type(step) is float and step.is_integer():  # finite: strict JSON has no inf
        step = int(step)
    if type(step) is not int:  # a bool is not a step either
        return BAD
    train, lr, val = _first(d, TRAIN_KEYS), _first(d, LR_KEYS), _first(d, VAL_KEYS)
    for v in (train, lr, val):
        if v is not None and type(v) not in _NUM:
            return BAD
    if val is not None:
        return Eval(step=step, val_loss=float(val), train_loss=None if train is None else float(train),
                    elapsed_s=NAN, time=NAN)
    if train is None and lr is None:
        return IGNORED
    return step, NAN if train is None else float(train), NAN if lr is None else float(lr)

"""nanoGPT's printed training log (``python train.py ... | tee train.log``).

Two kinds of line carry numbers:

- ``iter 250: loss 1.9431, time 31.84ms, mfu 12.34%``: a train point;
- ``step 250: train loss 1.8812, val loss 1.9903``: an eval.

Being text, not JSON, a line is first turned into an object here
(``from_text``, asked by ``parsing.decode`` for a line that is not JSON), and
that object read like any other format's (``read``).  The rest of what
nanoGPT prints (its settings, "saving checkpoint to out", the parameter
count) is readable and has nothing to plot.
"""
from __future__ import annotations

import math
import re

from ...records import Eval
from .base import IGNORED, Reading

KEY = "nanogpt"  # the key of an object made from one of its lines, naming the line's kind
NOTE: dict = {KEY: "note"}  # what a line of its chatter is: read, nothing to plot
_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf|-inf)"
_ITER = re.compile(rb"iter (\d{1,18}): loss " + _NUM.encode() +
                   rb"(?:, time " + _NUM.encode() + rb" ?ms)?(?:, mfu " + _NUM.encode() + rb"%)?\s*")
_EVAL = re.compile(rb"step (\d{1,18}): train loss " + _NUM.encode() + rb", val loss " + _NUM.encode() + rb"\s*")
# The first words of what else nanoGPT's train.py prints: read, nothing to plot.
_CHATTER = (b"Overriding", b"tokens per iteration", b"number of parameters", b"saving checkpoint",
            b"found vocab_size", b"Initializing", b"Resuming", b"defaulting to vocab_size", b"compiling the model",
            b"num decayed parameter", b"num non-decayed parameter", b"using fused AdamW", b"WARNING: using slow")


def from_text(raw: bytes) -> dict | None:
    """The object one of nanoGPT's lines stands for (``NOTE``: a line with
    nothing to plot, read as a blank one); None when it is not one of its lines."""
    line = raw.rstrip(b"\r")
    if line.startswith(b"iter "):
        m = _ITER.fullmatch(line)
        if m:
            step, loss, ms, mfu = m.groups()
            return {KEY: "train", "step": int(step), "train_loss": _number(loss),
                    "time_ms": _number(ms), "mfu": _number(mfu)}
    elif line.startswith(b"step "):
        m = _EVAL.fullmatch(line)
        if m:
            step, train, val = m.groups()
            return {KEY: "eval", "step": int(step), "train_loss": _number(train), "val_loss": _number(val)}
    elif line.startswith(_CHATTER):
        return NOTE
    return None


def _number(b: bytes | None) -> float | None:
    return None if b is None else float(b)


def read(d: dict) -> Reading | None:
    """An object ``from_text`` made, or None when ``d`` is not one."""
    kind = d.get(KEY)
    if kind == "train" and type(d.get("step")) is int:
        loss = d.get("train_loss")
        return d["step"], loss if type(loss) is float else math.nan, math.nan
    if kind == "eval" and type(d.get("step")) is int and type(d.get("val_loss")) is float:
        train = d.get("train_loss")
        return Eval(step=d["step"], val_loss=d["val_loss"], train_loss=train if type(train) is float else None,
                    elapsed_s=math.nan, time=math.nan)
    if kind is not None:
        return IGNORED
    return None

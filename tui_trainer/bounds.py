"""The range of every numeric setting, in one table.

Every route a value arrives by checks it here: a flag or a TOML key
(``config.validate``), a live change from ``attach --set``, the socket or the
dashboard's ``:`` box (``live.py``, through ``settings.Settings``), and a
checkpoint read back (``checkpoint_schema``).  The words a refusal uses are
made from the same ``Bound`` that refused it, so the bound a message names is
the bound enforced.

Each range is finite: a value outside it can only be a typo (or a crafted
file), and inside it the arithmetic stays finite for any sane run.  torch is
not imported here.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

MAX_STEPS = 10**12  # more can only be a typo (and seed + step must fit torch's 64-bit seed)


@dataclass(frozen=True)
class Bound:
    """``lo <= v <= hi`` (``lo < v`` when ``lo_open``, ``v < hi`` when ``hi_open``)."""
    lo: int | float
    hi: int | float
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, v: int | float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below

    def words(self) -> str:
        """What a value must be, as a message says it: "must be at least 1 and at most 1e12"."""
        return "must be " + self.range()

    def range(self) -> str:
        """The range in words: "at least 1 and at most 1e12", "positive and at most 1000", "in [0, 1)"."""
        lo, hi = number(self.lo), number(self.hi)
        if self.hi <= 1 and (self.lo_open or self.hi_open):  # a fraction: interval notation reads best
            return f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        low = ("positive" if self.lo == 0 else f"above {lo}") if self.lo_open else \
            (">= 0" if self.lo == 0 else f"at least {lo}")
        return f"{low} and {'below' if self.hi_open else 'at most'} {hi}"


def number(v: int | float) -> str:
    """``v`` as text that reads back as exactly ``v``: 1e12, 4294967296, 1e-6, 0.5."""
    if isinstance(v, int) and not isinstance(v, bool):
        if abs(v) >= 10**6:
            exp = len(str(abs(v))) - 1
            if abs(v) == 10**exp:
                return f"{'-' if v < 0 else ''}1e{exp}"
        return str(v)
    text = f"{v:g}"
    if "e" in text:  # 1e+06 -> 1e6, 1e-06 -> 1e-6
        mantissa, _, exp = text.partition("e")
        text = f"{mantissa}e{int(exp)}"
    return text if float(text) == v else repr(v)


BOUNDS: dict[str, Bound] = {
    # the run's config (config.TrainConfig), by field name
    "vocab_size": Bound(2, 2**32),
    "val_fraction": Bound(0, 1, lo_open=True, hi_open=True),
    "steps": Bound(1, MAX_STEPS),
    "time_budget": Bound(0, 1e9, lo_open=True),  # seconds: 30 years
    "eval_every": Bound(1, MAX_STEPS),
    "eval_batches": Bound(1, 10**6),
    "log_every": Bound(1, MAX_STEPS),
    "checkpoint_every": Bound(1, MAX_STEPS),
    "keep": Bound(0, 10**6),
    "max_bad_steps": Bound(1, MAX_STEPS),
    "context_length": Bound(1, 10**7),
    "n_layer": Bound(1, 10**5),
    "n_head": Bound(1, 10**6),
    "n_embd": Bound(1, 10**7),  # the parameter estimate (config.MAX_PARAMS) bounds the shape as a whole
    "dropout": Bound(0, 1, hi_open=True),
    "batch_size": Bound(1, 10**7),
    "grad_accum": Bound(1, 4096),
    "max_lr": Bound(0, 1e6, lo_open=True),  # 1e6 diverges at once; tests use it to make a run diverge
    "min_lr": Bound(0, 1e6),
    "warmup_steps": Bound(0, MAX_STEPS),
    "weight_decay": Bound(0, 10),  # AdamW multiplies each weight by 1 - lr x decay every step
    "beta1": Bound(0, 1, hi_open=True),
    "beta2": Bound(0, 1, hi_open=True),
    "grad_clip": Bound(0, 1e6),  # 0: off; a norm of 1e6 never clips a run that has not diverged
    "seed": Bound(-2**63, 2**63 - 1),
    "sample_tokens": Bound(1, 1_000_000),
    "temperature": Bound(1e-6, 100),  # below 1e-6 the scaled logits overflow; above 100 it is noise
    "top_k": Bound(0, 2**32),
    "threads": Bound(1, 1024),  # torch starts that many threads; far more crashes the process
    # live settings that are not config fields (live.py, run.Run)
    "lr_scale": Bound(0, 1000, lo_open=True),
    "pause_at": Bound(0, MAX_STEPS),
}


#: The vocabulary of ``--tokenizer bpe:N``: the 256 bytes and an end-of-text
#: token at least; more than 2**20 would take longer to train than any run here.
BPE_VOCAB = Bound(257, 2**20)


def problem(key: str, v: Any) -> str | None:
    """Why ``v`` is refused as ``key``'s value ("must be at least 1 and at
    most 1e12"), or None.  A key with no bound takes any finite number."""
    if isinstance(v, float) and not math.isfinite(v):
        return "must be a finite number"
    b = BOUNDS.get(key)
    return None if b is None or b.holds(v) else b.words()


# --- the forms of the settings written as text ---------------------------------

UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*", re.IGNORECASE)


def parse_duration(text: Any) -> float:
    """Seconds from ``60s``, ``10m``, ``1.5h``, ``2d`` or a bare number of
    seconds (``90``); a ValueError names the form."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    try:
        return float(text)  # a bare number (its range is checked as every setting's is: bounds.py)
    except (TypeError, ValueError):
        pass
    parts = list(_DURATION.finditer(str(text)))
    joined = "".join(m.group(0) for m in parts)
    if not parts or joined != str(text) or (len(parts) > 1 and any(not m.group(2) for m in parts)):
        raise ValueError(f"a duration is a number with s, m, h or d (60s, 10m, 1h30m), got {str(text)[:40]!r}")
    return sum(float(m.group(1)) * UNITS[m.group(2).lower()] for m in parts)


def tokenizer_problem(spec: Any) -> str | None:
    """Why ``spec`` is not a --tokenizer value (its form only: a path is
    looked for when the data is read), or None."""
    if not isinstance(spec, str) or not spec.strip():
        return "is empty"
    if spec in ("bytes", "gpt2") or is_path(spec):
        return None
    if spec.startswith("bpe:"):
        n = spec[4:]
        if not (n.isascii() and n.isdigit()) or len(n) > 9 or not BPE_VOCAB.holds(int(n)):
            return f"bpe:N needs a vocabulary N {BPE_VOCAB.range()}"
        return None
    return "is not bytes, bpe:N, gpt2 or a path to a tokenizer.json"


def is_path(spec: str) -> bool:
    return spec.endswith((".json", ".tiktoken")) or "/" in spec or "\\" in spec

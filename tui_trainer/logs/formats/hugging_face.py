"""Hugging Face Trainer logs, whole: ``log_history`` entries, ``trainer_state.json`` files and output folders.

An entry of ``log_history`` is a train entry (``loss``, ``grad_norm``,
``learning_rate``, ``epoch``, ``step``), an eval entry (``eval_loss`` and
other ``eval_*`` metrics, ``epoch``, ``step``) or the end-of-training summary
(``train_runtime``, ``total_flos``, ...), whose ``train_loss`` is the average
over the run, not a point at its ``step``.  Entries arrive one per line (a
JSONL dump of ``log_history``) or inside a ``trainer_state.json``, which the
Trainer writes in every ``checkpoint-N/`` folder: the newest holds the whole
history so far, with ``global_step`` and ``max_steps`` for the run's length.

A trainer_state.json is untrusted input like any log: ``read_state`` says in
one phrase why one cannot be read (``StateError``); an entry that is not an
object is a bad line.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ...records import MAX_EXTRAS, Eval, clean_text
from .base import BAD, IGNORED, Reading

SUMMARY_KEYS = ("train_runtime",)
STEP, TRAIN, LR, VAL = "step", "loss", "learning_rate", "eval_loss"
STATE_NAME = "trainer_state.json"
CHECKPOINT = re.compile(r"checkpoint-([0-9]{1,18})")
MAX_STATE = 64 << 20   # bytes of a trainer_state.json read at most (a long run logged every step is ~20 MB)
MAX_KEYS = 256         # keys of one entry kept
MAX_TEXT = 200         # characters of a key or a text value kept (HF's are short)
NAN = math.nan
_NUM = frozenset({int, float})


def read(d: dict) -> Reading | None:
    """An entry of ``log_history``, or None when ``d`` is not one (the flat
    format is asked next): an entry has an ``epoch`` and a ``step`` and no
    ``type``, and a loss, an lr or an eval loss."""
    if any(k in d for k in SUMMARY_KEYS):
        return IGNORED
    if "epoch" not in d or STEP not in d or "type" in d or not (TRAIN in d or LR in d or VAL in d):
        return None
    step = d[STEP]
    if step is None:
        return IGNORED
    if type(step) is float and step.is_integer():
        step = int(step)
    if type(step) is not int:  # a bool is not a step either
        return BAD
    train, lr, val = d.get(TRAIN), d.get(LR), d.get(VAL)
    for v in (train, lr, val):
        if v is not None and type(v) not in _NUM:
            return BAD
    if val is not None:
        metrics = {k: v for k, v in d.items() if k.startswith("eval_") and k != VAL and type(v) in _NUM}
        return Eval(step=step, val_loss=float(val), train_loss=None if train is None else float(train),
                    elapsed_s=NAN, time=NAN, extra=dict(list(metrics.items())[:MAX_EXTRAS]))
    if train is None and lr is None:
        return IGNORED
    return step, NAN if train is None else float(train), NAN if lr is None else float(lr)


# --- trainer_state.json ----------------------------------------------------------

class StateError(ValueError):
    """A trainer_state.json that cannot be read; the message is a phrase
    that follows the file's name ("is not JSON (...)")."""


@dataclass
class TrainerState:
    """What a trainer_state.json says: its history as JSONL lines, and the run's figures."""

    lines: bytes                       # one entry of log_history a line
    global_step: int | None = None     # the step the state was saved at
    max_steps: int | None = None       # the run's planned length
    best_metric: float | None = None
    best_model_checkpoint: str | None = None

    @property
    def finished(self) -> bool:
        """Saved at (or past) the planned length: the run got to its end."""
        return self.max_steps is not None and (self.global_step or 0) >= self.max_steps > 0

    def describe(self) -> str:
        """A few words for the status line: the best checkpoint, if the state names one."""
        if self.best_metric is None:
            return ""
        where = f" ({Path(self.best_model_checkpoint).name})" if self.best_model_checkpoint else ""
        return f"best {self.best_metric:.4g}{where}"


def is_state_file(path: Path, head: bytes = b"") -> bool:
    """True for a trainer_state.json: by its name, or a .json file whose first
    bytes name a ``log_history`` (the Trainer writes its keys sorted: it
    comes early)."""
    return path.name == STATE_NAME or (path.suffix.lower() == ".json" and b'"log_history"' in head)


def newest_state(folder: Path) -> Path | None:
    """The trainer_state.json a Hugging Face folder stands for: a checkpoint
    folder's own, or in an output folder the newest ``checkpoint-N``'s (the
    highest N; it holds the whole history), unless the folder's own (written
    by ``save_state`` at the end) is newer.  None when there is none."""
    own = folder / STATE_NAME
    best: tuple[int, Path] | None = None
    try:
        for p in folder.iterdir():
            m = CHECKPOINT.fullmatch(p.name)
            if m and (best is None or int(m.group(1)) > best[0]) and (p / STATE_NAME).is_file():
                best = (int(m.group(1)), p / STATE_NAME)
    except OSError:
        pass
    if best is None:
        return own if own.is_file() else None
    if own.is_file() and _mtime(own) >= _mtime(best[1]):
        return own
    return best[1]


def _mtime(p: Path) -> int:
    try:
        return p.stat().st_mtime_ns
    except OSError:
        return -1


def read_state(raw: bytes) -> TrainerState:
    """A trainer_state.json's bytes as its history lines and figures; ``StateError`` says why not."""
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise StateError("is not JSON (nested too deep)") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer of too many digits
        raise StateError(f"is not JSON ({' '.join(str(e).split())[:120]})") from None
    if type(doc) is not dict:
        raise StateError(f"is JSON but not an object ({type(doc).__name__})")
    history = doc.get("log_history")
    if type(history) is not list:
        raise StateError("has no log_history list, so it is no Hugging Face trainer_state.json")
    lines = b"".join(_line(e) for e in history)
    best = doc.get("best_metric")
    where = doc.get("best_model_checkpoint")
    return TrainerState(lines, _count(doc.get("global_step")), _count(doc.get("max_steps")),
                        float(best) if type(best) in _NUM and math.isfinite(best) else None,
                        _text(where) if type(where) is str else None)


def _line(entry: object) -> bytes:
    """One entry as one JSON line: its plain values (numbers, text, true/false,
    null) kept, a NaN or infinity as null; anything that is no object as a bad line."""
    if type(entry) is not dict:
        return b"null\n"
    out: dict[str, object] = {}
    for k, v in entry.items():
        if len(out) >= MAX_KEYS:
            break
        if len(k) > MAX_TEXT:
            continue
        if type(v) is float and not math.isfinite(v):
            v = None
        elif type(v) is str:
            v = _text(v)
        elif v is not None and type(v) not in (int, float, bool):
            continue
        out[k] = v
    try:
        return json.dumps(out).encode() + b"\n"
    except ValueError:  # an integer of too many digits
        return b"null\n"


def _count(v: object) -> int | None:
    return v if type(v) is int and 0 <= v < 1 << 62 else None


def _text(s: str) -> str:
    return clean_text(s[:MAX_TEXT])

"""The typed records a run emits: one stream, many consumers.

The engine builds these; sinks consume them (the JSONL run log, the live
dashboard, the headless printer).  Each record serialises to one flat JSON
object with a ``type`` and a ``step``; ``from_dict`` turns a JSON object read
back from a log into the same dataclass, so a followed file and the in-process
queue feed the UI through one path.

Field names are a contract with users' scripts: the lesson's
``{"step", "train_loss", "lr"}`` keys keep their names.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .field_kinds import FieldCheck, field_checks  # noqa: F401 (records' names: the decoder's checks)

def json_object(raw: bytes | str) -> dict[str, Any] | None:
    """One line of untrusted JSON as the object it holds, or None: not JSON,
    not UTF-8, nested too deep for the parser (its RecursionError), an integer
    of too many digits, or JSON that is no object.  Every line read outside
    the log reader (``logs.parsing``: a log's tail, its first line, control.json,
    a followed sample) goes through here, so none of them can raise."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


#: A run's end, as ``run_end.status`` says it.
EndStatus = Literal["finished", "stopped", "diverged", "failed", "killed"]
#: Transient engine states (``status.state``).
EngineState = Literal["evaluating", "checkpointing", "compiling", "running", "paused"]
#: Why a run paused (``pause.reason``).
PauseReason = Literal["user", "diverged", "pause_at", "suspended"]  # suspended: Ctrl-Z (ui/suspend.py)
#: Who changed a live setting (``change.source``).
ChangeSource = Literal["keys", "attach", "api", "mcp", "time"]
#: Why a checkpoint was written (``checkpoint.reason``).
CheckpointReason = Literal["scheduled", "manual", "final", "best"]


def clean_text(s: str) -> str:
    """A string every strict JSON parser takes: a path that was not UTF-8
    (lone surrogates from ``os.fsdecode``) shows its odd bytes as ``\\xNN``."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") \
            if _only_escapes(s) else s.encode("utf-8", "backslashreplace").decode("utf-8")


def _only_escapes(s: str) -> bool:
    try:
        s.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


def _clean(v: Any) -> Any:
    if isinstance(v, str):
        return clean_text(v)
    if isinstance(v, dict):
        return {clean_text(str(k)): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@dataclass
class Record:
    type: ClassVar[str] = "record"
    step: int
    time: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict.  Non-finite floats become None and are named in
        ``nonfinite`` so strict JSON parsers accept every line."""
        d: dict[str, Any] = {"type": self.type}
        bad: list[str] = []
        extra: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == EXTRA:
                extra = v
                continue
            if isinstance(v, float):
                if not math.isfinite(v):
                    bad.append(f.name)
                    v = None
            elif isinstance(v, (str, dict, list)):
                v = _clean(v)
            d[f.name] = v
        for k, v in extra.items():  # written flat, after the fields; never over one
            if k in d or k == "nonfinite":
                continue
            if isinstance(v, float) and not math.isfinite(v):
                bad.append(k)
                v = None
            d[clean_text(str(k))] = v
        if bad:
            d["nonfinite"] = bad
        return d


@dataclass
class RunStart(Record):
    type: ClassVar[str] = "run_start"
    run_name: str
    config: dict[str, Any]
    n_params: int
    device: str
    total_steps: int
    resumed: bool = False
    # On resume: the checkpoint continued from (its step is ``step``) and the
    # config changes allowed on resume, {key: [old, new]}.  Records earlier in
    # the file with a step above ``step`` are superseded (logs.resumes.effective_records).
    resumed_from: str | None = None
    changes: dict[str, Any] | None = None
    # Live settings changed during the run so far (``change`` records), as
    # they stand at ``step``: a resumed run continues with these.
    live: dict[str, Any] | None = None
    # Resumed with changes that alter the arithmetic (threads, device, kernels):
    # from ``step`` on the run is not bit-identical to an uninterrupted one.
    inexact: list[str] | None = None
    # For MFU: the model's training FLOPs per token, and the peak FLOP/s it is
    # measured against (a GPU's data sheet, or this CPU's measured matmul peak).
    flops_per_token: float | None = None
    peak_flops: float | None = None
    # Tokens per optimizer step: grad_accum x batch_size x context_length x processes.
    tokens_per_step: int | None = None
    # The tokenizer, when not bytes: {"name": the --tokenizer setting, "vocab_size": N,
    # "file": its copy in the run folder (tokenizer.json or tokenizer.tiktoken)}.
    tokenizer: dict[str, Any] | None = None
    # A fork (``train --fork RUN@STEP``): {"folder", "name", "fingerprint" (the parent's data), "step",
    # "checkpoint" (its copy in this folder), "changes" {key: [parent's, fork's]}}.  Absent otherwise.
    parent: dict[str, Any] | None = None


@dataclass
class TrainStep(Record):
    type: ClassVar[str] = "train"
    train_loss: float
    lr: float
    tokens_per_sec: float
    grad_norm: float
    elapsed_s: float
    tokens: int = 0  # tokens seen so far in the run
    # A loop's own numbers (``run.log(step, acc=0.9)``), written as flat keys after the fields.
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Eval(Record):
    type: ClassVar[str] = "eval"
    val_loss: float
    # The same metric on a fixed slice of the train split; None: not measured
    # (written null without ``nonfinite``, shown as "–"), unlike NaN.
    train_loss: float | None
    elapsed_s: float
    forced: bool = False  # asked for with the `e` key rather than by cadence
    # The val loss in bits per UTF-8 byte of the text (bits_per_byte): comparable
    # across tokenizers; None where the tokens have no text (a .bin of ids), or in an older log.
    val_bpb: float | None = None
    extra: dict[str, float] = field(default_factory=dict)  # a loop's own metrics, as flat keys


@dataclass
class Sample(Record):
    type: ClassVar[str] = "sample"
    prompt: str
    text: str
    requested: bool = False  # asked for by a person (attach --sample, the prompt box), not the eval cadence
    id: str | int | None = None  # the request's id, when it gave one


@dataclass
class Resources(Record):
    """What the run is using, sampled every few seconds."""

    type: ClassVar[str] = "resources"
    rss_mb: float | None = None
    cuda_allocated_mb: float | None = None
    cuda_reserved_mb: float | None = None
    gpu_util: float | None = None  # percent, where nvidia-ml-py is installed
    threads: int | None = None  # torch's CPU threads in use (they follow the load unless pinned)


@dataclass
class Change(Record):
    """A live setting changed at ``step`` (applied from the next step on)."""

    type: ClassVar[str] = "change"
    key: str
    old: Any
    new: Any
    source: ChangeSource = "keys"  # the dashboard, the socket, Python, the MCP server, or a --time budget


@dataclass
class LrJump(Record):
    """The learning rate of the step after ``step`` moved by more than 5% from
    what it would have been, at a resume or a live change (``schedule.py``)."""

    type: ClassVar[str] = "lr_jump"
    before: float  # the LR the next step would have had
    after: float  # the LR it has
    cause: str  # "resume", or the live setting changed
    message: str = ""  # the whole note, as the console and the dashboard show it


@dataclass
class Checkpoint(Record):
    type: ClassVar[str] = "checkpoint"
    path: str
    reason: CheckpointReason
    val_loss: float | None = None
    blocked_s: float | None = None  # training held up: the snapshot (and any wait for the write before)
    write_s: float | None = None    # the write itself, on the background thread (async saves)


@dataclass
class Paused(Record):
    type: ClassVar[str] = "pause"
    reason: PauseReason = "user"


@dataclass
class Resumed(Record):
    type: ClassVar[str] = "resume"


@dataclass
class BadStep(Record):
    """A step whose loss or gradient was NaN/inf: skipped, never applied."""

    type: ClassVar[str] = "bad_step"
    train_loss: float | None
    grad_norm: float | None
    consecutive: int


@dataclass
class Status(Record):
    """Transient engine state for the UI (evaluating, checkpointing, compiling)."""

    type: ClassVar[str] = "status"
    state: EngineState
    detail: str = ""


@dataclass
class Ack(Record):
    """The engine's answer to a command from the UI or the control channel."""

    type: ClassVar[str] = "ack"
    command: str
    ok: bool = True
    message: str = ""
    id: str | int | None = None  # the request's id, when it gave one (a sample that could not be drawn)


@dataclass
class RunEnd(Record):
    type: ClassVar[str] = "run_end"
    status: EndStatus
    elapsed_s: float
    val_loss: float | None = None
    error: str | None = None


#: The field that holds a record's extra numbers (``TrainStep``, ``Eval``), written flat.
EXTRA = "extra"
MAX_EXTRAS = 64  # extra numbers read back from one line

RECORD_TYPES: dict[str, type[Record]] = {
    cls.type: cls
    for cls in (RunStart, TrainStep, Eval, Sample, Checkpoint, Paused, Resumed,
                BadStep, Status, Ack, Change, Resources, RunEnd, LrJump)
}
#: The keys of a line that are a record's own, not a loop's extra numbers, for
#: each record type that has extras: the one reserved-key rule (``own_loop``
#: refuses them as names of a loop's own numbers; the decoder skips them).
RESERVED: dict[type[Record], frozenset[str]] = {
    cls: frozenset(f.name for f in dataclasses.fields(cls)) | {"type", "nonfinite"}
    for cls in RECORD_TYPES.values() if EXTRA in {f.name for f in dataclasses.fields(cls)}
}
_NO_NONFINITE: list = []


def from_dict(d: dict[str, Any]) -> Record | None:
    """The one decoder from a JSON object to a record (the log reader's, the
    tests', anyone's): a line of ours as its record, every field checked
    against its annotation; None when it is not one of ours or does not check.

    A log is untrusted input: a string where a loss belongs, a list where a
    step belongs or a status outside its ``Literal[...]`` is None here, not a
    crash in a widget.  Unknown keys are dropped and missing optional fields
    take their defaults (older and newer logs load); a null named in
    ``nonfinite``, or in a plain float field, reads as NaN (a null in a
    ``float | None`` field not so named is absent: None).
    """
    t = d.get("type")
    cls = RECORD_TYPES.get(t) if type(t) is str else None
    return None if cls is None else build(cls, d)


def build(cls: type[Record], d: dict[str, Any]) -> Record | None:
    """``d`` as a record of ``cls``, every field checked (see ``from_dict``)."""
    nonfinite = d.get("nonfinite", _NO_NONFINITE)
    if type(nonfinite) is not list:
        return None
    kwargs = {}
    for check in field_checks(cls):
        if check.name not in d:
            if check.required:
                return None
            continue
        v = d[check.name]
        if v is None and (check.null_is_nan or check.name in nonfinite):
            v = math.nan
        if not check.accepts(v):
            return None
        kwargs[check.name] = v
    extra = flat_extras(cls, d)  # a loop's own numbers, flat keys of a train or eval line
    if extra is not None:
        kwargs[EXTRA] = extra
    try:
        return cls(**kwargs)
    except (TypeError, ValueError):  # a record class that checks more in __post_init__
        return None


def flat_extras(cls: type[Record], d: dict[str, Any]) -> dict[str, float] | None:
    """The extra numbers of a line of ``cls`` (a record with an ``extra``
    field; None for the others): its keys that are no field, whose value is a
    number, or null named in ``nonfinite`` (NaN).  Anything else is dropped."""
    names = RESERVED.get(cls)
    if names is None:
        return None
    nonfinite = d.get("nonfinite")
    out: dict[str, float] = {}
    for k, v in d.items():
        if k in names or len(out) >= MAX_EXTRAS:
            continue
        if type(v) is int or type(v) is float:
            out[k] = v
        elif v is None and type(nonfinite) is list and k in nonfinite:
            out[k] = math.nan
    return out

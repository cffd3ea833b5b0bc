"""Run configuration: one dataclass, the single source of every knob's name.

CLI flags (``--max-lr``) and TOML keys (``max_lr`` or ``max-lr``) are derived
from these field names, so the two can never drift apart.  ``validate`` turns
every impossible combination into a one-line ``UserError`` naming the fix.
"""
from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

from .bounds import BOUNDS, MAX_STEPS, number, parse_duration, problem, tokenizer_problem as spec_problem  # noqa: F401
from .errors import UserError  # noqa: F401 (re-exported: config.UserError)
from .field_kinds import FieldType, field_type
from .files import checked_folder_name
from .presets import Preset, describe as describe_presets, preset_values


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A field with its ``--help`` text.  ``show_default``, when given, is the
    text ``--help`` shows as the default instead of the bare value (a default
    that scales with the run, or one with invisible whitespace)."""
    return field(default=default, metadata={"help": help, **kw})


# Closed sets of values are Literal annotations: validation, --help and the
# CLI's choices all read them from here (``choices(name)``).
Dtype = Literal["auto", "fp32", "bf16", "fp16"]
Schedule = Literal["continue", "restart"]


def _or_list(values: tuple[Any, ...]) -> str:
    return ", ".join(map(str, values[:-1])) + f" or {values[-1]}" if len(values) > 1 else str(values[0])


@dataclass
class TrainConfig:
    # The defaults are the demo (`tui-trainer` with no arguments): tuned for the
    # lowest val loss in ~30 s of training on a 2-core CPU, ~35 s in all with
    # evals and samples.  A 2 x 64 x 64 model at lr 1e-2 sees ~2.7 M bytes in
    # that time; wider or deeper shapes learn more per byte but see too few
    # (sweep and figures: benchmarks/bench_demo.py --sweep).
    # data
    data: str | None = _f(None, "training text (any file, byte-level), a folder or glob of text files, a .jsonl or "
                                ".parquet file (--text-field), a nanoGPT .bin of uint16 tokens, or a nanoGPT data "
                                "folder (train.bin; val.bin validates, meta.pkl decodes); default: the embedded corpus")
    tokenizer: str = _f("bytes", "bytes (vocab 256), bpe:N (a byte-level BPE of N tokens trained on the training "
                                 "split), gpt2 (tiktoken) or a path to a tokenizer.json; with a .bin of ids, "
                                 "the tokenizer that made them (samples and prompts become text)")
    vocab_size: int | None = _f(None, "vocabulary size of a .bin token file (default: meta.pkl's vocab_size, else "
                                      "the tokenizer's, else the largest id in the file + 1; 256 for text)")
    init_from: str | None = _f(None, "a nanoGPT checkpoint (PATH/ckpt.pt) whose weights the run starts from; its "
                                     "model_args must match --n-layer, --n-head, --n-embd, --context-length, --bias")
    text_field: str = _f("text", "with --data a .jsonl or .parquet file: the field holding each document's text")
    val_fraction: float = _f(0.1, "fraction of the data held out for validation (taken from the end)")
    # run folder
    out: str | None = _f(None, "run folder to create (default outputs/<fresh name>); an existing run is never overwritten")
    name: str | None = _f(None, "run name (default: a fresh timestamped name)")
    # length and cadence
    steps: int = _f(1300, "optimizer steps to train")
    time_budget: float | None = _f(None, "train for about this wall time (60s, 10m, 1h; a number: seconds): the "
                                   "first steps' pace fixes --steps, a change with source time (time_budget.py)",
                                   flags=("--time",), parse=parse_duration, metavar="DURATION")
    eval_every: int = _f(260, "measure val and train-split loss and print a sample every K steps",
                         show_default="260, or steps/5 for a shorter run")
    eval_batches: int = _f(20, "validation batches in the fixed eval slice")
    log_every: int = _f(10, "headless: print a loss line every N steps",
                        show_default="10, or steps/20 for a shorter run")
    checkpoint_every: int | None = _f(None, "save a checkpoint every N steps (default: at each eval)")
    keep: int = _f(2, "older step checkpoints to keep besides latest and best")
    sync_checkpoints: bool = _f(False, "write each checkpoint on the training thread, which waits for it (debugging); "
                                       "default: copy the state, write it in the background")
    max_bad_steps: int = _f(5, "consecutive NaN/inf steps before the run pauses (dashboard) or stops (headless)")
    # model
    preset: Preset | None = _f(None, "a named shape whose settings apply unless given as flags or TOML keys ("
                                     + describe_presets() + "; its vocab_size applies to .bin token data only)")
    context_length: int = _f(64, "tokens of context (block size)")
    n_layer: int = _f(2, "transformer blocks")
    n_head: int = _f(4, "attention heads per block")
    n_embd: int = _f(64, "model width")
    dropout: float = _f(0.0, "dropout probability")
    bias: bool = _f(True, "bias in Linear and LayerNorm layers")
    # optimisation
    batch_size: int = _f(32, "sequences per micro-batch (per process under torchrun)")
    grad_accum: int = _f(1, "micro-batches per optimizer step: a step trains on grad_accum x batch_size sequences "
                            "(x processes), their mean loss")
    max_lr: float = _f(1e-2, "peak learning rate after warmup", show_default=(
        "1e-2 at the demo's width 64; for a wider --n-embd, 1e-2 x 64 / n_embd (5e-3 at 128, 8.3e-4 at 768)"))
    min_lr: float | None = _f(None, "learning-rate floor of the cosine decay (default 10%% of max_lr)")
    warmup_steps: int = _f(60, "linear warmup steps", show_default="60, or steps/20 for a shorter run")
    schedule: Schedule = _f("continue", "what a change of the total steps (a resume with --steps, a live steps=) "
                                        "does to the LR: continue (the cosine goes on from the LR reached, down to "
                                        "min_lr at the new end) or restart (the cosine over the new total: the LR "
                                        "jumps)")
    weight_decay: float = _f(0.1, "AdamW weight decay for matrices and embeddings")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.99, "AdamW beta2")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 disables)")
    seed: int = _f(1337, "random seed")
    # sampling
    sample_prompt: str = _f("def ", "prompt for the sample printed at each eval", show_default=(
        "'def ' for the embedded corpus; with --data, the start of a line of the validation split"))
    sample_tokens: int = _f(200, "tokens to generate per sample")
    temperature: float = _f(0.8, "sampling temperature")
    top_k: int | None = _f(20, "sample only from the k most likely tokens (0 or none: all)")
    # hardware
    device: str = _f("auto", "auto, cpu, cuda, cuda:N or mps")
    dtype: Dtype = _f("auto", f"{_or_list(get_args(Dtype))} (autocast); auto: bf16 on a CUDA GPU that has it, fp16 + grad scaler on one that does not, fp32 on CPU")
    compile: bool = _f(False, "torch.compile the model (worth it on GPU for long runs)")
    tf32: bool = _f(True, "allow TF32 matmuls on CUDA")
    fused_adamw: bool = _f(True, "use fused AdamW where the device supports it")
    threads: int | None = _f(None, "torch CPU threads (default: torch's choice)")

    @property
    def lr_floor(self) -> float:
        return self.max_lr * 0.1 if self.min_lr is None else self.min_lr

    @property
    def ckpt_every(self) -> int:
        return self.checkpoint_every or self.eval_every

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}

# Settings that may differ when a run is resumed: they change how long or how
# chattily the run goes on, not what it computes at a given step (schedule:
# what a change of steps does to the LR, schedule.py).
RESUMABLE_CHANGES = {"steps", "eval_every", "log_every", "checkpoint_every", "keep", "max_bad_steps",
                     "out", "name", "sample_prompt", "sample_tokens", "temperature", "top_k",
                     "device", "compile", "threads", "eval_batches", "tf32", "fused_adamw",
                     "sync_checkpoints", "schedule", "time_budget"}
# Of those, the ones that change the arithmetic (thread count, kernels, device):
# the resumed run trains on, but is no longer bit-identical to an uninterrupted one.
INEXACT_CHANGES = ("threads", "device", "compile", "tf32", "fused_adamw")


_FIELD_TYPES: dict[str, FieldType] = {name: field_type(hint)
                                      for name, hint in get_type_hints(TrainConfig).items() if name in FIELDS}


def field_types() -> dict[str, FieldType]:
    """Every setting's type, from the annotations (``typing.get_type_hints``)."""
    return dict(_FIELD_TYPES)


def flag_type(name: str) -> type:
    """The base type of a setting (bool, int, float or str): what its flag parses."""
    return _FIELD_TYPES[name].base


def choices(name: str) -> tuple[Any, ...] | None:
    """The allowed values of a setting with a closed set (a Literal), else None."""
    return _FIELD_TYPES[name].choices


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


CONFIG_MAX_BYTES = 1 << 20  # a TOML of train settings is a few hundred bytes


def load_toml(path: str | Path) -> dict[str, Any]:
    from .files import read_if_regular, regular_file_size

    p = Path(path)
    regular_file_size(p, "--config", "config file", "a .toml file")
    data = read_if_regular(p, CONFIG_MAX_BYTES)  # checked again on the open file: never blocks
    if data is None:
        raise UserError(f"config file {p} is larger than {CONFIG_MAX_BYTES // 1024} KB or no longer a regular "
                        "file; pass a .toml file of train settings")
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"config file {p} is not valid TOML ({e}); fix the syntax on that line") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {p} is not UTF-8 text; pass a TOML file to --config") from None
    except RecursionError:
        raise UserError(f"config file {p} nests too deeply to read; pass a .toml file of train settings") from None
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in FIELDS:
            raise UserError(f"unknown config key {key!r} in {p}; valid keys are the train flags, e.g. max_lr, n_layer")
        out[name] = value
    return out


def fitted_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """Defaults, for the cadence settings ``values`` does not give, that fit
    the run's length: a short run still warms up for less than it trains,
    evaluates (and samples) at least a few times and prints a few lines.
    The demo's 1300 steps give the plain defaults (260, 60, 10)."""
    steps = values.get("steps", FIELDS["steps"].default)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        return {}  # validate() names the bad --steps
    fitted: dict[str, Any] = {"eval_every": min(FIELDS["eval_every"].default, max(1, steps // 5)),
                              "warmup_steps": min(FIELDS["warmup_steps"].default, steps // 20),
                              "log_every": min(FIELDS["log_every"].default, max(1, steps // 20))}
    # The demo's lr suits its width; a wider model gets one scaled as 1/width
    # (as muP and nanoGPT's settings suggest: 6e-4 at 768), unless it was given.
    width = values.get("n_embd")
    if isinstance(width, int) and not isinstance(width, bool) and width > LR_BASE_WIDTH:
        fitted["max_lr"] = float(f"{FIELDS['max_lr'].default * LR_BASE_WIDTH / width:.2g}")
    # "def " suits the embedded Python corpus; other data gets a prompt of its own
    # (parts.build_parts takes it from the validation split, once the data is read).
    if values.get("data") is not None:
        fitted["sample_prompt"] = PROMPT_FROM_DATA
    return {k: v for k, v in fitted.items() if k not in values}


PROMPT_FROM_DATA = "\x00from the data"  # replaced by a line's start from the validation split


LR_BASE_WIDTH = 64  # the width the default max_lr was tuned at (benchmarks/bench_demo.py --sweep)


def make_config(values: dict[str, Any]) -> TrainConfig:
    """Build and validate a config from plain values (TOML and/or flags).

    ``values`` holds only the settings that were given; cadence settings left
    out get defaults that fit ``steps`` (``fitted_defaults``).  A resumed run
    passes its checkpoint's full config, so nothing is refitted there."""
    values = dict(values)
    for name, value in values.items():
        if name not in FIELDS:
            raise UserError(f"unknown config key {name!r}; valid keys are the train flags, e.g. max_lr, n_layer")
        if isinstance(value, str) and (parse := FIELDS[name].metadata.get("parse")) is not None:
            try:  # a TOML duration ("10m"), as the flag takes it
                values[name] = value = parse(value)
            except ValueError as e:
                raise UserError(f"config key {name!r}: {e}; e.g. {name} = \"10m\"") from None
        _check_type(name, value)
        if _FIELD_TYPES[name].base is float and isinstance(value, int):
            values[name] = _as_float(name, value)
    values = {**preset_values(values, FIELDS["steps"].default), **values}  # a preset fills in what was not given
    cfg = TrainConfig(**{**fitted_defaults(values), **values})
    if cfg.top_k == 0:
        cfg.top_k = None
    validate(cfg)
    return cfg


def _as_float(name: str, value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        raise UserError(f"{_flag(name)} {value} is too large; e.g. {name} = {FIELDS[name].default!r}") from None


def _check_type(name: str, value: Any) -> None:
    ft = _FIELD_TYPES[name]
    if value is None:
        if ft.optional:
            return
        raise UserError(f"config key {name!r} cannot be empty; e.g. {name} = {_toml(FIELDS[name].default)}")
    want: tuple[type, ...] = (int, float) if ft.base is float else (ft.base,)
    if not isinstance(value, want) or (ft.base is not bool and isinstance(value, bool)):
        eg = ft.choices[-1] if ft.choices and FIELDS[name].default is None else FIELDS[name].default
        raise UserError(f"config key {name!r} must be {ft.base.__name__}, got {value!r}; e.g. {name} = {_toml(eg)}")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


# --- ranges -----------------------------------------------------------------------
# Every numeric setting's range is bounds.BOUNDS: flags, TOML, live changes and
# checkpoints read back are all checked against that one table.

MAX_SAMPLE_TOKENS = BOUNDS["sample_tokens"].hi
MAX_THREADS = BOUNDS["threads"].hi
MIN_TEMPERATURE = BOUNDS["temperature"].lo
MAX_PARAMS = 10**13         # ~160 TB of weights, grads and AdamW state: no machine trains it
SEED_RANGE = (BOUNDS["seed"].lo, BOUNDS["seed"].hi)
_EXAMPLES = {"min_lr": 1e-4, "vocab_size": 65536, "threads": 4, "time_budget": "10m"}  # for error messages, where the default is None
_FIXES = {  # the fix a range error names, where "pass e.g. --flag DEFAULT" is not the best one
    "checkpoint_every": "leave it out to save at each eval",
    "top_k": "pass 0 to sample from all tokens",
    "weight_decay": "pass e.g. --weight-decay 0.1 (0 disables)",
    "grad_clip": "pass e.g. --grad-clip 1.0 (0 disables)",
    "threads": f"pass at most the machine's cores ({os.cpu_count()}), or leave it out",
}
# Cross-field rules, (a, b): a <= b.  min_lr None means 10% of max_lr, which always holds.
ORDERED = (("warmup_steps", "steps"), ("min_lr", "max_lr"))


def range_problem(name: str, v: Any) -> str | None:
    """Why ``v`` is out of ``name``'s range, as a whole message naming the
    flag and the fix, or None.  The bound named is ``bounds.BOUNDS[name]``."""
    why = problem(name, v)
    if why is None:
        return None
    flag = _flag(name)
    eg = FIELDS[name].default if FIELDS[name].default is not None else _EXAMPLES.get(name)
    fix = _FIXES.get(name, f"pass e.g. {flag} {eg}")
    return f"{flag} {why}, got {_shown(v)}; {fix}"


def _shown(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:40] + "…"


def validate(c: TrainConfig) -> None:
    """Every setting's range, as one-line ``UserError``s naming the fix."""
    def bad(msg: str) -> None:
        raise UserError(msg)

    # No setting means anything as NaN or infinity (and JSON cannot log them).
    for name, ft in _FIELD_TYPES.items():
        v = getattr(c, name)
        if ft.base is float and v is not None and not math.isfinite(v):
            eg = FIELDS[name].default if FIELDS[name].default is not None else _EXAMPLES[name]
            bad(f"{_flag(name)} must be a finite number, got {v}; pass e.g. {_flag(name)} {eg}")
        if ft.choices is not None and v not in ft.choices and not (v is None and ft.optional):
            bad(f"{_flag(name)} must be {_or_list(ft.choices)}, got {v!r}"
                + ("; or leave it out" if ft.optional else ""))
        if v is not None and name in BOUNDS and (msg := range_problem(name, v)) is not None:
            bad(msg)

    if c.warmup_steps > c.steps:
        bad(f"--warmup-steps ({c.warmup_steps}) is larger than --steps ({c.steps}); lower the warmup or train longer")
    if c.lr_floor > c.max_lr:
        bad(f"--min-lr ({c.lr_floor}) is above --max-lr ({c.max_lr}); the floor must not exceed the peak")
    if c.n_embd % c.n_head:
        bad(f"--n-head ({c.n_head}) does not divide --n-embd ({c.n_embd}); pick a width that is a multiple of the heads")
    if not c.sample_prompt:
        bad("--sample-prompt is empty; the sample needs at least one token to start from, e.g. --sample-prompt 'def '")
    if (why := spec_problem(c.tokenizer)) is not None:
        bad(f"--tokenizer {why}, got {_shown(c.tokenizer)}; pass e.g. --tokenizer bpe:4096, or leave it out for bytes")
    if not c.text_field or not c.text_field.isprintable() or len(c.text_field) > 200:
        bad(f"--text-field must be a field name, got {_shown(c.text_field)}; pass e.g. --text-field text")
    for name in ("data", "out", "init_from"):
        if getattr(c, name) == "":
            bad(f"{_flag(name)} is empty; pass a path, or leave {_flag(name)} out for the default")
        if "\x00" in (getattr(c, name) or ""):  # a TOML string may hold one; no path can
            bad(f"{_flag(name)} holds a NUL byte ({_shown(getattr(c, name))}), which no path can; pass the path without it")
    if c.name is not None and c.out is None:  # the folder is outputs/NAME: refused before any window or load
        checked_folder_name(c.name)
    n = estimate_params(c, c.vocab_size or 2)
    if n > MAX_PARAMS:
        bad(f"the model would have about {n:.1e} parameters (--n-layer {c.n_layer}, --n-embd {c.n_embd}), "
            f"more than any machine can train; lower --n-embd or --n-layer")


def setting_problem(c: TrainConfig, name: str, v: Any) -> str | None:
    """Why ``name`` = ``v`` may not replace ``c``'s value while the run trains
    ("must be at least warmup_steps (100)"), or None: its range, the rules
    between settings (``ORDERED``), and then every other rule of ``validate``,
    so that no accepted change leaves settings a resume would refuse."""
    why = problem(name, v)
    if why is not None:
        return why
    for low, high in ORDERED:
        if name == high and getattr(c, low) is not None and v < getattr(c, low):
            return f"must be at least {low} ({number(getattr(c, low))})"
        if name == low and v > getattr(c, high):
            return f"must be at most {high} ({number(getattr(c, high))})"
    try:
        validate(dataclasses.replace(c, **{name: v}))
    except UserError as e:
        return f"would leave settings a resume refuses ({e})"
    return None


def estimate_params(c: TrainConfig, vocab_size: int) -> int:
    """Parameters of the GPT this config builds (tied head; biases and
    LayerNorms left out): 12·n_layer·n_embd² + vocab·n_embd + context·n_embd."""
    return (12 * c.n_layer * c.n_embd ** 2 + vocab_size * c.n_embd + c.context_length * c.n_embd)

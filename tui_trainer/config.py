"""Run configuration: one dataclass, the single source of every knob's name.

CLI flags (``--max-lr``) and TOML keys (``max_lr`` or ``max-lr``) are derived
from these field names, so the two can never drift apart.  ``validate`` turns
every impossible combination into a one-line ``UserError`` naming the fix.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class UserError(Exception):
    """Bad input from the person at the keyboard: shown as one ``error:`` line."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    # The defaults are the demo (`tui-trainer` with no arguments): tuned for the
    # lowest val loss in ~30 s of training on a 2-core CPU, ~35 s in all with
    # evals and samples.  A 2 x 64 x 64 model at lr 1e-2 sees ~2.7 M bytes in
    # that time; wider or deeper shapes learn more per byte but see too few
    # (sweep and figures: benchmarks/bench_demo.py --sweep).
    # data
    data: str | None = _f(None, "training text (any file, byte-level) or a nanoGPT .bin of uint16 tokens; default: the embedded corpus")
    vocab_size: int | None = _f(None, "vocabulary size of a .bin token file (default 65536 for uint16 .bin; 256 for text)")
    val_fraction: float = _f(0.1, "fraction of the data held out for validation (taken from the end)")
    # run folder
    out: str | None = _f(None, "run folder to create (default outputs/<fresh name>); an existing run is never overwritten")
    name: str | None = _f(None, "run name (default: a fresh timestamped name)")
    # length and cadence
    steps: int = _f(1300, "optimizer steps to train")
    eval_every: int = _f(260, "run evaluate_model and print a sample every K steps")
    eval_batches: int = _f(20, "validation batches in the fixed eval slice")
    log_every: int = _f(10, "headless: print a loss line every N steps")
    checkpoint_every: int | None = _f(None, "save a checkpoint every N steps (default: at each eval)")
    keep: int = _f(2, "older step checkpoints to keep besides latest and best")
    max_bad_steps: int = _f(5, "consecutive NaN/inf steps before the run pauses (dashboard) or stops (headless)")
    # model
    context_length: int = _f(64, "tokens of context (block size)")
    n_layer: int = _f(2, "transformer blocks")
    n_head: int = _f(4, "attention heads per block")
    n_embd: int = _f(64, "model width")
    dropout: float = _f(0.0, "dropout probability")
    bias: bool = _f(True, "bias in Linear and LayerNorm layers")
    # optimisation
    batch_size: int = _f(32, "sequences per step")
    max_lr: float = _f(1e-2, "peak learning rate after warmup")
    min_lr: float | None = _f(None, "learning-rate floor of the cosine decay (default 10%% of max_lr)")
    warmup_steps: int = _f(60, "linear warmup steps")
    weight_decay: float = _f(0.1, "AdamW weight decay for matrices and embeddings")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.99, "AdamW beta2")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 disables)")
    seed: int = _f(1337, "random seed")
    # sampling
    sample_prompt: str = _f("def ", "prompt for the sample printed at each eval")
    sample_tokens: int = _f(200, "tokens to generate per sample")
    temperature: float = _f(0.8, "sampling temperature")
    top_k: int | None = _f(20, "sample only from the k most likely tokens (0 or none: all)")
    # hardware
    device: str = _f("auto", "auto, cpu, cuda, cuda:N or mps")
    dtype: str = _f("auto", "auto, fp32, bf16 or fp16 (autocast); auto: bf16 on a CUDA GPU that has it, fp16 + grad scaler on one that does not, fp32 on CPU")
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
# chattily the run goes on, not what it computes at a given step.
RESUMABLE_CHANGES = {"steps", "eval_every", "log_every", "checkpoint_every", "keep", "max_bad_steps",
                     "out", "name", "sample_prompt", "sample_tokens", "temperature", "top_k",
                     "device", "compile", "threads", "eval_batches", "tf32", "fused_adamw"}


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {p} not found; check the --config path")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"config file {p} is not valid TOML ({e}); fix the syntax on that line") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {p} is not UTF-8 text; pass a TOML file to --config") from None
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in FIELDS:
            raise UserError(f"unknown config key {key!r} in {p}; valid keys are the train flags, e.g. max_lr, n_layer")
        out[name] = value
    return out


def make_config(values: dict[str, Any]) -> TrainConfig:
    """Build and validate a config from plain values (TOML and/or flags)."""
    for name, value in values.items():
        if name not in FIELDS:
            raise UserError(f"unknown config key {name!r}; valid keys are the train flags, e.g. max_lr, n_layer")
        _check_type(name, value)
    cfg = TrainConfig(**values)
    if cfg.top_k == 0:
        cfg.top_k = None
    validate(cfg)
    return cfg


def _check_type(name: str, value: Any) -> None:
    if value is None:
        return
    default = FIELDS[name].default
    ann = str(FIELDS[name].type)
    want: tuple[type, ...]
    if "bool" in ann:
        want = (bool,)
    elif "int" in ann:
        want = (int,)
    elif "float" in ann:
        want = (int, float)
    else:
        want = (str,)
    if not isinstance(value, want) or (bool not in want and isinstance(value, bool)):
        kind = want[-1].__name__
        raise UserError(f"config key {name!r} must be {kind}, got {value!r}; e.g. {name} = {default!r}")


def validate(c: TrainConfig) -> None:
    def bad(msg: str) -> None:
        raise UserError(msg)

    if c.steps <= 0:
        bad(f"--steps must be positive, got {c.steps}; pass e.g. --steps 1000")
    for name in ("eval_every", "eval_batches", "log_every", "batch_size", "context_length",
                 "n_layer", "n_head", "n_embd", "sample_tokens"):
        v = getattr(c, name)
        if v <= 0:
            bad(f"--{name.replace('_', '-')} must be positive, got {v}")
    if c.checkpoint_every is not None and c.checkpoint_every <= 0:
        bad(f"--checkpoint-every must be positive, got {c.checkpoint_every}")
    if c.keep < 0 or c.max_bad_steps <= 0:
        bad("--keep must be >= 0 and --max-bad-steps > 0")
    if c.warmup_steps < 0:
        bad(f"--warmup-steps must be >= 0, got {c.warmup_steps}")
    if c.warmup_steps > c.steps:
        bad(f"--warmup-steps ({c.warmup_steps}) is larger than --steps ({c.steps}); lower the warmup or train longer")
    if c.max_lr <= 0:
        bad(f"--max-lr must be positive, got {c.max_lr}")
    if c.min_lr is not None and c.min_lr < 0:
        bad(f"--min-lr must be >= 0, got {c.min_lr}")
    if c.lr_floor > c.max_lr:
        bad(f"--min-lr ({c.lr_floor}) is above --max-lr ({c.max_lr}); the floor must not exceed the peak")
    if c.n_embd % c.n_head:
        bad(f"--n-head ({c.n_head}) does not divide --n-embd ({c.n_embd}); pick a width that is a multiple of the heads")
    if not 0.0 <= c.dropout < 1.0:
        bad(f"--dropout must be in [0, 1), got {c.dropout}")
    if not 0.0 < c.val_fraction < 1.0:
        bad(f"--val-fraction must be between 0 and 1, got {c.val_fraction}")
    if c.weight_decay < 0 or c.grad_clip < 0:
        bad("--weight-decay and --grad-clip must be >= 0")
    if c.temperature <= 0:
        bad(f"--temperature must be positive, got {c.temperature}")
    if c.top_k is not None and c.top_k < 0:
        bad(f"--top-k must be >= 0, got {c.top_k}")
    if c.dtype not in ("auto", "fp32", "bf16", "fp16"):
        bad(f"--dtype must be auto, fp32, bf16 or fp16, got {c.dtype!r}")
    if c.vocab_size is not None and not 2 <= c.vocab_size <= 2**32:
        bad(f"--vocab-size must be at least 2, got {c.vocab_size}")
    if c.threads is not None and c.threads <= 0:
        bad(f"--threads must be positive, got {c.threads}")

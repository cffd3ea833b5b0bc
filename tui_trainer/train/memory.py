"""Memory a run needs, estimated from its config before anything is built:
a model that clearly cannot fit is refused with one line instead of an
allocator traceback (or the kernel's OOM killer) halfway through."""
from __future__ import annotations

import os

from ..config import TrainConfig, UserError, estimate_params  # noqa: F401 (re-exported)

BYTES_PER_PARAM = 16  # fp32 weights (4) + gradients (4) + AdamW's two moments (8)


def estimate_memory(c: TrainConfig, vocab_size: int) -> tuple[int, int]:
    """(bytes for weights + gradients + AdamW state, a lower bound on the
    bytes of one training step's activations) in fp32."""
    tokens = c.batch_size * c.context_length
    # Each block keeps at least ~8 activations of width n_embd per token for
    # backward (it keeps more); the logits and their gradient are 2 x vocab.
    activations = 4 * tokens * (c.n_embd * (1 + 8 * c.n_layer) + 2 * vocab_size)
    return BYTES_PER_PARAM * estimate_params(c, vocab_size), activations


def total_memory() -> int | None:
    """This machine's RAM in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def check_fits(c: TrainConfig, vocab_size: int, device_type: str = "cpu", *,
               processes: int = 1, total_bytes: int | None = None) -> None:
    """Refuse, with one line, a model that clearly cannot fit in this
    machine's memory when it trains on the CPU.  Call it once the vocabulary
    is known (after loading the data) and before building the model.
    ``processes``: CPU ranks on this machine, each holding a copy.  Other
    devices are not checked (their memory is not RAM)."""
    if device_type != "cpu":
        return
    total = total_memory() if total_bytes is None else total_bytes
    if not total:
        return
    state, acts = estimate_memory(c, vocab_size)
    need = (state + acts) * processes
    if need <= total:
        return
    n = estimate_params(c, vocab_size)
    # Activations are one micro-batch's: --grad-accum keeps the tokens per step in less of them.
    fix = ("lower --n-embd or --n-layer" if state >= acts else
           "lower --batch-size (raise --grad-accum to keep the tokens per step) or --context-length")
    each = " per process" if processes > 1 else ""
    raise UserError(f"this run needs at least {_size(need)} of memory{each and f' ({processes} processes)'} "
                    f"({n:.2g} parameters x {BYTES_PER_PARAM} bytes for weights, gradients and AdamW state = "
                    f"{_size(state * processes)}, plus {_size(acts * processes)} of activations), but this machine "
                    f"has {_size(total)}; {fix}")


SAID_FROM = 1 << 30  # a CPU run that needs this much says how much on its first line


def memory_note(c: TrainConfig, vocab_size: int, device_type: str = "cpu", *,
                processes: int = 1, total_bytes: int | None = None) -> str | None:
    """A CPU run's memory estimate, for its first line when it is 1 GiB or
    more (a preset on a CPU), as check_fits counts it; None otherwise."""
    if device_type != "cpu":
        return None
    state, acts = estimate_memory(c, vocab_size)
    if (state + acts) * processes < SAID_FROM:
        return None
    total = total_memory() if total_bytes is None else total_bytes
    of = f" of this machine's {_size(total)}" if total else ""
    each = f", {processes} processes" if processes > 1 else ""
    return (f"memory: at least {_size((state + acts) * processes)}{of} ({_size(state * processes)} weights, "
            f"gradients and AdamW state + {_size(acts * processes)} activations{each})")

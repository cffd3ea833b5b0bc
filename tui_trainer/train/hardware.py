"""Device, precision and speed switches, each falling back cleanly on CPU.

Every choice is made here, in one place, and reported in the run-start record
(``Hardware.describe``) so a log says what hardware path produced it.  Each
switch has a flag to turn it off and a reason when it is off:

- ``--dtype``: autocast precision.  ``auto`` is bf16 on a CUDA GPU that has
  it, fp16 with a grad scaler on one that does not, and fp32 on CPU.  On CPU,
  bf16 is a choice (``--dtype bf16``), not the default: on this product's
  2-core demo shape (2 x 64 x 64) it measured no faster (0.98x in a bare
  loop), though its loss matched fp32 (val 1.327 vs 1.336 after 2.7 M
  tokens).  Wider models gained 1.1-1.3x (4 x 128..256 x 128) in one survey
  on a shared, loaded machine: too noisy to switch the default on.
- ``--tf32``: TF32 matmuls on CUDA (Ampere and later); meaningless on CPU.
- ``--fused-adamw``: the fused AdamW kernel, on CUDA and (torch >= 2.4) CPU.
- ``--compile``: ``torch.compile`` of the model, opt-in.  The demo and most
  runs from this tool are minutes long: a cold compile costs 20-60 s, and on
  CPU it measured no faster.  Long GPU runs should pass ``--compile``; its
  cost is shown as a "compiling" status before the first step.
- CPU threads: ``--threads N`` (or ``OMP_NUM_THREADS``) pins the count;
  otherwise it follows the load between 1 and torch's default
  (``threads.ThreadGovernor``), which changes no number the run computes
  (``model.pin_gradient_threads``).  How threads wait is chosen before torch loads
  (``threads.py``).  Both are in ``describe``.

MFU: ``flops_per_token(cfg)`` (6N + 12 x layers x width x context) over
``peak_flops(device, dtype)``: a data sheet's dense figure for a GPU
(``GPU_PEAK_TFLOPS``), a measured matmul peak cached per machine for a CPU.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig, UserError
from ..files import read_if_regular
from .threads import describe_wait


@dataclass
class Hardware:
    device: torch.device
    dtype: str  # "fp32", "bf16", "fp16": the autocast dtype actually used
    fused_adamw: bool
    tf32: bool
    compile: bool
    notes: list[str] = field(default_factory=list)  # why a requested switch is off
    threads: int = 0  # torch's CPU threads (the most, when auto); 0: not reported (a GPU run)
    threads_auto: bool = False  # a threads.ThreadGovernor moves the count between 1 and ``threads``
    omp_wait: str = ""  # how those threads wait between regions (``threads.describe_wait``)

    @property
    def grad_scaler(self) -> bool:
        """fp16 needs loss scaling to keep small gradients from flushing to zero."""
        return self.dtype == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == "fp32":
            return contextlib.nullcontext()
        dt = torch.bfloat16 if self.dtype == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dt)

    def describe(self) -> str:
        extra = [self.dtype]
        if self.tf32:
            extra.append("tf32")
        if self.fused_adamw:
            extra.append("fused-adamw")
        if self.compile:
            extra.append("compiled")
        if self.threads_auto:
            extra.append(f"1-{self.threads} threads (auto)")
        elif self.threads:
            extra.append(f"{self.threads} thread{'s' if self.threads > 1 else ''}")
        if self.omp_wait:
            extra.append(self.omp_wait)
        text = f"{self.device} ({', '.join(extra)})"
        return text + "".join(f"; {n}" for n in self.notes)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown --device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for CUDA but no CUDA GPU is visible; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name} asked for MPS but it is not available; use --device cpu")
    return dev


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matmuls run in hardware, not emulated."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def pick_dtype(requested: str, device: torch.device, notes: list[str] | None = None) -> str:
    notes = notes if notes is not None else []
    if requested == "fp32":
        return "fp32"
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if requested == "auto":
            return "bf16" if bf16_ok else "fp16"
        if requested == "bf16" and not bf16_ok:
            notes.append("this GPU has no bf16: fp16 with a grad scaler instead")
            return "fp16"
        return requested
    if device.type == "cpu":
        # CPU autocast is opt-in: on the demo's shape it measured no faster
        # (benchmarks/bench_engine.py --survey; see the module docstring).
        if requested == "auto":
            return "fp32"
        if requested == "fp16":
            notes.append("fp16 autocast is not useful on CPU: bf16 instead")
        if not cpu_has_native_bf16():
            notes.append("this CPU has no native bf16 (AVX-512 BF16/AMX): expect it to be slower than fp32")
        return "bf16"
    # mps and others: autocast support varies; fp32 unless asked.
    return "fp32" if requested == "auto" else requested


def pick_tf32(requested: bool, device: torch.device) -> bool:
    return bool(requested and device.type == "cuda")


def pick_fused_adamw(requested: bool, device: torch.device) -> bool:
    # CPU has a fused AdamW kernel too (torch >= 2.4): on this tool's small
    # models it measured 2-3x faster than the default per-tensor loop, which
    # on CPU is the default (foreach is a CUDA default only).
    return bool(requested and device.type in _fused_adamw_devices())


def _fused_adamw_devices() -> list[str]:
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # older torch: fused AdamW is a CUDA kernel only
        return ["cuda"]
    return list(_get_fused_kernels_supported_devices())


def pick_compile(requested: bool, device: torch.device, notes: list[str] | None = None) -> bool:
    notes = notes if notes is not None else []
    if not requested:
        return False
    try:
        import torch._dynamo

        supported = torch._dynamo.is_dynamo_supported()
    except Exception:  # an exotic build without dynamo
        supported = False
    if not supported:
        notes.append("torch.compile is not supported on this Python/platform: running eagerly")
        return False
    if device.type == "cuda" and not _has_triton():
        notes.append("torch.compile needs Triton for CUDA and it is missing: running eagerly")
        return False
    if device.type == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        notes.append("torch.compile on CPU needs a C++ compiler and none is on PATH: running eagerly")
        return False
    return True


def _has_triton() -> bool:
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        return False
    return bool(has_triton())


def configure(cfg: TrainConfig) -> Hardware:
    device = pick_device(cfg.device)
    # --threads N (or OMP_NUM_THREADS) pins the count; otherwise, on CPU, a
    # threads.ThreadGovernor moves it with the load between steps.  Either way
    # the numbers are those of the full count (model.pin_gradient_threads).
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    notes: list[str] = []
    compile_ = pick_compile(cfg.compile, device, notes)
    auto = (device.type == "cpu" and not cfg.threads and not os.environ.get("OMP_NUM_THREADS")
            and not compile_ and torch.get_num_threads() > 1)
    tf32 = pick_tf32(cfg.tf32, device)
    if device.type == "cuda":
        # Set both ways so --no-tf32 also undoes a TF32 default from elsewhere.
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    return Hardware(
        device=device,
        dtype=pick_dtype(cfg.dtype, device, notes),
        fused_adamw=pick_fused_adamw(cfg.fused_adamw, device),
        tf32=tf32,
        compile=compile_,
        notes=notes,
        threads=torch.get_num_threads() if device.type == "cpu" else 0,
        threads_auto=auto,
        omp_wait=describe_wait() if device.type == "cpu" else "",
    )


# --- FLOPs, peaks and MFU ------------------------------------------------------

def count_params(n_layer: int, n_embd: int, vocab_size: int = 256, bias: bool = True) -> int:
    """``model.GPT.num_params()`` from the shape alone: the token table (tied
    to the head, so it does matmul work) and the blocks; position embeddings
    are left out, as they do none."""
    c = n_embd
    per_block = 12 * c * c + (2 * c if bias else c) * 2  # attention + MLP matrices, two LayerNorms
    if bias:
        per_block += 3 * c + c + 4 * c + c  # qkv, attention out, MLP in, MLP out
    return vocab_size * c + n_layer * per_block + (2 * c if bias else c)


def flops_per_token(shape: Any, n_params: int | None = None) -> float:
    """Training FLOPs per token: 6N for the matmuls of forward and backward,
    plus 12 x layers x width x context for attention's scores and weighted
    sum (PaLM, appendix B; nanoGPT's ``estimate_mfu``).  ``shape`` is a
    ``TrainConfig``, a ``GPTConfig`` or anything with ``n_layer``, ``n_embd``,
    ``context_length`` (and optionally ``vocab_size``, ``bias``); ``n_params``
    defaults to the count those imply (``count_params``)."""
    L, C, T = shape.n_layer, shape.n_embd, shape.context_length
    if n_params is None:
        n_params = count_params(L, C, getattr(shape, "vocab_size", None) or 256, getattr(shape, "bias", True))
    return 6.0 * n_params + 12.0 * L * C * T


# Dense (no sparsity) tensor-core peaks, TFLOP/s: (bf16 or fp16, fp32 without
# tensor cores).  TF32 is half the bf16 figure on every GPU here that has it.
# Data-sheet figures for the SXM parts unless named; matched as whole words
# against torch.cuda.get_device_name() in this order, specific names first.
GPU_PEAK_TFLOPS: list[tuple[str, float, float]] = [
    ("GH200", 989.0, 67.0),
    ("H200", 989.0, 67.0),
    ("H100 PCIe", 756.0, 51.0),
    ("H100 NVL", 835.0, 60.0),
    ("H100", 989.0, 67.0),
    ("H800", 989.0, 67.0),
    ("H20", 148.0, 44.0),
    ("B200", 2250.0, 80.0),
    ("A100", 312.0, 19.5),
    ("A800", 312.0, 19.5),
    ("A10", 125.0, 31.2),
    ("L40S", 362.0, 91.6),
    ("L40", 181.0, 90.5),
    ("L4", 121.0, 30.3),
    ("RTX 4090", 165.0, 82.6),
    ("RTX 3090", 71.0, 35.6),
    ("V100", 125.0, 15.7),  # fp16 (no bf16)
    ("T4", 65.0, 8.1),  # fp16 (no bf16)
    ("MI300X", 1307.0, 163.4),
    ("MI250X", 383.0, 47.9),
]


def gpu_peak_flops(name: str, dtype: str = "bf16", tf32: bool = True) -> float | None:
    """The data-sheet peak of a GPU by its name, in FLOP/s; None when unknown."""
    for key, low, fp32 in GPU_PEAK_TFLOPS:
        if re.search(rf"\b{re.escape(key)}\b", name, re.IGNORECASE):
            if dtype in ("bf16", "fp16"):
                return low * 1e12
            return (low / 2 if tf32 and key not in ("V100", "T4") else fp32) * 1e12
    return None


PEAK_CACHE_MAX = 1 << 20  # bytes: a cache of peaks is a few lines; anything larger is not ours


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tui-trainer"


def measure_matmul_flops(n: int = 512, dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """FLOP/s of an n x n matmul on the CPU, the best of a few: a practical
    peak (512 reaches what 1024 and 2048 do, in a few milliseconds)."""
    # Its own generator: drawing from torch's global one at a run's start
    # would shift every random number after it (dropout, sampling), and a
    # resumed run, which restores that state first, would no longer be exact.
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    a @ b  # the kernel's first call picks its path and warms the caches
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / max(best, 1e-9)


def cpu_peak_flops(dtype: str = "fp32", *, measure: bool = True) -> float:
    """This machine's CPU matmul peak at torch's current thread count: the
    highest ever measured, kept in ``~/.cache/tui-trainer/peak-flops.json``
    under the host, CPU, threads, dtype and torch version.  Each call (a
    run's start, before it trains) measures again, a few milliseconds, and
    keeps the higher: a measurement that a busy neighbour slowed never
    lowers the peak, and one taken on a busy machine is raised by the next
    idle start (a peak measured low made MFU read over 100%).
    ``measure=False`` reads the cache only (measuring when it has nothing)."""
    tdt = torch.bfloat16 if dtype in ("bf16", "fp16") else torch.float32
    key = "|".join([platform.node(), _cpu_model(), f"{torch.get_num_threads()} threads", str(tdt),
                    f"torch {torch.__version__}"])
    path = cache_dir() / "peak-flops.json"
    raw = read_if_regular(path, PEAK_CACHE_MAX)  # a FIFO or a device there must not hang the start
    try:
        cached = json.loads(raw) if raw is not None else {}
        if not isinstance(cached, dict):
            cached = {}
    except (ValueError, RecursionError):
        cached = {}
    old = cached.get(key)
    old = float(old) if isinstance(old, (int, float)) and 0 < old < 1e18 else 0.0
    if old and not measure:
        return old
    value = max(old, measure_matmul_flops(dtype=tdt))
    if value == old:
        return old
    cached[key] = value
    if raw is None and (path.exists() or path.is_symlink()):
        return value  # something that is not our cache file holds its name: leave it be
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(cached, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: measured again next time
    return value


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_flops(device: torch.device | str, dtype: str = "fp32", tf32: bool = True) -> float | None:
    """The peak FLOP/s an MFU figure is measured against: a GPU's data sheet
    (``GPU_PEAK_TFLOPS``; None for a GPU not in the table) or the CPU's
    measured, cached matmul peak (``cpu_peak_flops``)."""
    device = torch.device(device)
    if device.type == "cuda":
        return gpu_peak_flops(torch.cuda.get_device_name(device), dtype, tf32)
    if device.type == "cpu":
        return cpu_peak_flops(dtype)
    return None


def mfu(tokens_per_sec: float, flops_per_tok: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: the share of the peak the model's own FLOPs use."""
    if not peak or tokens_per_sec <= 0:
        return None
    return tokens_per_sec * flops_per_tok / peak

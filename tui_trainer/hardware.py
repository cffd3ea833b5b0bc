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
"""
from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field

import torch

from .config import TrainConfig, UserError


@dataclass
class Hardware:
    device: torch.device
    dtype: str  # "fp32", "bf16", "fp16": the autocast dtype actually used
    fused_adamw: bool
    tf32: bool
    compile: bool
    notes: list[str] = field(default_factory=list)  # why a requested switch is off

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
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    notes: list[str] = []
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
        compile=pick_compile(cfg.compile, device, notes),
        notes=notes,
    )

"""Device, precision and speed switches, each falling back cleanly on CPU.

Every choice is made here, in one place, and reported in the run-start record
so a log says what hardware path produced it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .config import TrainConfig, UserError


@dataclass
class Hardware:
    device: torch.device
    dtype: str  # "fp32", "bf16", "fp16": the autocast dtype actually used
    fused_adamw: bool
    tf32: bool
    compile: bool

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
        return f"{self.device} ({', '.join(extra)})"


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


def pick_dtype(requested: str, device: torch.device) -> str:
    if requested == "fp32":
        return "fp32"
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if requested == "auto":
            return "bf16" if bf16_ok else "fp16"
        if requested == "bf16" and not bf16_ok:
            return "fp16"  # bf16 asked for but missing: fp16 + grad scaler is the fallback
        return requested
    if device.type == "cpu":
        # CPU autocast is opt-in: on small models it is no faster, and it
        # changes the numbers.  bf16 is honoured when asked; fp16 is not a
        # CPU autocast type worth having, so it falls back to bf16.
        if requested == "auto":
            return "fp32"
        return "bf16"
    return "fp32" if requested == "auto" else requested


def configure(cfg: TrainConfig) -> Hardware:
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cuda = device.type == "cuda"
    tf32 = bool(cfg.tf32 and cuda)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    return Hardware(
        device=device,
        dtype=pick_dtype(cfg.dtype, device),
        fused_adamw=bool(cfg.fused_adamw and cuda),
        tf32=tf32,
        compile=bool(cfg.compile),
    )

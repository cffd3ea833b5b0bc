"""Optimisation: the AdamW decay split and the warmup + cosine schedule."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn


def build_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: matrices and embedding tables decay; LayerNorm scales
    and every bias do not.

    Decaying a LayerNorm scale slowly drives it to zero and breaks the
    normalisation; decaying a bias is harmless but pointless.  Tensors of two
    or more dimensions are exactly the matrices and tables.  ``named_parameters``
    yields a tied tensor once, so nothing is counted twice.
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


# The lesson's exercise 1 calls the split by this name.
weight_decay_groups = build_param_groups


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int, max_lr: float, min_lr: float) -> float:
    """Learning rate for 0-based ``step``: a linear ramp from near zero to
    ``max_lr`` over ``warmup_steps``, then a cosine down to the ``min_lr``
    floor at ``total_steps``, held there after."""
    if step < warmup_steps:
        return max_lr * (step + 1) / (warmup_steps + 1)
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def make_optimizer(model: nn.Module, weight_decay: float, lr: float, betas: tuple[float, float],
                   fused: bool) -> torch.optim.AdamW:
    return torch.optim.AdamW(build_param_groups(model, weight_decay), lr=lr, betas=betas, fused=fused or None)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr

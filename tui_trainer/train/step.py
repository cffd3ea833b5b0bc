"""The forward and backward of one optimizer step: ``grad_accum``
micro-batches, their gradients summed in place.

Each micro-batch's loss is divided by their count before its backward, so the
accumulated gradient is that of their mean loss: ``--grad-accum 4
--batch-size 8`` trains on what ``--batch-size 32`` would, in a quarter of the
activation memory.  Under DDP the gradients are all-reduced once per step, in
the last micro-batch's backward (``no_sync`` on the others), as nanoGPT does.
What follows the backward (clipping, the NaN guard, the optimizer step, the LR
schedule) is the loop's, once per optimizer step.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, ContextManager

import torch
import torch.nn as nn

from .lesson import calc_loss_batch


def ddp_of(model: nn.Module) -> nn.parallel.DistributedDataParallel | None:
    """The DDP wrapper inside ``model`` (itself, or under torch.compile's), else None."""
    inner = getattr(model, "_orig_mod", model)
    return inner if isinstance(inner, nn.parallel.DistributedDataParallel) else None


def accumulate_gradients(model: nn.Module, sampler: Any, micro_batches: int, scaler: Any,
                         autocast: Callable[[], ContextManager[Any]],
                         loss_fn: Callable[..., torch.Tensor] = calc_loss_batch) -> tuple[torch.Tensor, int]:
    """Draw ``micro_batches`` batches from ``sampler`` and add each one's
    gradient (of its loss / ``micro_batches``, scaled by ``scaler``) into the
    parameters' ``.grad``.  Returns (the mean loss over the micro-batches, on
    the device and detached: no host sync here; the tokens this process saw).
    One micro-batch is exactly the plain step: no division, no ``no_sync``.
    ``loss_fn`` is the loop's (the engine passes its public ``calc_loss_batch``,
    so whoever replaces that one replaces the loss the steps train on)."""
    ddp = ddp_of(model)
    total: torch.Tensor | None = None
    tokens = 0
    for i in range(micro_batches):
        x, y = sampler.next()
        last = i == micro_batches - 1
        with nullcontext() if ddp is None or last else ddp.no_sync():
            with autocast():
                loss = loss_fn(model, x, y)
            scaler.scale(loss / micro_batches if micro_batches > 1 else loss).backward()
        total = loss.detach() if total is None else total + loss.detach()
        tokens += x.numel()
    assert total is not None, "micro_batches must be at least 1"
    return (total / micro_batches if micro_batches > 1 else total), tokens

"""The lesson's functions, under the lesson's names: ``calc_loss_batch``,
``evaluate_model`` and ``generate_and_print_sample`` (``engine`` re-exports
them, as the lesson imports them from there).  Plain functions of a model and
batches: any loop can use them."""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
from torch.nn import functional as F

from .data import ByteTokenizer
from .model import GPT


def calc_loss_batch(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Mean next-token cross entropy of one batch.

    Logits (B, T, V) and targets (B, T) are flattened to (B*T, V) and (B*T,);
    the targets must already be the inputs shifted by one.
    """
    if device is not None:
        inputs, targets = inputs.to(device), targets.to(device)
    logits = model(inputs)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


@torch.no_grad()
def evaluate_model(model: nn.Module, val_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                   max_batches: int | None = None, *, device: torch.device | str | None = None,
                   autocast: Callable[[], Any] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> float:
    """Mean loss over (at most ``max_batches`` of) fixed batches: no grad, in
    eval mode (no dropout), and the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float32)
    n = 0
    try:
        for i, (x, y) in enumerate(val_batches):
            if max_batches is not None and i >= max_batches:
                break
            if should_stop is not None and should_stop():
                break
            if autocast is not None:
                with autocast():
                    loss = calc_loss_batch(model, x, y, device)
            else:
                loss = calc_loss_batch(model, x, y, device)
            # Accumulate on the device: one host sync at the end, not per batch.
            total = total.to(loss.device) + loss.detach().float()
            n += 1
    finally:
        model.train(was_training)
    return total.item() / n if n else math.nan


def generate_and_print_sample(model: GPT, prompt: str, max_new_tokens: int, *,
                              tokenizer: Any = None, temperature: float = 1.0, top_k: int | None = None,
                              device: torch.device | str | None = None,
                              generator: torch.Generator | None = None,
                              print_fn: Callable[[str], Any] | None = print,
                              should_stop: Callable[[], bool] | None = None) -> str:
    """Continue ``prompt`` by ``max_new_tokens`` tokens, print it (unless
    ``print_fn`` is None) and return the whole text, prompt included.
    Without a ``tokenizer`` the model is taken to be byte-level.  A compiled
    or DDP-wrapped model generates with the plain module inside it: the
    sequence grows a token at a time, a new shape for a compiler each time."""
    tokenizer = tokenizer or ByteTokenizer()
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    was_training = model.training
    model.eval()
    try:
        device = device or next(model.parameters()).device
        idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=device)
        out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k,
                             generator=generator, should_stop=should_stop)
    finally:
        model.train(was_training)
    text = tokenizer.decode(out[0].tolist())
    if print_fn is not None:
        print_fn(text.replace("\n", " "))
    return text

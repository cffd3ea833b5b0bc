"""The loop's parts: device, process group, seeds, data, model, optimizer,
sampler and the fixed eval slices, assembled once by ``build_parts``.

Every fallible preparation happens here and nothing is written, so bad input
fails before a run folder exists.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from . import distributed
from ..text.bits_per_byte import bits_per_byte, bytes_per_token, eval_targets
from ..config import PROMPT_FROM_DATA, TrainConfig, UserError
from .data import BatchSampler, ByteTokenizer, Corpus, IdTokenizer, load_corpus, make_batches
from .distributed import Dist
from .hardware import Hardware, configure
from .memory import check_fits, memory_note
from .model import GPT, GPTConfig
from ..text.nanogpt import init_from
from .optim import make_optimizer


@dataclass
class Parts:
    """What a loop trains with, built once by ``build_parts``: every fallible
    preparation (device, data, model), none of which writes anything, so bad
    input fails before a run folder exists."""

    hw: Hardware
    dist: Dist
    corpus: Corpus
    model: GPT
    train_model: nn.Module  # the model as trained: DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    sampler: BatchSampler
    val_batches: list[tuple[torch.Tensor, torch.Tensor]]
    train_eval_batches: list[tuple[torch.Tensor, torch.Tensor]]
    val_bytes_per_token: float | None = None  # UTF-8 bytes per token of the val slice (bits_per_byte)

    def val_bpb(self, val_loss: float) -> float | None:
        """The val loss as bits per byte (None: the tokens have no text)."""
        return bits_per_byte(val_loss, self.val_bytes_per_token)


def build_parts(cfg: TrainConfig, hw: Hardware | None = None, dist: Dist | None = None,
                say: Any = None) -> Parts:
    """Device, process group (torchrun: the caller may have joined it and pass
    ``dist``), seeds, data, model, optimizer, sampler and the fixed eval slices;
    ``say`` gets the progress of tokenizing a corpus (stderr when None)."""
    hw = hw or configure(cfg)
    dist = dist or distributed.setup(hw)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    torch.manual_seed(cfg.seed)
    corpus = load_corpus(cfg, say)
    if cfg.sample_prompt == PROMPT_FROM_DATA:
        cfg.sample_prompt = prompt_from(corpus)  # kept in the config: the run_start and every checkpoint say it
    why = corpus.tokenizer.check(cfg.sample_prompt)
    if why is not None:  # refused here, before a run folder exists, not at the first eval
        raise UserError(f"--sample-prompt: {why}")
    check_fits(cfg, corpus.vocab_size, hw.device.type, processes=dist.world_size)
    if note := memory_note(cfg, corpus.vocab_size, hw.device.type, processes=dist.world_size):
        hw.notes.append(note)  # the run's first line says it (hw.describe)
    model_config = GPTConfig(vocab_size=corpus.vocab_size, context_length=cfg.context_length,
                             n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                             dropout=cfg.dropout, bias=cfg.bias)
    model = GPT(model_config).to(hw.device)
    if cfg.init_from and not (cfg.out and any(Path(cfg.out).glob("*.pt"))):  # a resume loads its own weights
        init_from(cfg.init_from, model, {"n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd,
                                         "block_size": cfg.context_length, "bias": cfg.bias,
                                         "vocab_size": corpus.vocab_size})
    ddp = dist.wrap(model)  # the model itself when there is one process
    optimizer = make_optimizer(model, cfg.weight_decay, cfg.max_lr, (cfg.beta1, cfg.beta2), fused=hw.fused_adamw)
    sampler = dist.sampler(corpus.train, cfg.batch_size, cfg.context_length, seed=cfg.seed, device=hw.device)

    # Both eval slices are cut once, here, and reused identically at every probe.
    # Data-parallel: cut with the global batch, each rank evaluates its rows.
    def cut(tokens: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        batches = dist.shard_batches(make_batches(tokens, cfg.batch_size * dist.world_size, cfg.context_length,
                                                  max_batches=cfg.eval_batches))
        return [(x.to(hw.device), y.to(hw.device)) for x, y in batches]

    targets = eval_targets(corpus.val, cfg.context_length, cfg.eval_batches * cfg.batch_size * dist.world_size)
    return Parts(hw=hw, dist=dist, corpus=corpus, model=model,
                 train_model=torch.compile(ddp) if hw.compile else ddp, optimizer=optimizer,
                 scaler=torch.amp.GradScaler(hw.device.type, enabled=hw.dtype == "fp16"),
                 sampler=sampler, val_batches=cut(corpus.val), train_eval_batches=cut(corpus.train),
                 val_bytes_per_token=bytes_per_token(corpus.tokenizer, targets))


def prompt_from(corpus: Corpus, length: int = 12) -> str:
    """A prompt that suits the data: the start of the first full line of the
    validation split (its first tokens, for a .bin of token ids)."""
    val = corpus.val
    head = [int(t) for t in val[: 1 << 14]]
    if isinstance(corpus.tokenizer, IdTokenizer):
        return corpus.tokenizer.decode(head[:4])
    if isinstance(corpus.tokenizer, ByteTokenizer):
        text = bytes(head).decode("utf-8", errors="ignore")
    else:  # a text tokenizer: its text, without the replacement marks of a cut character
        text = corpus.tokenizer.decode(head[:1 << 12]).replace("\ufffd", "")
    lines = [ln.strip() for ln in text.split("\n")[1:-1] if ln.strip()]
    start = next((ln for ln in lines if ln.isprintable()), text.strip() or "The ")
    cut = start[:length]
    return cut.rsplit(" ", 1)[0] + " " if " " in cut[1:] else cut

"""A GPT-2 style decoder, in the spirit of nanoGPT's model.py.

Token + position embeddings, pre-LayerNorm blocks of causal self-attention and
a GELU MLP, a final LayerNorm and an LM head tied to the token embedding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from .kv_cache import KVCache, OneToken, linear


@dataclass
class GPTConfig:
    vocab_size: int = 256
    context_length: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (``nn.LayerNorm``'s parameters, state-dict
    names and kernel), whose gradients can be kept independent of the CPU
    thread count in force.

    torch's fused CPU kernel sums the weight and bias gradients in one partial
    sum per thread, so their last bits follow ``torch.set_num_threads``; it is
    the only kernel of a training step that does (tests/test_threads.py).
    With ``gradient_threads`` set (``pin_gradient_threads``), the backward pass
    runs that kernel at that count whatever count is in force, so a run whose
    thread count moves with the load (``threads.ThreadGovernor``) computes
    the same numbers, bit for bit, as one pinned at ``gradient_threads``.  At
    that count, or unset, it is exactly ``F.layer_norm``."""

    def __init__(self, ndim: int, bias: bool = True, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None
        self.eps = eps
        self.gradient_threads: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.gradient_threads
        if n and x.device.type == "cpu" and torch.is_grad_enabled() and torch.get_num_threads() != n:
            return _LayerNormAtThreads.apply(x, self.weight, self.bias, self.eps, n)
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class _LayerNormAtThreads(torch.autograd.Function):
    """``F.layer_norm`` whose backward kernel runs at a given thread count:
    the same kernels and arguments as autograd's own, so the same bits."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, threads):  # type: ignore[override]
        out, mean, rstd = torch.native_layer_norm(x, weight.shape, weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.threads = threads
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight, bias, mean, rstd = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2]]
        before = torch.get_num_threads()
        torch.set_num_threads(ctx.threads)
        try:
            dx, dw, db = torch.ops.aten.native_layer_norm_backward(
                grad.contiguous(), x, weight.shape, mean, rstd, weight, bias, mask)
        finally:
            torch.set_num_threads(before)
        return dx, dw, db, None, None


def pin_gradient_threads(model: nn.Module, threads: int | None) -> None:
    """Sum every LayerNorm's weight and bias gradients at ``threads`` CPU
    threads, whatever count is in force (None: at the count in force)."""
    for m in model.modules():
        if isinstance(m, LayerNorm):
            m.gradient_threads = threads


def weights_finite(state: dict) -> bool:
    """Every weight of a trainer's checkpoint state (its ``model`` tensors)
    finite: one multi-tensor pass (the max-abs norm is NaN or inf exactly when
    a tensor holds one), ~3x faster than ``isfinite`` per tensor, which
    allocates a mask the size of each weight; on a GPU, one sync."""
    params = [t for t in state["model"].values() if t.is_floating_point()]
    if not params:
        return True
    norms = torch.stack([n.float() for n in torch._foreach_norm(params, math.inf)])
    return bool(torch.isfinite(norms).all())


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        # One projection for q, k and v: a single larger matmul beats three small ones.
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = linear(self.c_attn, x, cache).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        dropout_p = self.dropout if self.training else 0.0
        if cache is not None:  # generation: the earlier positions' keys and values are kept
            y = cache.attend(q, k, v, dropout_p)
        else:
            # SDPA picks a flash / memory-efficient kernel where one exists and never
            # materialises the T x T mask for is_causal.
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(linear(self.c_proj, y, cache))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        return self.dropout(linear(self.c_proj, self.gelu(linear(self.c_fc, x, cache)), cache))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        # Pre-LN: the residual stream is never normalised in place, which keeps
        # gradients well-scaled through depth without careful warmup.
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.mlp(self.ln_2(x), cache)
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.context_length, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: the input and output token spaces are the same, and
        # sharing saves vocab x width parameters.
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # GPT-2's scaled init: each residual projection adds to a stream summed
        # over 2 * n_layer branches, so shrink them to keep its variance flat.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings excluded by default, as they do
        no matmul work (the token table is tied to the head, so it stays)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx: torch.Tensor, cache: list[KVCache] | None = None) -> torch.Tensor:
        """Logits of shape (B, T, vocab) for token ids of shape (B, T).

        With ``cache`` (one ``KVCache`` per block, as ``generate`` keeps), ``idx``
        continues the positions the cache holds, the new keys and values are
        added to it, and only the last position's logits are made (B, 1, vocab)."""
        B, T = idx.size()
        start = cache[0].length if cache else 0
        if start + T > self.config.context_length:
            raise ValueError(f"sequence of {start + T} tokens exceeds context_length {self.config.context_length}")
        fixed = cache[0].fixed if cache and T == 1 and cache[0].k is not None else None
        # A fixed-shape step (kv_cache.OneToken) takes its position from the device, not the host.
        pos = fixed.pos if fixed is not None else torch.arange(start, start + T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache[i] if cache else None)
        if cache:
            x = x[:, -1:]
        return linear(self.lm_head, self.transformer.ln_f(x), cache[0] if cache else None)

    def flops_per_token(self) -> float:
        """Training FLOPs per token: ``hardware.flops_per_token`` (6N plus
        attention's 12 x layers x width x context), the one definition MFU uses."""
        from .hardware import flops_per_token

        return flops_per_token(self.config, self.num_params())

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 should_stop=None) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``idx`` (B, T).

        Each token is predicted from the last ``context_length`` tokens at
        positions 0.. (what ``self(idx[:, -context_length:])`` predicts).  The
        blocks' keys and values are kept (``kv_cache.KVCache``), so while the
        sequence fits the context a token costs one position (on a GPU, one
        replay of a CUDA graph: ``kv_cache.OneToken``); past it every position
        shifts, so the cropped window is computed afresh for each token
        (learned absolute positions: no cached key stays valid).
        ``generator`` keeps sampling off the global RNG, so printing a sample
        never changes the training run that follows it.
        """
        n = self.config.context_length
        cache = [KVCache(n) for _ in self.transformer.h]
        one_token: OneToken | None = None
        for _ in range(max_new_tokens):
            if should_stop is not None and should_stop():
                break
            if idx.size(1) > n:  # every position shifts: the cropped window afresh, as without a cache
                logits = self(idx[:, -n:])
            elif one_token is not None:
                logits = one_token(idx[:, -1:])  # the one new token, after the cached ones
            else:
                logits = self(idx, cache)
                one_token = OneToken(self, cache)  # on a GPU: at fixed shapes, a CUDA graph replayed
            logits = logits[:, -1, :].float() / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            probs = F.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1, generator=generator)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx

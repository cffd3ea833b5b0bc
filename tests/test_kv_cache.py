"""Generation with a KV cache (model.KVCache): the same logits and tokens as
recomputing the cropped window for every token, and never the compiled module."""
from __future__ import annotations

import random

import pytest
import torch
from torch.nn import functional as F

from tui_trainer.train.lesson import generate_and_print_sample
from tui_trainer.train.model import GPT, GPTConfig, KVCache


def make(ctx=8, n_layer=2, n_head=2, n_embd=16, vocab=32, dropout=0.0, bias=True, seed=0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, context_length=ctx, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                          dropout=dropout, bias=bias))
    # Larger weights than the init's: logits that differ from token to token.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model.eval()


@torch.no_grad()
def no_cache_generate(model: GPT, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    """The generation every sample used before the cache: the cropped window recomputed per token."""
    for _ in range(max_new_tokens):
        logits = model(idx[:, -model.config.context_length:])[:, -1, :].float() / temperature
        if top_k is not None:
            v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
            logits[logits < v[:, [-1]]] = -float("inf")
        idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def old_forward(model: GPT, idx):
    """The training forward as it was written before the cache existed."""
    B, T = idx.size()
    pos = torch.arange(T, dtype=torch.long, device=idx.device)
    x = model.transformer.drop(model.transformer.wte(idx) + model.transformer.wpe(pos))
    for block in model.transformer.h:
        a = block.attn
        h = block.ln_1(x)
        C = h.size(-1)
        q, k, v = a.c_attn(h).split(C, dim=2)
        q, k, v = (t.view(B, T, a.n_head, C // a.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=a.dropout if a.training else 0.0, is_causal=True)
        x = x + a.resid_dropout(a.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))
        x = x + block.mlp(block.ln_2(x))
    return model.lm_head(model.transformer.ln_f(x))


def test_next_token_logits_match_the_no_cache_path_at_every_position():
    """Prompts shorter than, as long as and longer than the context; samples
    that run past it; dropout > 0 (eval mode), no bias, several head counts."""
    rng = random.Random(7)
    for case in range(30):
        ctx = rng.choice([4, 8, 13])
        model = make(ctx=ctx, n_layer=rng.choice([1, 2, 3]), n_head=rng.choice([1, 2, 4]), n_embd=16,
                     dropout=rng.choice([0.0, 0.3]), bias=rng.choice([True, False]), seed=case)
        prompt_len = rng.choice([1, 2, ctx - 1, ctx, ctx + 3])
        new = rng.choice([1, ctx, 2 * ctx + 5])
        idx = torch.randint(0, 32, (rng.choice([1, 2]), prompt_len), generator=torch.Generator().manual_seed(case))
        seen: list[torch.Tensor] = []
        hook = model.register_forward_hook(lambda m, args, out: seen.append(out[:, -1].clone()))
        try:
            out = model.generate(idx, new, temperature=1.0, top_k=None,
                                 generator=torch.Generator().manual_seed(case))
        finally:
            hook.remove()
        assert out.shape == (idx.size(0), prompt_len + new) and len(seen) == new
        with torch.no_grad():
            for t, got in enumerate(seen):
                want = model(out[:, :prompt_len + t][:, -ctx:])[:, -1]
                torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, msg=f"case {case}, token {t}")


def test_greedy_and_seeded_sampling_give_the_tokens_they_gave_before():
    model = make(ctx=16, n_layer=2, n_head=4, n_embd=32, vocab=64, dropout=0.2, seed=3)
    prompt = torch.tensor([[1, 5, 9]])
    for kw in (dict(temperature=1.0, top_k=1), dict(temperature=0.8, top_k=20), dict(temperature=1.3, top_k=None)):
        for seed in range(3):
            a = model.generate(prompt, 40, generator=torch.Generator().manual_seed(seed), **kw)
            b = no_cache_generate(model, prompt, 40, generator=torch.Generator().manual_seed(seed), **kw)
            assert torch.equal(a, b), kw


def test_the_cache_takes_a_chunk_after_cached_positions():
    """Several new positions at once after cached ones (the causal mask offset)."""
    model = make(ctx=12, n_layer=2, n_head=2, seed=1)
    idx = torch.randint(0, 32, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(idx)
        for split in (1, 5, 11):
            cache = [KVCache(12) for _ in model.transformer.h]
            model(idx[:, :split], cache)
            last = model(idx[:, split:], cache)
            assert cache[0].length == 12
            torch.testing.assert_close(last[:, -1], full[:, -1], atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError):
            model(idx[:, :1], cache)  # the cache is full: no position left


def test_the_training_forward_is_unchanged_bit_for_bit_and_the_state_dict_too():
    model = make(ctx=16, n_layer=2, n_head=2, dropout=0.0, seed=2).train()
    names = list(model.state_dict())
    idx = torch.randint(0, 32, (3, 16), generator=torch.Generator().manual_seed(2))
    assert torch.equal(model(idx), old_forward(model, idx))
    model.eval()
    generate_and_print_sample(model, "ab", 30, print_fn=None, tokenizer=_Ids())
    assert list(model.state_dict()) == names  # the cache is no part of the model's state


class _Ids:
    """A tokenizer for a 32-token vocabulary."""

    def encode(self, s: str) -> list[int]:
        return [ord(c) % 32 for c in s]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(97 + i % 26) for i in ids)


def test_a_compiled_model_generates_with_its_plain_module():
    """Under --compile a sample never calls the compiled module: no compile
    per token (a new sequence length each time), the same text as eager."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    model = make(ctx=8, seed=4)
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    kw = dict(tokenizer=_Ids(), temperature=0.8, top_k=5, print_fn=None)
    text = generate_and_print_sample(compiled, "abc", 20, generator=torch.Generator().manual_seed(0), **kw)
    assert counter.frame_count == 0 and counter.op_count == 0
    assert text == generate_and_print_sample(model, "abc", 20, generator=torch.Generator().manual_seed(0), **kw)
    compiled(torch.zeros((1, 4), dtype=torch.long))  # the counter does count a call of the compiled module
    assert counter.frame_count == 1


def test_a_token_costs_one_position_until_the_window_is_full():
    model = make(ctx=16, seed=5)
    fed: list[int] = []
    hook = model.register_forward_pre_hook(lambda m, args: fed.append(args[0].size(1)))
    try:
        model.generate(torch.tensor([[1, 2, 3]]), 20, top_k=1)
    finally:
        hook.remove()
    # The prompt once, then one position per token up to 16 in all; past it the
    # positions shift, so each token refills the cropped window.
    assert fed == [3] + [1] * 13 + [16] * 6


def test_a_ddp_wrapped_model_generates_with_its_module(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    model = make(ctx=8, seed=6)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(model)
        kw = dict(tokenizer=_Ids(), top_k=1, print_fn=None)
        assert generate_and_print_sample(ddp, "abc", 12, **kw) == generate_and_print_sample(model, "abc", 12, **kw)
    finally:
        dist.destroy_process_group()


# --- the fixed-shape step a GPU replays as a CUDA graph (kv_cache.OneToken) ------

class RecordedOps:
    """A CUDA graph's semantics on the CPU: ``capture`` records every aten op
    the step calls, with its arguments as they were (scalars baked in, the
    very tensors referenced), without keeping its results; ``replay`` runs
    those ops again in order, writing each result into the tensor the
    capture produced, so later ops read fresh values, as a graph's kernels
    do in the memory they were captured with."""

    def __init__(self):
        self.captures = self.replays = 0

    def warm_up(self, fn):
        return fn()

    def capture(self, fn):
        from torch.utils._python_dispatch import TorchDispatchMode

        ops = []

        class Record(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                ops.append((func, args, kwargs or {}, out))
                return out

        with Record():
            out = fn()
        self.captures += 1

        def replay():
            self.replays += 1
            for func, args, kwargs, was in ops:
                got = func(*args, **kwargs)
                pairs = zip(was, got) if isinstance(was, (tuple, list)) else [(was, got)]
                for w, g in pairs:
                    if isinstance(w, torch.Tensor) and isinstance(g, torch.Tensor) and w is not g:
                        w.copy_(g)

        return replay, out


@pytest.mark.parametrize("graphs", [None, "recorded"], ids=["fixed, eager", "fixed, captured and replayed"])
def test_the_fixed_shape_step_gives_the_no_cache_logits(monkeypatch, graphs):
    """The GPU's step (token and position on the device, every position
    attended under a mask), run eagerly and replayed from one capture, on
    the CPU: the logits of the uncached path at every position, prompts of
    several lengths, samples past the context."""
    from functools import partial

    from tui_trainer.train import model as model_mod
    from tui_trainer.train.kv_cache import OneToken

    made, seen = [], []

    class Seen(OneToken):  # a replay calls no forward, so no forward hook sees its logits
        def __call__(self, token):
            out = super().__call__(token)
            seen.append(out[:, -1].clone())
            return out

    def one_token(*a, **k):
        made.append(Seen(*a, fixed=True, graphs=RecordedOps() if graphs else None, **k))
        return made[-1]

    def hook(m, args, out):  # the prompt's and the cropped windows' logits; the fixed step's are Seen's
        cache = args[1] if len(args) > 1 else None
        if not (cache and cache[0].fixed is not None and args[0].size(1) == 1):
            seen.append(out[:, -1].clone())

    monkeypatch.setattr(model_mod, "OneToken", one_token)
    rng = random.Random(11)
    for case in range(8):
        ctx = rng.choice([8, 13])
        model = make(ctx=ctx, n_layer=2, n_head=rng.choice([1, 2]), dropout=rng.choice([0.0, 0.3]),
                     bias=rng.choice([True, False]), seed=case)
        prompt_len, new = rng.choice([1, 3, ctx - 1]), rng.choice([ctx, 2 * ctx])
        idx = torch.randint(0, 32, (rng.choice([1, 2]), prompt_len), generator=torch.Generator().manual_seed(case))
        seen.clear()
        handle = model.register_forward_hook(hook)
        try:
            out = model.generate(idx, new, generator=torch.Generator().manual_seed(case))
        finally:
            handle.remove()
        assert len(seen) == new
        with torch.no_grad():
            for t, got in enumerate(seen):
                want = model(out[:, :prompt_len + t][:, -ctx:])[:, -1]
                torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, msg=f"case {case}, token {t}")
        if graphs and ctx - prompt_len >= 3:  # one eager token, one capture, the rest replayed
            g = made[-1].graphs
            assert (g.captures, g.replays) == (1, ctx - prompt_len - 1), (case, g.captures, g.replays)


def test_two_tokens_of_the_fixed_step_run_the_same_kernels_with_the_same_arguments():
    """What a replay needs: nothing the host knows about the position (a
    Python int) reaches an op; only tensors' contents differ between tokens."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from tui_trainer.train.kv_cache import KVCache, OneToken

    model = make(ctx=16, n_layer=2, n_head=2, seed=9)

    def signature(x):
        if isinstance(x, torch.Tensor):
            return ("tensor", tuple(x.shape), x.dtype, x.stride())
        if isinstance(x, (list, tuple)):
            return tuple(signature(v) for v in x)
        return x

    calls: list[list] = []

    class Calls(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            calls[-1].append((func, signature(args), signature(sorted((kwargs or {}).items()))))
            return func(*args, **(kwargs or {}))

    with torch.no_grad():
        cache = [KVCache(16) for _ in model.transformer.h]
        model(torch.tensor([[1, 2, 3]]), cache)
        one = OneToken(model, cache, fixed=True, graphs=None)
        for token in (4, 5, 6):
            one.token.copy_(torch.tensor([[token]]))  # outside the step: what the host sets before a replay
            one.state.pos.fill_(cache[0].length)
            calls.append([])
            with Calls():
                one.step()
            for c in cache:
                c.length += 1
    assert len(calls[0]) > 20 and calls[0] == calls[1] == calls[2]


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_a_cpu_token_reads_wide_matrices_transposed_and_matches_linear(monkeypatch, backend):
    """``OneRow``: one row through each linear layer, at the layout memory
    reads fastest, through torch's BLAS or numpy's; the same numbers as
    ``linear`` (fp32, within rounding), and ``m(x)`` for anything but one fp32 row."""
    from tui_trainer.train import kv_cache
    from tui_trainer.train.kv_cache import OneRow

    monkeypatch.setattr(kv_cache, "_backend", lambda rows, lin: backend)
    torch.manual_seed(0)
    wide, deep, no_bias = torch.nn.Linear(8, 24), torch.nn.Linear(24, 8), torch.nn.Linear(8, 20, bias=False)
    rows = OneRow([wide, deep, no_bias])
    assert set(rows.t) == {wide, no_bias}  # out >= 2 x in: a transposed copy
    assert rows.torch_threads == (1 if backend == "numpy" else None)
    for m in (wide, deep, no_bias):
        x = torch.randn(1, 1, m.in_features)
        torch.testing.assert_close(rows(m, x), m(x), atol=1e-6, rtol=1e-5)
        several = torch.randn(2, 3, m.in_features)
        assert torch.equal(rows(m, several), m(several))  # not one row: linear itself
    model = make(ctx=12, n_layer=2, n_head=2, seed=6)  # and a whole sample: the uncached logits, every position
    seen = []
    hook = model.register_forward_hook(lambda mod, args, out: seen.append(out[:, -1].clone()))
    try:
        out = model.generate(torch.tensor([[3, 1, 4]]), 8, generator=torch.Generator().manual_seed(1))
    finally:
        hook.remove()
    with torch.no_grad():
        for t, got in enumerate(seen):
            torch.testing.assert_close(got, model(out[:, :3 + t])[:, -1], atol=1e-4, rtol=1e-4)


def test_which_blas_reads_a_row_is_measured_and_measured_again_once_old(monkeypatch):
    from tui_trainer.train import kv_cache

    monkeypatch.setattr(kv_cache, "_CHOSEN", {})
    model = make(ctx=8, seed=7)
    rng = torch.get_rng_state()
    first = kv_cache.OneRow(model.modules())
    assert torch.equal(torch.get_rng_state(), rng)  # measuring draws nothing from the training RNG
    assert first.backend in ("numpy", "torch") and len(kv_cache._CHOSEN) == 1
    (key, (choice, when)), = kv_cache._CHOSEN.items()
    kv_cache._CHOSEN[key] = ("torch" if choice == "numpy" else "numpy", when)  # kept while young
    assert kv_cache.OneRow(model.modules()).backend != choice
    kv_cache._CHOSEN[key] = (kv_cache._CHOSEN[key][0], when - kv_cache.CHOICE_S - 1)  # old: measured again
    kv_cache.OneRow(model.modules())
    assert kv_cache._CHOSEN[key][1] > when
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a sample under autocast takes linear's path
        model = make(ctx=8, seed=2)
        out = model.generate(torch.tensor([[1, 2]]), 10, top_k=1)
    assert out.shape == (1, 12)

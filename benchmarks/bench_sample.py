"""A 200-token sample with the KV cache (``GPT.generate``) and without it (the
cropped window recomputed for every token, as every sample was made before),
at the demo's shape and at 6 layers x 384 wide, context 256.

    python benchmarks/bench_sample.py                 # 3 rounds, 200 tokens
    python benchmarks/bench_sample.py --rounds 5 --tokens 200
    python benchmarks/bench_sample.py --threads 1     # torch CPU threads (default: torch's choice)

The arms take turns within each round, so a neighbour's load on a shared
machine slows them alike; each figure is the median over the rounds, and the
ratio is taken from those medians.  Both arms sample the same tokens (the
same seeded generator), which the benchmark checks.

A cached token reads every weight once (one row through each matrix), so on
a CPU its floor is the model's bytes over the memory's read bandwidth: the
benchmark measures that bandwidth (a sum over 512 MB, more than any cache)
and prints the floor beside the cached time.  Where the cached arm sits on
its floor, more threads cannot speed it up, while the uncached arm (matrix
products of up to 256 rows) is compute-bound and does speed up: the ratio
then falls with the thread count.

On a shared CPU, mind the thread count: a cached token is a few hundred small
kernels, and with more torch threads than idle cores each one can wait a
time slice at its barrier (on a 2-core machine at load 7, 200 cached tokens
took 2.3-4 s at one thread and 25-36 s at two).  The engine samples at the
count its thread governor chose for training (``threads.ThreadGovernor``).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from tui_trainer.config import TrainConfig  # noqa: E402
from tui_trainer.train.model import GPT, GPTConfig  # noqa: E402

_demo = TrainConfig()
SHAPES = {  # name: (layers, heads, width, context)
    "demo": (_demo.n_layer, _demo.n_head, _demo.n_embd, _demo.context_length),
    "6x384": (6, 6, 384, 256),
}


@torch.no_grad()
def no_cache_generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, temperature: float,
                      top_k: int | None, generator: torch.Generator) -> torch.Tensor:
    """Generation before the cache: the whole cropped window through the model per token."""
    for _ in range(max_new_tokens):
        logits = model(idx[:, -model.config.context_length:])[:, -1, :].float() / temperature
        if top_k is not None:
            v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
            logits[logits < v[:, [-1]]] = -float("inf")
        idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def timed(fn, model: GPT, prompt: torch.Tensor, tokens: int) -> tuple[float, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    out = fn(model, prompt, tokens, temperature=_demo.temperature, top_k=_demo.top_k, generator=gen)
    return time.perf_counter() - t, out


def read_bandwidth() -> float:
    """Bytes per second a sum reads from memory (best of 3, 512 MB)."""
    big = torch.ones(128 * 2**20)  # 512 MB of float32: far past the caches
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        big.sum()
        best = min(best, time.perf_counter() - t)
    return big.numel() * big.element_size() / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {name: GPT(GPTConfig(vocab_size=256, context_length=c, n_layer=n, n_head=h, n_embd=w)).eval()
              for name, (n, h, w, c) in SHAPES.items()}
    prompt = torch.tensor([list(_demo.sample_prompt.encode())], dtype=torch.long)
    arms = {"cache": GPT.generate, "no cache": no_cache_generate}
    times: dict[tuple[str, str], list[float]] = {(s, a): [] for s in models for a in arms}
    for name, model in models.items():  # one untimed run of each: allocator and kernels warm
        for fn in arms.values():
            timed(fn, model, prompt, 8)
    for _ in range(args.rounds):
        for name, model in models.items():
            outs = []
            for arm, fn in arms.items():
                dt, out = timed(fn, model, prompt, args.tokens)
                times[name, arm].append(dt)
                outs.append(out)
            if not torch.equal(outs[0], outs[1]):
                raise SystemExit(f"{name}: the cached sample differs from the uncached one")
    print(f"{args.tokens}-token sample, median of {args.rounds} interleaved rounds, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}")
    bandwidth = read_bandwidth()
    print(f"{'shape':<28} {'no cache':>10} {'cache':>10} {'speed-up':>9}   {'weights':>8} {'cache floor':>11}")
    for name, model in models.items():
        n, h, w, c = SHAPES[name]
        plain = statistics.median(times[name, "no cache"])
        cached = statistics.median(times[name, "cache"])
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        floor = weights * args.tokens / bandwidth  # every weight read once per token
        label = f"{name} ({n}x{w}, ctx {c})"
        print(f"{label:<28} {plain:>9.3f}s {cached:>9.3f}s {plain / cached:>8.1f}x   "
              f"{weights / 1e6:>6.1f}MB {floor:>10.3f}s")
    print(f"cache floor: the weights read once per token at {bandwidth / 1e9:.1f} GB/s, this machine's read "
          f"bandwidth at {torch.get_num_threads()} threads (a sum over 512 MB)")


if __name__ == "__main__":
    main()

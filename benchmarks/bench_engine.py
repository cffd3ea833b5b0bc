"""The engine against a bare hand-written loop: tokens/sec, ratio and MFU.

    python benchmarks/bench_engine.py                  # demo config, headless + JSONL
    python benchmarks/bench_engine.py --n-layer 4 --n-embd 128 --context-length 128
    python benchmarks/bench_engine.py --dtype bf16     # CPU bf16 autocast on both sides
    python benchmarks/bench_engine.py --mode dashboard # engine under the live dashboard
    python benchmarks/bench_engine.py --survey         # bare-loop tok/s, fp32 vs bf16, a few sizes

Both sides train the same model shape, optimizer, schedule, clipping and data
in one process.  They take turns: the engine runs a window of steps, then
(from inside a sink, so the engine's own loop is what gets timed) the bare
loop runs the same number of steps.  Taking turns window by window means a
neighbour's load on this shared machine lands on both sides alike.  Reported:
the median tokens/sec over windows, the spread (min..max), the median of the
per-window ratios, and MFU against the product's CPU peak (``hardware.peak_flops``).

The engine moves torch's thread count with the load (``threads.ThreadGovernor``,
part of what is measured); the bare loop always runs at the count the process
started with, as a hand-written loop would.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tui_trainer.config import make_config  # noqa: E402
from tui_trainer.train.data import load_corpus  # noqa: E402
from tui_trainer.train.hardware import peak_flops  # noqa: E402
from tui_trainer.train.model import GPT, GPTConfig  # noqa: E402
from tui_trainer.train.optim import build_param_groups, cosine_with_warmup  # noqa: E402


# --- the bare loop ----------------------------------------------------------

BARE_FUSED = False  # --bare-fused: give the bare loop the engine's fused AdamW too

class BareLoop:
    """The loop a competent person writes by hand, nothing else: random
    windows, forward, cross entropy, backward, clip, AdamW with the same decay
    split and cosine schedule.  No logging, no records, no commands."""

    def __init__(self, cfg: Any, train_tokens: torch.Tensor, dtype: str = "fp32", seed: int = 0,
                 fused: bool | None = None):
        torch.manual_seed(seed)
        self.cfg = cfg
        self.model = GPT(GPTConfig(vocab_size=256, context_length=cfg.context_length, n_layer=cfg.n_layer,
                                   n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias))
        self.opt = torch.optim.AdamW(build_param_groups(self.model, cfg.weight_decay), lr=cfg.max_lr,
                                     betas=(cfg.beta1, cfg.beta2), fused=fused)
        self.data = train_tokens
        self.gen = torch.Generator().manual_seed(seed)
        self.dtype = dtype
        self.step = 0
        self.last_loss: torch.Tensor | None = None

    def get_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        T, B = self.cfg.context_length, self.cfg.batch_size
        ix = torch.randint(len(self.data) - T - 1, (B,), generator=self.gen)
        x = torch.stack([self.data[i:i + T] for i in ix.tolist()]).long()
        y = torch.stack([self.data[i + 1:i + 1 + T] for i in ix.tolist()]).long()
        return x, y

    def run(self, n_steps: int) -> None:
        cfg = self.cfg
        for _ in range(n_steps):
            lr = cosine_with_warmup(self.step, cfg.warmup_steps, cfg.steps, cfg.max_lr, cfg.lr_floor)
            for g in self.opt.param_groups:
                g["lr"] = lr
            x, y = self.get_batch()
            if self.dtype == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    logits = self.model(x)
            else:
                logits = self.model(x)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.opt.step()
            self.step += 1
            self.last_loss = loss.detach()


# --- interleaving -----------------------------------------------------------

class _Turns:
    """A sink that, every ``window`` train steps, closes the engine's timing
    window and runs the bare loop for the same number of steps."""

    def __init__(self, window: int, warmup: int, bare: Callable[[int], None], tokens_per_step: int):
        self.window, self.warmup, self.bare = window, warmup, bare
        self.tokens_per_step = tokens_per_step
        self.engine: list[float] = []  # tokens/sec per window
        self.bare_tps: list[float] = []
        self._t: float | None = None
        self.bare_threads = torch.get_num_threads()

    def emit(self, record: Any) -> None:
        if record.type != "train":
            return
        step = record.step
        if step < self.warmup or (step - self.warmup) % self.window:
            return
        now = time.perf_counter()
        engine_threads = torch.get_num_threads()
        torch.set_num_threads(self.bare_threads)  # the governor's count is the engine's alone
        if self._t is not None:
            self.engine.append(self.window * self.tokens_per_step / (now - self._t))
            t = time.perf_counter()
            self.bare(self.window)
            self.bare_tps.append(self.window * self.tokens_per_step / (time.perf_counter() - t))
        else:
            self.bare(self.warmup)  # warm the bare side as much as the engine
        torch.set_num_threads(engine_threads)
        self._t = time.perf_counter()


def summarize(name: str, values: list[float]) -> str:
    med = statistics.median(values)
    return f"{name:<22} {med:>10,.0f} tok/s  (spread {min(values):,.0f}..{max(values):,.0f}, n={len(values)})"


def bench_headless(cfg: Any, windows: int, window: int, warmup: int, dtype: str) -> dict[str, Any]:
    from tui_trainer.train.engine import Trainer
    from tui_trainer.run.log_writer import JsonlSink

    corpus = load_corpus(cfg)
    bare = BareLoop(cfg, corpus.train, dtype=dtype, seed=cfg.seed, fused=BARE_FUSED or None)
    tokens_per_step = cfg.batch_size * cfg.context_length
    turns = _Turns(window, warmup, bare.run, tokens_per_step)
    with tempfile.TemporaryDirectory() as tmp:
        log = JsonlSink(Path(tmp) / "losses.jsonl")
        trainer = Trainer(cfg, None, [log, turns])
        trainer.run()
        log.close()
    return {"engine": turns.engine, "bare": turns.bare_tps, "model": trainer.model,
            "device": trainer.hw.describe()}


def report(cfg: Any, res: dict[str, Any], peak: float, label: str) -> None:
    eng, bare = res["engine"], res["bare"]
    ratios = [e / b for e, b in zip(eng, bare)]
    fpt = res["model"].flops_per_token()
    print(f"config: {cfg.n_layer} layers x {cfg.n_embd} wide x {cfg.context_length} context, "
          f"batch {cfg.batch_size}, {res['model'].num_params():,} params, {res['device']}, "
          f"{torch.get_num_threads()} threads")
    print(f"peak (matmul): {peak / 1e9:,.1f} GFLOP/s; model: {fpt / 1e6:.2f} MFLOP/token")
    print(f"bare loop optimizer: AdamW {'fused' if BARE_FUSED else 'torch default (per-tensor loop on CPU)'}")
    print(summarize("bare loop", bare) + f"  MFU {fpt * statistics.median(bare) / peak:.1%}")
    print(summarize(label, eng) + f"  MFU {fpt * statistics.median(eng) / peak:.1%}")
    print(f"ratio {label} / bare: median {statistics.median(ratios):.3f} "
          f"(spread {min(ratios):.3f}..{max(ratios):.3f}); ratio of medians "
          f"{statistics.median(eng) / statistics.median(bare):.3f}")


def survey(sizes: list[tuple[int, int, int, int]], steps: int) -> None:
    """Bare-loop tokens/sec for a few shapes, fp32 and bf16 taking turns."""
    corpus = load_corpus(make_config({}))
    for n_layer, n_embd, ctx, batch in sizes:
        cfg = make_config({"n_layer": n_layer, "n_embd": n_embd, "n_head": max(1, n_embd // 64) * 2
                           if n_embd >= 128 else 4, "context_length": ctx, "batch_size": batch,
                           "steps": 10_000, "warmup_steps": 10})
        loops = {d: BareLoop(cfg, corpus.train, dtype=d) for d in ("fp32", "bf16")}
        tps: dict[str, list[float]] = {d: [] for d in loops}
        for d, loop in loops.items():
            loop.run(3)
        for _ in range(3):
            for d, loop in loops.items():
                t = time.perf_counter()
                loop.run(steps)
                tps[d].append(steps * batch * ctx / (time.perf_counter() - t))
        f32, b16 = statistics.median(tps["fp32"]), statistics.median(tps["bf16"])
        print(f"{n_layer}x{n_embd}x{ctx} b{batch}: fp32 {f32:>9,.0f} tok/s  bf16 {b16:>9,.0f} tok/s  "
              f"bf16/fp32 {b16 / f32:.2f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("headless", "dashboard"), default="headless")
    p.add_argument("--windows", type=int, default=31, help="timed windows per side")
    p.add_argument("--window", type=int, default=10,
                   help="steps per window (short windows: both sides of a pair see the same neighbours)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first, each side")
    p.add_argument("--n-layer", type=int)
    p.add_argument("--n-embd", type=int)
    p.add_argument("--n-head", type=int)
    p.add_argument("--context-length", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--survey", action="store_true", help="bare-loop fp32 vs bf16 over a few shapes")
    p.add_argument("--bare-fused", action="store_true",
                   help="bare loop with fused AdamW too (isolates the engine's overhead from its faster optimizer)")
    args = p.parse_args(argv)
    global BARE_FUSED
    BARE_FUSED = args.bare_fused

    if args.survey:
        survey([(2, 64, 64, 32), (2, 128, 128, 32), (3, 128, 128, 32), (4, 128, 128, 32),
                (4, 192, 128, 32), (4, 256, 128, 32), (6, 384, 256, 16)], steps=8)
        return

    values: dict[str, Any] = {k: v for k, v in vars(args).items()
                              if k in ("n_layer", "n_embd", "n_head", "context_length", "batch_size")
                              and v is not None}
    values["dtype"] = args.dtype
    steps = args.warmup + args.windows * args.window
    values.update(steps=steps, eval_every=steps, warmup_steps=min(10, steps), seed=1337)
    cfg = make_config(values)
    peak = peak_flops("cpu", args.dtype)  # the product's own figure: a measured matmul peak, cached
    if args.mode == "headless":
        res = bench_headless(cfg, args.windows, args.window, args.warmup, args.dtype)
        report(cfg, res, peak, "engine+jsonl")
    else:
        res = bench_dashboard(cfg, args.windows, args.window, args.warmup, args.dtype)
        if res is not None:
            report(cfg, res, peak, "engine+dashboard")


def bench_dashboard(cfg: Any, windows: int, window: int, warmup: int, dtype: str,
                    size: tuple[int, int] = (120, 40)) -> dict[str, Any] | None:
    """The engine in the dashboard's training thread, the app hosted headless
    (``App.run_test``: it lays out and renders every widget, plots included,
    and skips only writing frames to a terminal).  The bare loop's windows run
    in the same thread between the engine's, with the app up but idle."""
    try:
        from headless_dashboard import live_trainer, run_in_dashboard  # benchmarks/

        import tui_trainer.ui.app  # noqa: F401
    except ImportError as e:
        print(f"dashboard mode unavailable: the dashboard does not import ({e})")
        return None
    from tui_trainer.run.log_writer import JsonlSink

    corpus = load_corpus(cfg)
    bare = BareLoop(cfg, corpus.train, dtype=dtype, seed=cfg.seed, fused=BARE_FUSED or None)
    turns = _Turns(window, warmup, bare.run, cfg.batch_size * cfg.context_length)
    with tempfile.TemporaryDirectory() as tmp:
        log = JsonlSink(Path(tmp) / "losses.jsonl")
        trainer, run = live_trainer(cfg, None, [log, turns])
        try:
            run_in_dashboard(trainer, size, run)
        finally:
            log.close()
    return {"engine": turns.engine, "bare": turns.bare_tps, "model": trainer.model,
            "device": trainer.hw.describe()}


if __name__ == "__main__":
    main()

"""GPU figures: the 124M model (GPT-2 small) through the engine and a bare loop.

    python benchmarks/bench_gpu.py                # on a CUDA GPU: bf16, fused AdamW, eager and compiled
    python benchmarks/bench_gpu.py --no-compile   # eager arms only (a cold compile is about a minute)
    python benchmarks/bench_gpu.py --cpu-smoke    # a small shape on CPU (also --tiny): the CI smoke run

The 124M configuration (12 layers, 768 wide, 12 heads, 1024 context, vocab
50304) trains on synthetic tokens (a random uint16 ``.bin`` file, so the
engine reads it through its own ``--data`` path) with bf16 autocast, TF32 and
fused AdamW.  Arms, one after another in this process:

  bare loop         the loop a competent person writes by hand: random windows
                    already on the device, autocast forward, cross entropy,
                    backward, clip, fused AdamW, cosine schedule; no logging
  engine            ``engine.Trainer`` headless, as ``tui-trainer train --headless``
  ... (compiled)    the same with ``torch.compile`` / ``--compile``
  engine+dashboard  the engine in the dashboard's training thread, the app
                    hosted headless (``App.run_test``: every widget and plot is
                    laid out and rendered, only the terminal writes are skipped)

For each: tokens/sec over the steps after the warmup (the compile happens in
the warmup), MFU against the device's peak (``hardware.peak_flops``: a data
sheet's dense bf16 figure for a GPU, a measured matmul peak for a CPU) with
``hardware.flops_per_token`` (6N + 12 x layers x width x context), peak memory
(``torch.cuda.max_memory_allocated``; on CPU, not measured) and the ratio to
the bare loop of the same compile setting.

Each engine arm then goes on to three evals (each with its 200-token sample)
and checkpoints, ``--pause-every`` steps apart (80: more than a 124M
checkpoint's background write takes on an H200), as the run's cadence
(``--eval-every``, checkpoints at each eval) makes them: the second table
gives, per arm, each checkpoint's time training was blocked and its
background write (from the checkpoint records), the first and a later eval
and sample, and the tokens/s the status line showed at steps 10, 20 and 40
against the steady rate (the wall-clock rate over the timed steps).

Time limits: a step (the first: the compile) that takes longer than
``--step-limit`` (``--first-step-limit``) stops its arm, an arm does not start
once ``--budget`` seconds (420) are spent, and the process ends itself 45 s
after the budget whatever hangs: under 8 minutes in all.  With ``$OUT`` set, the figures are written
to ``$OUT/bench_gpu.json`` after every arm.  About four minutes on an H200.
"""
from __future__ import annotations

import argparse
import faulthandler
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tui_trainer.train.threads import apply_wait_policy  # noqa: E402

apply_wait_policy()  # as the command does, before torch loads

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from tui_trainer.train import hardware  # noqa: E402
from tui_trainer.config import make_config  # noqa: E402
from tui_trainer.train.model import GPT, GPTConfig  # noqa: E402
from tui_trainer.train.optim import build_param_groups, cosine_with_warmup  # noqa: E402

from headless_dashboard import live_trainer, run_in_dashboard  # noqa: E402  (benchmarks/)
from pause_points import PAUSE_EVERY, PAUSE_HEADER, Tape, pause_row  # noqa: E402  (benchmarks/)

GPT2_SMALL = dict(n_layer=12, n_head=12, n_embd=768, context_length=1024, vocab_size=50304, bias=False,
                  batch_size=16)
TINY = dict(n_layer=2, n_head=2, n_embd=64, context_length=64, vocab_size=512, bias=False, batch_size=4)


def synthetic_tokens(path: Path, n: int, vocab: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, size=n, dtype=np.uint16)
    tokens[-1] = vocab - 1  # the file's largest id sets the vocabulary the engine infers
    tokens.tofile(path)
    return path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the bare loop ------------------------------------------------------------

def bare_loop(cfg: Any, device: torch.device, steps: int, warmup: int, compile_: bool,
              limits: tuple[float, float, float] = (math.inf, math.inf, math.inf)) -> float:
    """Tokens/sec of the hand-written loop over ``steps - warmup`` steps.
    ``limits``: (seconds for a step, for the first step, the bench's deadline);
    past one, the arm ends with ``TimeoutError`` after that step."""
    torch.manual_seed(cfg.seed)
    model = GPT(GPTConfig(vocab_size=cfg.vocab_size, context_length=cfg.context_length, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=0.0, bias=cfg.bias)).to(device)
    fused = hardware.pick_fused_adamw(True, device)
    opt = torch.optim.AdamW(build_param_groups(model, cfg.weight_decay), lr=cfg.max_lr,
                            betas=(cfg.beta1, cfg.beta2), fused=fused or None)
    fwd: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model) if compile_ else model
    B, T = cfg.batch_size, cfg.context_length
    data = torch.randint(0, cfg.vocab_size, (1 << 20,), device=device)
    dt = torch.bfloat16 if device.type == "cuda" or cfg.dtype == "bf16" else None
    t0 = 0.0
    step_limit, first_limit, deadline = limits
    for step in range(steps):
        began = time.perf_counter()
        if step == warmup:
            sync(device)
            t0 = time.perf_counter()
        lr = cosine_with_warmup(step, cfg.warmup_steps, cfg.steps, cfg.max_lr, cfg.lr_floor)
        for g in opt.param_groups:
            g["lr"] = lr
        ix = torch.randint(0, len(data) - T - 1, (B,), device=device)
        w = data[ix[:, None] + torch.arange(T + 1, device=device)]
        x, y = w[:, :-1], w[:, 1:]
        with torch.autocast(device.type, dtype=dt, enabled=dt is not None):
            logits = fwd(x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if step < 2:
            sync(device)  # the compile's steps: their time is their own (later, the queue bounds the host)
        took, limit = time.perf_counter() - began, first_limit if step == 0 else step_limit
        if took > limit or time.perf_counter() > deadline:
            raise TimeoutError(f"step {step + 1} took {took:.0f}s (limit {limit:.0f}s)" if took > limit
                               else "the bench's time budget ran out")
    sync(device)
    return (steps - warmup) * B * T / (time.perf_counter() - t0)


# --- the engine ---------------------------------------------------------------

def engine(cfg: Any, warmup: int, window: int, limits: tuple[float, float, float],
           dashboard: bool = False) -> tuple[float, str, dict[str, Any]]:
    """Tokens/sec over steps ``warmup``..``window``, the device as the engine
    says it, and the pause points' figures (``pause_points.Tape``).  The run's
    folder (its checkpoints) is a temporary one, gone after the arm."""
    step_limit, first_limit, deadline = limits
    tape = Tape(window, step_limit_s=step_limit, first_step_limit_s=first_limit, deadline=deadline)
    folder = Path(tempfile.mkdtemp(prefix="bench-gpu-run-"))
    try:
        trainer, run = live_trainer(cfg, folder, [tape], interactive=dashboard)
        tape.watch(run)
        try:
            if dashboard:
                run_in_dashboard(trainer, run=run)
            else:
                trainer.run()
        finally:
            tape.finish()
        end = trainer.end
        if end is not None and end.status != "finished":
            tape.problem = tape.problem or f"run {end.status}: {end.error or ''}"[:200]
        steady = tape.tokens_per_sec(warmup, window)
        return steady, trainer.hw.describe(), tape.figures(steady)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- the table ----------------------------------------------------------------

def measure(name: str, fn: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    try:
        out = fn()
    except Exception as e:  # one arm failing (a compiler missing, the UI) leaves the others' figures
        print(f"{name:<26} failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
              flush=True)
        return {"name": name, "tps": math.nan, "error": f"{type(e).__name__}: {e}"[:300]}
    tps, desc, pauses = out if isinstance(out, tuple) else (out, "", None)
    mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"name": name, "tps": tps, "mem": mem, "desc": desc, "wall": time.perf_counter() - t, "pauses": pauses}


def row(r: dict[str, Any], fpt: float, peak: float | None, base: float | None) -> str:
    if math.isnan(r["tps"]):
        return ""
    m = hardware.mfu(r["tps"], fpt, peak)
    mem = f"{r['mem'] / 2**30:7.2f} GiB" if r.get("mem") is not None else "      n/a"
    vs = f"{r['tps'] / base:7.3f}" if base and not math.isnan(base) else "      -"
    mfu_txt = f"{m:6.1%}" if m is not None else "   n/a"
    return f"{r['name']:<26} {r['tps']:>11,.0f} tok/s  MFU {mfu_txt}  peak mem {mem}  vs bare {vs}  ({r['wall']:.0f}s)"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", "--cpu-smoke", action="store_true", dest="tiny",
                   help="a small shape on CPU (the CI smoke run)")
    p.add_argument("--device", default=None, help="default: cuda if there is one (cpu with --tiny)")
    p.add_argument("--steps", type=int, help="timed steps per arm, warmup included (default 40)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 10)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--threads", type=int, help="torch CPU threads (as --threads of the command)")
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled arms")
    p.add_argument("--no-dashboard", action="store_true", help="leave out the engine+dashboard arm")
    p.add_argument("--sample-tokens", type=int, default=200, help="tokens per sample (default 200)")
    p.add_argument("--pause-every", type=int, default=PAUSE_EVERY,
                   help=f"steps between an engine arm's evals and checkpoints (default {PAUSE_EVERY}; at least --steps)")
    p.add_argument("--budget", type=float, default=420.0,
                   help="seconds for the whole bench (default 420): no arm starts after it, a running one stops")
    p.add_argument("--step-limit", type=float, default=60.0, help="seconds a step may take (default 60)")
    p.add_argument("--first-step-limit", type=float, default=300.0,
                   help="seconds the first step (the compile) may take (default 300)")
    args = p.parse_args(argv)
    began = time.perf_counter()
    deadline = began + args.budget
    faulthandler.dump_traceback_later(args.budget + 45, exit=True)  # whatever hangs, the process ends
    limits = (args.step_limit, args.first_step_limit, deadline)

    shape = dict(TINY if args.tiny else GPT2_SMALL)
    if args.batch_size:
        shape["batch_size"] = args.batch_size
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu"))
    steps = args.steps or 40
    warmup = args.warmup or 10
    compile_ = not args.no_compile and not args.tiny  # a cold CPU compile is too slow for CI
    if device.type != "cuda" and not args.tiny:
        print(f"no CUDA GPU here: running the 124M arms on {device} (slow); --tiny for a smoke run", flush=True)

    dtype = "bf16"
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_tokens(Path(tmp) / "tokens.bin", 1 << 21, shape["vocab_size"])
        values = dict(shape, data=str(data), device=str(device), dtype=dtype, fused_adamw=True, tf32=True,
                      steps=steps, eval_every=steps, eval_batches=2, sample_tokens=args.sample_tokens,
                      warmup_steps=warmup, seed=1337, threads=args.threads)  # log_every: the default 10
        cfg = make_config(values)
        # The engine arms go on past the timed steps to three evals and checkpoints (pause_points.Tape).
        every = max(args.pause_every, steps)
        long = dict(values, steps=3 * every, eval_every=every, keep=1)
        engine_cfg, compiled_cfg = make_config(long), make_config(dict(long, compile=True))
        hw = hardware.configure(cfg)  # TF32 and threads, as the engine sets them
        fpt = hardware.flops_per_token(cfg)
        peak = hardware.peak_flops(device, dtype, tf32=hw.tf32)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({hardware._cpu_model()})"
        peak_txt = (f"{peak / 1e12:,.1f} TFLOP/s" if peak and peak >= 1e12 else f"{peak / 1e9:,.1f} GFLOP/s"
                    if peak else "unknown (add it to hardware.GPU_PEAK_TFLOPS)")
        print(f"device: {name}; peak {peak_txt} ({dtype}{', measured matmul' if device.type == 'cpu' else ''})")
        print(f"model: {shape['n_layer']} layers x {shape['n_embd']} wide x {shape['context_length']} context, "
              f"vocab {shape['vocab_size']}, {hardware.count_params(shape['n_layer'], shape['n_embd'], shape['vocab_size'], shape['bias']) / 1e6:,.1f}M params, "
              f"{fpt / 1e9:.3f} GFLOP/token; batch {shape['batch_size']}; {steps} steps per arm, {warmup} untimed; "
              f"torch {torch.__version__}", flush=True)
        report: dict[str, Any] = {"device": name, "peak_flops": peak, "dtype": dtype, "torch": torch.__version__,
                                  "shape": shape, "steps": steps, "warmup": warmup, "flops_per_token": fpt,
                                  "sample_tokens": args.sample_tokens, "arms": {},
                                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}

        arms: list[tuple[str, Callable[[], Any], str]] = [
            ("bare loop", lambda: bare_loop(cfg, device, steps, warmup, False, limits), "bare"),
            ("engine", lambda: engine(engine_cfg, warmup, steps, limits), "bare"),
        ]
        if compile_:
            arms += [("bare loop (compiled)", lambda: bare_loop(cfg, device, steps, warmup, True, limits), "cbare"),
                     ("engine (compiled)", lambda: engine(compiled_cfg, warmup, steps, limits), "cbare")]
        if not args.no_dashboard:
            arms.append(("engine+dashboard", lambda: engine(engine_cfg, warmup, steps, limits, dashboard=True),
                         "bare"))
        results: dict[str, dict[str, Any]] = {}
        for arm_name, fn, _ in arms:
            if time.perf_counter() > deadline:
                print(f"{arm_name:<26} skipped: the bench's {args.budget:.0f}s budget is spent", flush=True)
                continue
            results[arm_name] = measure(arm_name, fn, device)
            base_name = "bare loop (compiled)" if "compiled" in arm_name else "bare loop"
            base = results.get(base_name, {}).get("tps")
            line = row(results[arm_name], fpt, peak, None if arm_name == base_name else base)
            if line:
                print(line, flush=True)
            r = results[arm_name]
            report["arms"][arm_name] = {"tok_s": _num(r["tps"]), "mfu": hardware.mfu(r["tps"], fpt, peak),
                                        "peak_mem_gib": r["mem"] / 2**30 if r.get("mem") is not None else None,
                                        "vs_bare": _num(r["tps"] / base) if base and arm_name != base_name
                                        else None, "wall_s": r.get("wall"), "pause_points": r.get("pauses"),
                                        "error": r.get("error")}
            write_json(report)
        engine_desc = next((r["desc"] for r in results.values() if r.get("desc")), "")
        if engine_desc:
            print(f"engine device: {engine_desc}")
            report["engine_device"] = engine_desc
        eng, dash = results.get("engine", {}).get("tps"), results.get("engine+dashboard", {}).get("tps")
        if eng and dash and not (math.isnan(eng) or math.isnan(dash)):
            print(f"dashboard overhead: engine+dashboard / engine = {dash / eng:.3f}")
        paused = [(n, r["pauses"]) for n, r in results.items() if r.get("pauses")]
        if paused:
            print(f"pause points ({args.sample_tokens}-token samples; checkpoints with the optimizer state; "
                  f"shown = the status line's tok/s, steady = the wall-clock rate of steps {warmup}..{steps}):")
            print(PAUSE_HEADER)
            for n, f in paused:
                print(pause_row(n, f), flush=True)
        report["wall_s"] = time.perf_counter() - began
        write_json(report)
    faulthandler.cancel_dump_traceback_later()


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def write_json(report: dict[str, Any]) -> None:
    """``$OUT/bench_gpu.json`` when ``$OUT`` is set (after each arm: a run cut short keeps what it measured)."""
    out = os.environ.get("OUT")
    if not out:
        return
    path = Path(out) / "bench_gpu.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite(report), indent=1))
    os.replace(tmp, path)


def _finite(v: Any) -> Any:
    """JSON without NaN or inf (strict parsers refuse them): None instead."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v if v is None or isinstance(v, (str, int, bool)) else str(v)


if __name__ == "__main__":
    main()

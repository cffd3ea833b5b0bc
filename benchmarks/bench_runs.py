"""What the runs browser costs on many runs, beside what reading the logs costs.

    python benchmarks/bench_runs.py [--runs 200] [--steps 10000] [--overlay 10] [--overlay-steps 100000]
                                    [--repeat 3] [--dir /tmp/bench_runs]

Writes (once; kept in --dir for the next time) a folder of ``--runs`` run logs
of ``--steps`` train lines each, in our own format (an eval every 100 steps, a
sample every 500), and ``--overlay`` logs of ``--overlay-steps``.  Then,
interleaved, ``--repeat`` times, the medians side by side:

  listing a folder of runs
    tails        the floor: open each log, read its last 64 KiB, close (no parsing)
    list         runs.Scanner().scan(evals=False): what the table shows first
                 (head, tail, lock, labels)
    list+evals   runs.Scanner().scan(): the same plus every log's best val
                 loss (the byte search for eval lines)
    rescan       a second scan() of the same Scanner, nothing changed
    whole        the baseline: every log read whole (logs.load_series, the
                 viewer's msgspec fast path)

  overlaying --overlay runs (the viewer, headless at 80x24, in this process)
    first plot   from opening the logs (prepare) to the first frame with curves
    full plot    to the frame drawn from every complete series

The page cache is warm (the logs were just written or read): these are the
costs of parsing and reading memory, not of a cold disk.  Timings on a shared
machine are noisy: compare numbers from one run only.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tui_trainer.logs import load_series  # noqa: E402
from tui_trainer.runs import Scanner  # noqa: E402

CONFIG = {"n_layer": 4, "n_embd": 128, "max_lr": 3e-3, "batch_size": 32, "seed": 1337, "dropout": 0.0}


def dumps(d: dict) -> str:
    return json.dumps(d, separators=(",", ":")) + "\n"  # as runlog writes a line


def write_log(folder: Path, steps: int, seed: int) -> None:
    rnd = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = 1764105047.123456 + seed * 3600
    cfg = dict(CONFIG, max_lr=CONFIG["max_lr"] * (1 + seed % 5), steps=steps, out=str(folder))
    with open(folder / "losses.jsonl", "w") as f:
        f.write(dumps({"type": "run_start", "step": 0, "time": t0, "run_name": folder.name, "config": cfg,
                       "n_params": 1, "device": "cpu", "total_steps": steps, "resumed": False}))
        buf = []
        for s in range(1, steps + 1):
            loss = 4.0 * 0.5 ** (s / (steps / 4)) + rnd.random() * 0.1
            buf.append(f'{{"type":"train","step":{s},"time":{t0 + s * 0.0123!r},"train_loss":{loss!r},'
                       f'"lr":{3e-3 * rnd.random()!r},"tokens_per_sec":{12000 + rnd.random()!r},'
                       f'"grad_norm":{rnd.random()!r},"elapsed_s":{s * 0.0123!r},"tokens":{s * 4096}}}\n')
            if s % 100 == 0:
                buf.append(dumps({"type": "eval", "step": s, "time": t0, "val_loss": loss + 0.1,
                                  "train_loss": loss, "elapsed_s": s * 0.0123, "forced": False}))
            if s % 500 == 0:
                buf.append(dumps({"type": "sample", "step": s, "time": t0, "prompt": "def ",
                                  "text": "def f(x):\n    return x" * 4}))
            if len(buf) > 10_000:
                f.writelines(buf)
                buf = []
        f.writelines(buf)
        f.write(dumps({"type": "run_end", "step": steps, "time": t0, "status": "finished",
                       "elapsed_s": steps * 0.0123, "val_loss": 1.0, "error": None}))


def make(folder: Path, runs: int, steps: int) -> list[Path]:
    marker = folder / f".made-{runs}x{steps}-v2"
    paths = [folder / f"run-20261201-{i:06d}" for i in range(runs)]
    if not marker.exists():
        folder.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        for i, p in enumerate(paths):
            write_log(p, steps, i)
        marker.write_text("")
        print(f"wrote {runs} logs of {steps:,} steps in {time.perf_counter() - t:.1f} s to {folder}")
    return paths


def tails(paths: list[Path]) -> None:
    for p in paths:
        fd = os.open(p / "losses.jsonl", os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            os.pread(fd, 1 << 16, max(0, size - (1 << 16)))
        finally:
            os.close(fd)


def whole(paths: list[Path]) -> None:
    for p in paths:
        load_series(p)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def listing(folder: Path, paths: list[Path], repeat: int, with_whole: bool) -> None:
    res: dict[str, list[float]] = {k: [] for k in ("tails", "list", "list+evals", "rescan", "whole")}
    size = sum((p / "losses.jsonl").stat().st_size for p in paths)
    for _ in range(repeat):
        res["tails"].append(timed(lambda: tails(paths)))
        res["list"].append(timed(lambda: Scanner(folder).scan(evals=False)))
        scanner = Scanner(folder)
        res["list+evals"].append(timed(scanner.scan))
        res["rescan"].append(timed(scanner.scan))
        if with_whole:
            res["whole"].append(timed(lambda: whole(paths)))
    got = scanner.scan()
    assert len(got) == len(paths) and all(s.ok and s.evals_read for s in got), "the scan missed a run"
    print(f"\nlisting {len(paths)} runs ({size / 1e6:.0f} MB of logs), median of {repeat} (min-max):")
    base = statistics.median(res["tails"])
    for k, v in res.items():
        if v:
            m = statistics.median(v)
            print(f"  {k:<11} {m * 1e3:9.1f} ms  ({min(v) * 1e3:.1f}-{max(v) * 1e3:.1f})  {m / base:7.1f}x tails")


def overlay(paths: list[Path], repeat: int) -> None:
    from tui_trainer.ui.plot import CurvePlot
    from tui_trainer.ui.viewer import FileSource, viewer_app

    firsts, fulls = [], []
    for _ in range(repeat):
        marks: dict[str, float] = {}

        async def go() -> None:
            t0 = time.perf_counter()
            src = FileSource(paths)
            src.prepare()
            app = viewer_app(src)
            async with app.run_test(size=(80, 24)) as pilot:
                while True:
                    await pilot.pause(0.01)
                    plot = app.screen.query_one("#loss", CurvePlot)
                    drawn = plot._key is not None and any(0x2800 < ord(ch) < 0x2900 for ch in plot._text.plain)
                    if drawn and "first" not in marks:
                        marks["first"] = time.perf_counter() - t0
                    runs = app.runs
                    if (drawn and src.done and all(r.detail != "preview" for r in runs)
                            and plot._key[0] == tuple(r.version for r in runs)):
                        marks["full"] = time.perf_counter() - t0
                        break
            src.close()

        asyncio.run(go())
        firsts.append(marks["first"])
        fulls.append(marks["full"])
    size = sum((p / "losses.jsonl").stat().st_size for p in paths)
    print(f"\noverlaying {len(paths)} runs ({size / 1e6:.0f} MB of logs) at 80x24, median of {repeat} (min-max):")
    for k, v in (("first plot", firsts), ("full plot", fulls)):
        print(f"  {k:<11} {statistics.median(v) * 1e3:9.1f} ms  ({min(v) * 1e3:.1f}-{max(v) * 1e3:.1f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--overlay", type=int, default=10)
    ap.add_argument("--overlay-steps", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/bench_runs"))
    ap.add_argument("--no-whole", action="store_true", help="skip the whole-log baseline (slow)")
    a = ap.parse_args()
    many = make(a.dir / "many", a.runs, a.steps)
    big = make(a.dir / "big", a.overlay, a.overlay_steps) if a.overlay else []
    listing(a.dir / "many", many, a.repeat, not a.no_whole)
    if big:
        overlay(big, a.repeat)


if __name__ == "__main__":
    main()

"""Bytes against a byte-level BPE on one text: validation bits per byte.

    python benchmarks/bench_tokenizer_bpb.py --data prose.txt                 # 300 steps each
    python benchmarks/bench_tokenizer_bpb.py --data prose.txt --time 90s      # the same wall time each

The prose the README's figures came from: Debian's ``fortunes`` files, 2 MiB
of them (no root needed; ``fortunes`` unpacked last, as its files win)::

    apt-get download fortunes fortunes-min
    for d in fortunes-min_*.deb fortunes_*.deb; do dpkg -x $d f; done
    cd f/usr/share/games/fortunes && cat $(ls | grep -v -e '\.dat$' -e '\.u8$' -e art) | head -c 2097152 > prose.txt

Issue 24's test of ``--tokenizer``: on about 2 MB of English prose, a 4-layer,
128-wide model trained with ``--tokenizer bpe:2048`` should reach a lower
validation bits per byte than the same model on ``bytes`` in the same wall
time.  Each arm is one headless ``tui-trainer train`` with the same flags
but ``--tokenizer``, run one after the other (not side by side, so they do
not share the CPUs); the figures come from the run's own eval records
(``val_loss``, ``val_bpb``) and its ``run_end``.  Val loss is nats per token
and a BPE token is several bytes, so only the bits-per-byte column ranks the
two.  The wall columns are the run's training time (``elapsed_s``) and the
whole process (start, tokenizer training, tokenizing, checkpoints).

Both arms validate on the first ``--eval-batches`` windows of the same
validation text, but a window of BPE tokens holds more bytes than one of
bytes, so by default the BPE's figure covers more of that text.
``--same-text`` runs the BPE first and gives the bytes arm enough eval
batches to cover the same bytes (its training is unchanged; with ``--time``
its longer evals take a little of its budget).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def records(run: Path) -> list[dict]:
    out = []
    for line in (run / "losses.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def bytes_per_token(row: dict) -> float:
    """The BPE slice's mean bytes per token, from its own figures: bpb = loss / ln 2 / bytes per token."""
    return row["val_loss"] / math.log(2) / row["val_bpb"]


def arm(data: str, tokenizer: str, flags: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "tui_trainer", "train", "--headless", "--data", data,
           "--tokenizer", tokenizer, "--out", str(out), *flags]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if done.returncode:
        sys.exit(f"{tokenizer}: tui-trainer train failed:\n{done.stderr[-2000:]}")
    recs = records(out)
    evals = [r for r in recs if r.get("type") == "eval"]
    start = next(r for r in recs if r.get("type") == "run_start")
    trains = [r for r in recs if r.get("type") == "train"]
    samples = [r for r in recs if r.get("type") == "sample"]
    last = evals[-1]
    return {"tokenizer": tokenizer, "steps": last["step"], "val_loss": last["val_loss"], "val_bpb": last.get("val_bpb"),
            "best_bpb": min((e["val_bpb"] for e in evals if e.get("val_bpb") is not None), default=None),
            "train_s": trains[-1]["elapsed_s"] if trains else float("nan"), "wall_s": wall,
            "vocab": (start.get("tokenizer") or {}).get("vocab_size") or (256 if tokenizer == "bytes" else None),
            "sample": (samples[-1].get("text") if samples else "") or ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a text file (about 2 MB of English prose)")
    ap.add_argument("--bpe", default="bpe:2048", help="the BPE arm's --tokenizer (default bpe:2048)")
    ap.add_argument("--steps", type=int, default=300, help="steps of each arm (default 300)")
    ap.add_argument("--time", default=None, help="instead of --steps: each arm's --time budget (e.g. 90s)")
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="--threads for each arm")
    ap.add_argument("--eval-batches", type=int, default=20, help="--eval-batches of the BPE arm (default 20)")
    ap.add_argument("--same-text", action="store_true",
                    help="the bytes arm validates on the same bytes as the BPE arm (more eval batches)")
    ap.add_argument("--keep", default=None, help="keep the run folders here (default: a temporary folder)")
    args = ap.parse_args()
    flags = ["--n-layer", str(args.n_layer), "--n-embd", str(args.n_embd)]
    flags += ["--time", args.time] if args.time else ["--steps", str(args.steps)]
    if args.threads:
        flags += ["--threads", str(args.threads)]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%H%M%S")
        bpe = arm(args.data, args.bpe, [*flags, "--eval-batches", str(args.eval_batches)], base / f"bpe-{stamp}")
        batches = args.eval_batches
        if args.same_text and bpe["val_bpb"] is not None:
            batches = math.ceil(args.eval_batches * bytes_per_token(bpe))
        byte = arm(args.data, "bytes", [*flags, "--eval-batches", str(batches)], base / f"bytes-{stamp}")
        rows = [byte, bpe]
    size = Path(args.data).stat().st_size / 1e6
    budget = f"--time {args.time}" if args.time else f"--steps {args.steps}"
    print(f"{size:.2f} MB of text; {args.n_layer} layers x {args.n_embd} wide; {budget}; other flags default")
    print(f"eval batches: bytes {batches}, {args.bpe} {args.eval_batches}"
          + (f" (the same {batches * 32 * 64 / 1e3:.0f} kB of validation text)" if args.same_text else ""))
    print(f"{'tokenizer':<10} {'vocab':>6} {'steps':>6} {'val loss':>9} {'val bpb':>8} {'best bpb':>9} "
          f"{'train s':>8} {'wall s':>7}")
    for r in rows:
        bpb = "-" if r["val_bpb"] is None else f"{r['val_bpb']:.4f}"
        best = "-" if r["best_bpb"] is None else f"{r['best_bpb']:.4f}"
        print(f"{r['tokenizer']:<10} {r['vocab'] or '-':>6} {r['steps']:>6} {r['val_loss']:>9.4f} {bpb:>8} {best:>9} "
              f"{r['train_s']:>8.1f} {r['wall_s']:>7.1f}")
    byte, bpe = rows
    if byte["val_bpb"] is not None and bpe["val_bpb"] is not None:
        won = bpe["val_bpb"] < byte["val_bpb"]
        print(f"{args.bpe} {'beats' if won else 'does NOT beat'} bytes: {bpe['val_bpb']:.4f} vs "
              f"{byte['val_bpb']:.4f} bits per byte ({bpe['val_bpb'] / byte['val_bpb'] - 1:+.1%})")
    for r in rows:
        print(f"last sample, {r['tokenizer']}: {r['sample'][:160]!r}")


if __name__ == "__main__":
    main()

"""Tokenizing a large corpus: speed, memory and the cached second start.

    python benchmarks/bench_tokenize.py            # 50 MB of generated text
    python benchmarks/bench_tokenize.py --mb 200   # the size issue 24 names

On a generated text (words drawn from a fixed list, in lines), with a
byte-level BPE of 4096 tokens trained on its first few MB:
- tokenizing through ``token_cache`` (streamed, in batches, into the cache
  file) against ``tokenizers``' own ``encode_batch`` on the whole text held in
  memory: the ratio of their times (target: within 1.3x);
- the peak RSS of each, measured in a subprocess of its own with
  ``resource.getrusage`` (target for ours: under 500 MB);
- the second start, from the cache: ``load_corpus`` against a ``bytes`` run's
  ``load_corpus`` on the same file (target: under 1 s more).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have "
         "an they you were her she there been one all we their has would when if so no will more time river "
         "stone garden window morning letter country people between little around through").split()

OURS = """
import json, resource, sys, time
from pathlib import Path
from tui_trainer import corpus_sources, token_cache
data, tok = sys.argv[1], sys.argv[2]
docs = corpus_sources.documents(data, tok)
t = time.perf_counter()
_, train, val = token_cache.tokens_for(docs, tok, 0.1, None, say=lambda line: None)
took = time.perf_counter() - t
print(json.dumps({"s": took, "tokens": len(train) + len(val),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

REFERENCE = """
import json, resource, sys, time
from tokenizers import Tokenizer
from tui_trainer.text.tokenizer import _pieces
tok = Tokenizer.from_file(sys.argv[2])
text = open(sys.argv[1], encoding="utf-8").read()
pieces = _pieces(text)
t = time.perf_counter()
n = sum(len(e.ids) for e in tok.encode_batch(pieces, add_special_tokens=False))
took = time.perf_counter() - t
print(json.dumps({"s": took, "tokens": n, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

START = """
import json, sys, time
import torch  # imported before the clock starts: both starts pay it alike
from tui_trainer.config import make_config
from tui_trainer.train.data import load_corpus
t = time.perf_counter()
load_corpus(make_config(dict(data=sys.argv[1], tokenizer=sys.argv[2])))
print(json.dumps({"s": time.perf_counter() - t}))
"""


def generate(path: Path, mb: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    with open(path, "w") as f:
        written = 0
        while written < mb * 1_000_000:
            lines = words[rng.integers(0, len(words), (20_000, 12))]
            block = "\n".join(" ".join(row) for row in lines) + "\n"
            f.write(block)
            written += len(block)


def child(code: str, *args: str, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"a benchmark child failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=50, help="size of the generated text (default 50)")
    ap.add_argument("--vocab", type=int, default=4096, help="the BPE's vocabulary (default 4096)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        text = d / "corpus.txt"
        t = time.perf_counter()
        generate(text, args.mb)
        print(f"generated {text.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t:.1f} s")
        sys.path.insert(0, str(ROOT))
        from tui_trainer.text.tokenizer import train_bpe

        with open(text, encoding="utf-8") as f:
            sample = f.read(4_000_000)
        tok_json = d / "tokenizer.json"
        tok_json.write_bytes(train_bpe(sample, args.vocab, f"bpe:{args.vocab}").data)
        env = dict(os.environ, PYTHONPATH=str(ROOT), TUI_TRAINER_CACHE=str(d / "cache"))

        ref = child(REFERENCE, str(text), str(tok_json), env=env)
        ours = child(OURS, str(text), str(tok_json), env=env)
        if ours["tokens"] != ref["tokens"]:
            print(f"note: ours {ours['tokens']:,} tokens, the reference {ref['tokens']:,}: ours encodes "
                  "the train and validation parts apart (the 10% split), so words at the cut differ")
        mb = text.stat().st_size / 1e6
        ratio = ours["s"] / ref["s"]
        print(f"tokenizers encode_batch (whole text in memory): {ref['s']:.2f} s, {mb / ref['s']:.1f} MB/s, "
              f"peak RSS {ref['rss_mb']:.0f} MB")
        print(f"token_cache (streamed into the cache file):     {ours['s']:.2f} s, {mb / ours['s']:.1f} MB/s, "
              f"peak RSS {ours['rss_mb']:.0f} MB, {ours['tokens']:,} tokens")
        print(f"  time ratio {ratio:.2f}x (target <= 1.3x): {'ok' if ratio <= 1.3 else 'MISSED'}")
        print(f"  peak RSS {ours['rss_mb']:.0f} MB (target < 500 MB): {'ok' if ours['rss_mb'] < 500 else 'MISSED'}")

        cached = min(child(START, str(text), str(tok_json), env=env)["s"] for _ in range(3))
        plain = min(child(START, str(text), "bytes", env=env)["s"] for _ in range(3))
        extra = cached - plain
        print(f"second start (load_corpus): cached {cached:.2f} s, bytes {plain:.2f} s, "
              f"{extra:+.2f} s (target < +1 s): {'ok' if extra < 1 else 'MISSED'}")


if __name__ == "__main__":
    main()

"""What the text tests share: a tiny model's flags and generated prose."""
from __future__ import annotations

import numpy as np

TINY = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--context-length", "16", "--batch-size", "4",
        "--eval-batches", "1", "--sample-tokens", "12", "--warmup-steps", "2", "--threads", "1"]
WORDS = "alpha beta gamma delta epsilon river stone garden window morning".split()


def prose(n_lines: int, seed: int = 0) -> str:
    """``n_lines`` lines of eight words from ``WORDS``, the same for a seed."""
    rng = np.random.default_rng(seed)
    return "\n".join(" ".join(WORDS[i] for i in rng.integers(0, len(WORDS), 8)) for _ in range(n_lines)) + "\n"

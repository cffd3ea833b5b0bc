"""EMA smoothing of the train loss: bias-corrected, vectorised for a whole
log at once, and resumable so a live stream continues where a bulk load
stopped (``series.RunSeries`` keeps the state)."""
from __future__ import annotations

import numpy as np

EMA_BETA = 0.95       # smoothing of the train loss (about a 20-step memory), bias-corrected


def ema_step(state: float, count: int, y: float, beta: float = EMA_BETA) -> tuple[float, int, float]:
    """One point: (raw state, count, smoothed value)."""
    state = beta * state + (1 - beta) * y
    count += 1
    return state, count, state / (1 - beta ** count)


def ema(values: np.ndarray, beta: float = EMA_BETA, state: float = 0.0, count: int = 0,
        block: int = 64) -> tuple[np.ndarray, float, int]:
    """Bias-corrected exponential moving average, vectorised in blocks.

    Returns (smoothed, raw EMA state, count) so a stream can continue where a
    bulk load stopped.  Within a block the recurrence is a small triangular
    matrix product; only the block ends are carried in Python.
    """
    y = np.asarray(values, dtype=np.float64)
    m = len(y)
    if m == 0:
        return np.empty(0), state, count
    pad = -m % block
    rows = np.append(y, np.zeros(pad)).reshape(-1, block)
    i = np.arange(block)
    tri = np.tril(beta ** (i[:, None] - i[None, :]).clip(min=0)) * (1 - beta)
    # Each block's EMA started from zero.  einsum, not @: a matrix product goes to
    # OpenBLAS, whose threads spin for 100x the time on a busy 2-core machine.
    z = np.einsum("ij,kj->ik", rows, tri)
    carry = np.empty(len(rows))           # raw EMA entering each block
    bL = beta ** block
    for r, end in enumerate(z[:, -1].tolist()):
        carry[r] = state
        state = bL * state + end
    raw = z + carry[:, None] * beta ** (i + 1)[None, :]
    raw = raw.ravel()[:m]
    state = float(raw[-1])
    n = count + np.arange(1, m + 1)
    return raw / (1 - beta ** n), state, count + m

"""Generation's KV cache, and its one-token step at fixed shapes.

``KVCache`` keeps one block's keys and values for the positions generated so
far, in a buffer of context-length positions allocated once, so a new token
costs attention over one query, not the whole context (gpt-fast's static
cache).  On the CPU a new token attends over the positions filled (a slice:
fewer bytes read, and a CPU pays for every byte).

``OneToken`` is the step after the prompt: one new token through the model.
On the CPU, where a token's step reads every weight from memory once, its
linear layers take one row through each matrix in the layout that memory
reads fastest (``OneRow``).  On a GPU the step is kept at fixed shapes
(``FixedStep``): the token and its position are device tensors, the keys go
in with ``index_copy_`` and every position is attended with a mask of those
filled, so each token runs the same kernels with the same arguments.  That makes it a CUDA graph: captured once
per sample, then replayed per token, one launch instead of a few hundred,
which is where an eager sample's time goes on a GPU (the kernels themselves
take microseconds at this size).  If capture fails the step runs eagerly at
the same fixed shapes.  ``tests/test_kv_cache.py`` checks on the CPU that the
fixed step's logits match the uncached path and that two tokens at different
positions call the same ops with the same arguments (what a replay needs).
"""
from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
from torch.nn import functional as F

GRAPHS = True  # capture the fixed step as a CUDA graph where CUDA is used


def _autocast(dev: str) -> tuple[bool, torch.dtype]:
    """(whether autocast is on for ``dev``, its dtype)."""
    try:
        return torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev)
    except (TypeError, AttributeError):  # torch < 2.4: a function per device
        if dev == "cpu":
            return torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
        return torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()


def _autocast_without_cache(dev: str) -> Any:
    """The autocast in force on ``dev``, its cache of cast weights off; nothing when none is."""
    on, dtype = _autocast(dev)
    return torch.autocast(dev, dtype=dtype, cache_enabled=False) if on else nullcontext()


def linear(m: nn.Linear, x: torch.Tensor, cache: "KVCache | None") -> torch.Tensor:
    """``m(x)``, or through the cache's ``OneRow`` when generation set one."""
    return m(x) if cache is None or cache.rows is None else cache.rows(m, x)


class OneRow:
    """A CPU token's linear layers, one row (B=1, T=1) through each matrix.

    One row through a matrix is a matrix-vector product, bound by how fast
    memory is read.  torch's ``linear`` reads a matrix wider than deep (out >=
    2 x in: ``c_attn``, ``c_fc``, a large vocabulary's head) at about half the
    speed a row times a row-major transposed copy reads it at, so those are
    read from such a copy (made once per sample: the weights do not change
    while it is drawn); the others as they are.  And the BLAS behind numpy
    (OpenBLAS in its wheels) reads both shapes faster again than torch's on
    some CPUs (2x on a 2-core EPYC, where torch's is MKL), but its threads
    are its own: on a busy machine it can be the slower.  So which of the two
    is used is measured on the model's own matrices, per shape and torch
    thread count, again once the choice is ``CHOICE_S`` old (``backend``);
    numpy's runs with torch at one thread (``torch_threads``), so the two
    thread pools never contend for the cores.  Anything else (several rows,
    autocast, not float32) is ``m(x)``."""

    def __init__(self, modules: Any, backend: str | None = None, t: dict | None = None):
        """``backend`` ("numpy" or "torch"; None: measured) and ``t`` (the
        transposed copies, when already made) are for ``_backend``'s trials."""
        lin = [m for m in modules if isinstance(m, nn.Linear)]
        self.t = t if t is not None else {m: m.weight.detach().t().contiguous() for m in lin
                                          if m.out_features >= 2 * m.in_features}
        self.backend = backend or _backend(self, lin)
        self.torch_threads = 1 if self.backend == "numpy" else None
        self._np = {m: ((self.t[m] if m in self.t else m.weight.detach()).numpy(), m in self.t,
                        None if m.bias is None else m.bias.detach().numpy())
                    for m in lin if m.weight.dtype == torch.float32} if self.backend == "numpy" else {}

    def __call__(self, m: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.size(0) != 1 or x.size(1) != 1 or x.dtype != m.weight.dtype:
            return m(x)
        if m in self._np:
            w, wide, b = self._np[m]
            v = x.detach().reshape(-1).numpy()
            y = v @ w if wide else w @ v
            if b is not None:
                y += b
            return torch.from_numpy(y).view(1, 1, -1)
        row = x.reshape(1, -1)
        wt = self.t.get(m)
        if wt is not None:
            y = row @ wt if m.bias is None else torch.addmm(m.bias, row, wt)
        else:
            y = (torch.mv(m.weight, row[0]) if m.bias is None else torch.addmv(m.bias, m.weight, row[0]))
        return y.view(1, 1, -1)


CHOICE_S = 30.0  # a choice is measured again once it is this old: the load on the machine moves
_CHOSEN: dict[tuple, tuple[str, float]] = {}  # (matrix shapes, torch threads): ("numpy" or "torch", when)


def _backend(rows: OneRow, lin: list[nn.Linear]) -> str:
    """The faster way through ``lin`` for one row: a few rounds of each, on
    the model's first matrices (at most 8: tens of MB read, milliseconds)."""
    sample = [m for m in lin if m.weight.dtype == torch.float32][:8]
    key = (tuple((m.out_features, m.in_features) for m in sample), torch.get_num_threads())
    if not sample:
        return "torch"
    if key not in _CHOSEN or time.monotonic() - _CHOSEN[key][1] > CHOICE_S:
        ways = {name: OneRow(sample, name, rows.t) for name in ("torch", "numpy")}
        xs = {m: torch.full((1, 1, m.in_features), 0.5) for m in sample}  # never the training RNG
        best = {"numpy": float("inf"), "torch": float("inf")}
        with torch.no_grad():
            for _ in range(3):
                for name, way in ways.items():
                    with torch_threads(way.torch_threads):
                        t = time.perf_counter()
                        for m in sample:
                            way(m, xs[m])
                        best[name] = min(best[name], time.perf_counter() - t)
        _CHOSEN[key] = ("numpy" if best["numpy"] < best["torch"] else "torch", time.monotonic())
    return _CHOSEN[key][0]


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's CPU thread count set to ``n`` inside (None: unchanged)."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class FixedStep:
    """The state every block's cache shares in a fixed-shape step: the new
    token's position, and the mask of the positions it sees (those up to its own)."""

    def __init__(self, size: int, device: torch.device):
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.positions = torch.arange(size, device=device)
        self.mask = torch.zeros(1, 1, 1, size, dtype=torch.bool, device=device)

    def update_mask(self) -> None:
        """In place, from ``pos`` (on the device: part of the step)."""
        torch.le(self.positions, self.pos, out=self.mask.view(-1))


class KVCache:
    """One block's keys and values for the positions generated so far (see the module docstring)."""

    def __init__(self, size: int):
        self.size = size
        self.length = 0  # positions filled
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.fixed: FixedStep | None = None  # set by OneToken: one new token at fixed shapes
        self.rows: OneRow | None = None  # set by OneToken on the CPU: a token's linear layers

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
        """Attention of the new positions' queries (B, heads, T, head) over every
        position so far, theirs included; their keys and values are kept."""
        if self.fixed is not None and self.k is not None and k.size(2) == 1:
            return self._attend_fixed(q, k, v)
        start, T = self.length, k.size(2)
        if self.k is None or self.k.shape[:2] != k.shape[:2] or self.k.dtype != k.dtype:
            self.k = k.new_zeros(k.size(0), k.size(1), self.size, k.size(3))
            self.v = torch.zeros_like(self.k)
        assert self.v is not None and start + T <= self.size
        end = self.length = start + T
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        keys, values = self.k[:, :, :end], self.v[:, :, :end]
        if start == 0:
            return F.scaled_dot_product_attention(q, keys, values, dropout_p=dropout_p, is_causal=True)
        # New position i (at start + i) sees every key up to its own: one new token sees them all.
        mask = None if T == 1 else torch.ones(T, end, dtype=torch.bool, device=q.device).tril(start)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, dropout_p=dropout_p)

    def _attend_fixed(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """One new token at ``fixed.pos``, over the whole buffer and the mask:
        no shape or argument depends on the position (``length`` is the host's)."""
        assert self.fixed is not None and self.v is not None
        self.k.index_copy_(2, self.fixed.pos, k.to(self.k.dtype))
        self.v.index_copy_(2, self.fixed.pos, v.to(self.v.dtype))
        return F.scaled_dot_product_attention(q, self.k, self.v, attn_mask=self.fixed.mask)


class CudaGraphs:
    """How ``OneToken`` captures and replays its step on CUDA (a test passes
    another with the same two methods to replay it on the CPU)."""

    def warm_up(self, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Run ``fn`` once before a capture, on a side stream (torch's CUDA graphs notes)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = fn()
        torch.cuda.current_stream().wait_stream(side)
        return out

    def capture(self, fn: Callable[[], torch.Tensor]) -> tuple[Callable[[], Any], torch.Tensor]:
        """(replay, the output buffer each replay writes): ``fn``'s kernels, not run.

        Not ``torch.cuda.graph``: it empties the allocator's caches first, so
        the training step after every sample would allocate its memory again.
        ``thread_local``: the checkpoint writer's thread may be copying a
        snapshot meanwhile; only this thread's calls are held to the capture's rules."""
        graph = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            graph.capture_begin(capture_error_mode="thread_local")
            try:
                out = fn()
            finally:
                graph.capture_end()
        torch.cuda.current_stream().wait_stream(side)
        return graph.replay, out


class OneToken:
    """``one_token(token)``: the logits (B, 1, vocab) for one new token
    (B, 1) after the positions ``cache`` holds, through ``model(token,
    cache)``.  ``fixed``: at fixed shapes (the default on a GPU), and then
    captured once and replayed through ``graphs`` (``CudaGraphs`` on a GPU).
    A capture that fails leaves the fixed step eager."""

    def __init__(self, model: Callable[..., torch.Tensor], cache: list[KVCache], *, fixed: bool | None = None,
                 graphs: Any = "auto"):
        assert cache and cache[0].k is not None, "fill the cache with the prompt first"
        self.model, self.cache = model, cache
        device = cache[0].k.device
        self.fixed = device.type == "cuda" if fixed is None else fixed
        if graphs == "auto":
            graphs = CudaGraphs() if self.fixed and device.type == "cuda" and GRAPHS else None
        self.graphs = graphs if self.fixed else None
        self.replay: Callable[[], Any] | None = None
        self.out: torch.Tensor | None = None
        self.eager_calls = 0
        if device.type == "cpu" and not self.fixed and not _autocast("cpu")[0]:
            rows = OneRow(model.modules()) if isinstance(model, nn.Module) else None
            for c in cache:
                c.rows = rows
        if self.fixed:
            self.state = FixedStep(cache[0].size, device)
            for c in cache:
                c.fixed = self.state
            self.token = torch.zeros(cache[0].k.size(0), 1, dtype=torch.long, device=device)

    def __call__(self, token: torch.Tensor) -> torch.Tensor:
        length = self.cache[0].length
        if length + 1 > self.cache[0].size:
            raise ValueError(f"sequence of {length + 1} tokens exceeds the cache's {self.cache[0].size}")
        if not self.fixed:
            rows = self.cache[0].rows
            with torch_threads(rows.torch_threads if rows is not None else None):
                return self.model(token, self.cache)
        self.token.copy_(token)
        self.state.pos.fill_(length)
        out = self._run()
        for c in self.cache:
            c.length = length + 1
        return out.clone()  # a replay's output buffer is the next replay's too

    def step(self) -> torch.Tensor:
        """The fixed step itself: reads ``token`` and ``state.pos``, writes the caches."""
        # Autocast's cache of cast weights must be off while a graph is captured (torch's CUDA graphs notes).
        with _autocast_without_cache(self.token.device.type):
            self.state.update_mask()
            return self.model(self.token, self.cache)

    def _run(self) -> torch.Tensor:
        if self.replay is not None:
            self.replay()
            assert self.out is not None
            return self.out
        if self.graphs is not None and self.eager_calls >= 1:  # warmed up once: capture, then replay
            try:
                replay, out = self.graphs.capture(self.step)
                replay()
                self.replay, self.out = replay, out
                return out
            except Exception:  # noqa: BLE001 - a capture that fails costs the speed, never the sample
                self.graphs = None
        self.eager_calls += 1
        return self.graphs.warm_up(self.step) if self.graphs is not None else self.step()

"""Data-parallel training across the processes torchrun starts.

    torchrun --nproc_per_node=N -m tui_trainer train --headless ...

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; ``setup`` reads them and joins
the process group (NCCL on CUDA, gloo on CPU).  With no such variables the
world is one process and nothing here does anything: no process group, no
collective, the single-process run is untouched.

How the ranks stay in step:
- ``--batch-size`` is per rank; the global batch is batch_size x world.  All
  ranks draw the same global batch of window starts from one seeded generator
  and each takes its own slice of rows, so N ranks see exactly the windows a
  single process with an N-times larger batch would see, and a checkpoint's
  sampler state is valid on every rank.
- Gradients are averaged by DDP; the logged loss and grad norm are averaged
  across ranks too, so every rank makes the same skip-or-step decision on a
  NaN and the log shows the global loss.
- Only rank 0 listens for commands.  Once per step every rank joins one small
  all-reduce carrying rank 0's commands, every rank's "please stop" flag and
  every rank's "settle now" flag (its steps in flight waited too long for the
  log), so a pause, eval, checkpoint, stop or settle happens on all ranks at
  the same step.  That all-reduce is of CPU tensors over a gloo group of its
  own (``control_group``), also under NCCL: the host reads it without
  waiting for the GPU, so a step has no host sync (train/guard.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

from ..control.commands import MAX_COMMANDS_PER_STEP, WITH_ARGS, Command, Order
from ..config import UserError
from .data import BatchSampler, _windows
from .guard import host_only


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # we called init_process_group, so we tear it down
    control_group: Any = None  # gloo, CPU tensors: the per-step command all-reduce never waits for a GPU

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f" x{self.world_size} ranks ({self.backend})" if self.enabled else ""

    # --- model and data ---
    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        # GPT has no buffers, so DDP's per-forward buffer sync is a no-op.
        return DDP(model, device_ids=ids)

    def sampler(self, token_ids: Any, batch_size: int, context_length: int, seed: int,
                device: torch.device | str = "cpu") -> BatchSampler:
        if not self.enabled:
            return BatchSampler(token_ids, batch_size, context_length, seed=seed, device=device)
        return ShardedBatchSampler(token_ids, batch_size, context_length, seed=seed, device=device,
                                   rank=self.rank, world_size=self.world_size)

    def shard_batches(self, batches: list[tuple[torch.Tensor, torch.Tensor]]
                      ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's rows of each batch (cut with the global batch size)."""
        if not self.enabled:
            return batches
        out = []
        for x, y in batches:
            xs, ys = torch.tensor_split(x, self.world_size), torch.tensor_split(y, self.world_size)
            if len(xs[self.rank]):
                out.append((xs[self.rank], ys[self.rank]))
        return out

    # --- collectives (never called when the world is one process) ---
    def mean(self, values: Sequence[float] | torch.Tensor) -> list[float]:
        """Average numbers across ranks: one all-reduce, one host sync."""
        t = values if isinstance(values, torch.Tensor) else torch.tensor(list(values), dtype=torch.float64)
        return self.mean_tensor(t).tolist()

    def mean_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """Average a tensor across ranks, in float64 on the device: one all-reduce, no host sync."""
        t = t.detach().to(self.device, torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t / self.world_size

    def sync_commands(self, commands: Sequence[Any], stop: bool,
                      settle: bool = False) -> tuple[list[Any], bool, bool]:
        """Every rank calls this at the same point of every step.

        Rank 0 passes the commands it took from its queue (at most
        ``MAX_COMMANDS_PER_STEP``; the others pass none); each rank passes its
        own stop flag (a signal) and its own settle flag.  All ranks get rank
        0's commands, the OR of the stop flags and the OR of the settle flags:
        one all-reduce of 10 integers on the CPU (``control_group``), plus,
        only in a step that carries a ``set`` or ``sample``, one broadcast of
        their arguments.
        """
        codes = list(Command)
        n = MAX_COMMANDS_PER_STEP
        t = host_only(torch.zeros(n + 2, dtype=torch.int64))
        orders: list[Order | None] = []
        if self.is_main:
            for i, c in enumerate(commands[:n]):
                t[i] = codes.index(c.command if isinstance(c, Order) else Command(c)) + 1
                orders.append(c if isinstance(c, Order) else None)
        t[n], t[n + 1] = int(stop), int(settle)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control_group)
        agreed = t.tolist()  # CPU memory: no wait for a GPU
        got = [c for c in agreed[:n] if c > 0]
        if any(codes[c - 1] in WITH_ARGS for c in got):
            box = [orders if self.is_main else None]
            dist.broadcast_object_list(box, src=0, group=self.control_group)
            orders = box[0] or []
        out = [orders[i] if i < len(orders) and orders[i] is not None else codes[c - 1]
               for i, c in enumerate(got)]
        return out, bool(agreed[n]), bool(agreed[n + 1])

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            # Leave together: a rank that tears its connections down while
            # another is still finishing (rank 0's final checkpoint) can make
            # gloo abort in a background thread.  Bounded, so a rank that died
            # cannot hang the others here.
            try:
                if self.backend == "gloo":
                    dist.monitored_barrier(timeout=timedelta(seconds=60))
                else:
                    dist.barrier()
            except Exception:
                pass
            dist.destroy_process_group()
            self.owns_group = False


class ShardedBatchSampler(BatchSampler):
    """Rank ``rank``'s rows of the global batch a single process would draw."""

    def __init__(self, token_ids: Any, batch_size: int, context_length: int, seed: int,
                 device: torch.device | str = "cpu", *, rank: int, world_size: int):
        super().__init__(token_ids, batch_size, context_length, seed=seed, device=device)
        self.rank = rank
        self.world_size = world_size

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.batch_size
        starts = torch.randint(0, self.high + 1, (b * self.world_size,), generator=self.generator)
        w = _windows(self.data, starts[self.rank * b:(self.rank + 1) * b], self.context_length + 1)
        if self.device.type == "cuda":
            w = w.pin_memory().to(self.device, non_blocking=True)
        return w[:, :-1], w[:, 1:]


def _env_int(environ: dict[str, str] | os._Environ, name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}={raw!r} is not a number; "
                        "start several processes with torchrun --nproc_per_node=N") from None


def from_env(environ: dict[str, str] | os._Environ | None = None) -> Dist:
    """This process's place in the world, from torchrun's variables."""
    env = os.environ if environ is None else environ
    world = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local = _env_int(env, "LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"RANK={rank} does not fit WORLD_SIZE={world}; start the processes with torchrun")
    return Dist(rank=rank, world_size=world, local_rank=local)


def setup(hw: Any) -> Dist:
    """Join the process group when torchrun started us; fix ``hw.device`` to
    this rank's GPU.  A world of one returns at once and changes nothing.
    The caller (``cli``) does this before building the loop and passes the
    ``Dist`` in; ``close()`` leaves the group."""
    d = from_env()
    if not d.enabled:
        d.device = hw.device
        return d
    if hw.device.type == "cuda":
        n = torch.cuda.device_count()
        if d.local_rank >= n:
            raise UserError(f"LOCAL_RANK {d.local_rank} but only {n} GPUs are visible; "
                            f"use --nproc_per_node={n} or fewer")
        torch.cuda.set_device(d.local_rank)
        hw.device = torch.device("cuda", d.local_rank)
        d.backend = "nccl"
    elif hw.device.type == "cpu":
        d.backend = "gloo"
    else:
        raise UserError(f"data-parallel training supports CUDA (nccl) and CPU (gloo), not {hw.device.type}; "
                        "pass --device cpu or run one process")
    d.device = hw.device
    if dist.is_initialized():
        d.backend = dist.get_backend()
    else:
        try:
            dist.init_process_group(backend=d.backend)
        except ValueError as e:  # WORLD_SIZE set by hand without torchrun's other variables (MASTER_ADDR, ...)
            raise UserError(f"cannot join the other processes ({str(e).splitlines()[0][:200]}); start them with "
                            "torchrun --nproc_per_node=N, or unset WORLD_SIZE for one process") from None
        d.owns_group = True
    if dist.get_world_size() != d.world_size or dist.get_rank() != d.rank:
        raise UserError("the process group does not match RANK/WORLD_SIZE; start the processes with torchrun")
    d.control_group = dist.new_group(backend="gloo")  # every rank, in the same order: a collective
    return d

"""A 124M-shaped checkpoint (12 layers x 768 wide x 1024 context, vocab 50304,
fp32 with its AdamW state, ~1.5 GB) on CPU: how long training is blocked.

    python benchmarks/bench_checkpoint.py              # 2 rounds, files under /tmp
    python benchmarks/bench_checkpoint.py --rounds 3 --dir /some/disk

Arms, taking turns in each round so a neighbour's load slows them alike
(each figure is the median over the rounds):

- ``plain``: ``torch.save`` of the trainer's state to a file, then fsync;
- ``sync``: the trainer's save as it was before (``--sync-checkpoints``: the
  finite-weights check, the atomic write, latest.pt, pruning), all blocking;
- ``async``: the default.  The save returns once the buffers are set up;
  the copy into them runs on the writer's thread while the next training
  step does its forward and backward, and that step's optimizer update waits
  for the copy (``CheckpointManager.guard``).  Blocked = the save call + that
  wait (the record's ``blocked_s``); the write's own time is ``write``, and
  the step's time with the write running beside it is shown too: on 2 cores
  the write takes CPU from training.

Then the parts of the synchronous save, to show where its time goes.
The trainer is a real ``engine.Trainer`` at that shape; its AdamW moments are
filled by one step on zero gradients (a 124M training step on a small CPU
takes too long for a benchmark, and the bytes are the same).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from bench_gpu import GPT2_SMALL, synthetic_tokens  # noqa: E402
from tui_trainer.run import checkpoint as ckpt  # noqa: E402
from tui_trainer.config import make_config  # noqa: E402
from tui_trainer.train.engine import Trainer  # noqa: E402
from tui_trainer.train.model import weights_finite  # noqa: E402
from tui_trainer.records import Checkpoint  # noqa: E402


class Tape:
    def __init__(self) -> None:
        self.saved: list[Checkpoint] = []

    def emit(self, r: object) -> None:
        if isinstance(r, Checkpoint):
            self.saved.append(r)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def plain_save(trainer: Trainer, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(trainer.state_dict(), f)
        f.flush()
        os.fsync(f.fileno())


def save(trainer: Trainer, sync: bool) -> None:
    trainer.step += 1  # a new step file each time, as in a run
    # With or without --sync-checkpoints, as the trainer binds it at its start (the optimizer stays guarded).
    trainer.ckpts.bind(trainer.state_dict, check=weights_finite, background=not sync)
    trainer.ckpts.after(trainer.step, "save")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--dir", default="/tmp", help="where the files go (default /tmp)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tokens", type=int, default=64, help="tokens in the training step after each save")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-ckpt-") as tmp:
        tmp_path = Path(tmp)
        shape = dict(GPT2_SMALL, batch_size=1)
        data = synthetic_tokens(tmp_path / "tokens.bin", 1 << 16, shape["vocab_size"])
        cfg = make_config(dict(shape, data=str(data), device="cpu", dtype="fp32", steps=1000, eval_every=1000,
                               eval_batches=1, sample_tokens=1, keep=1, threads=args.threads))
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        tape = Tape()
        trainer = Trainer(cfg, run_dir, [tape])
        for q in trainer.params:
            q.grad = torch.zeros_like(q)
        trainer.optimizer.step()  # the AdamW moments exist from here on
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.step = 1
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in _tensors(trainer.state_dict())}
        nbytes = sum(storages.values())  # tied weights once, as torch.save writes them
        print(f"124M-shaped state: {trainer.model.num_params() / 1e6:.1f}M params + AdamW, {nbytes / 2**30:.2f} GiB; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads; files in {args.dir}", flush=True)

        x = torch.randint(0, shape["vocab_size"], (1, args.tokens))

        def train_step() -> None:  # a small step of the same model: the optimizer step waits for the copy
            logits = trainer.model(x)
            logits.float().mean().backward()
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)

        def async_save() -> tuple[float, float, float]:
            save(trainer, sync=False)
            step_s = timed(train_step)
            trainer.ckpts.wait()
            rec = tape.saved[-1]
            return rec.blocked_s or 0.0, rec.write_s or 0.0, step_s

        def async_save_no_overlap() -> float:  # the optimizer step at once: the whole copy is waited for
            save(trainer, sync=False)
            trainer.optimizer.step()  # no gradients: changes nothing, but waits like a real step
            trainer.ckpts.wait()
            return tape.saved[-1].blocked_s or 0.0

        first_async = async_save()[0]  # allocates the snapshot buffers
        plain, sync, blocked, write, step_busy, step_alone, worst = [], [], [], [], [], [], []
        for _ in range(args.rounds):
            plain.append(timed(lambda: plain_save(trainer, tmp_path / "plain.pt")))
            (tmp_path / "plain.pt").unlink()
            sync.append(timed(lambda: save(trainer, sync=True)))
            b, w, st = async_save()
            blocked.append(b)
            write.append(w)
            step_busy.append(st)
            step_alone.append(timed(train_step))
            worst.append(async_save_no_overlap())
        med = statistics.median
        print(f"{'plain torch.save + fsync':34s} {med(plain):6.2f} s")
        print(f"{'sync save (--sync-checkpoints)':34s} {med(sync):6.2f} s")
        print(f"{'async save: training blocked':34s} {med(blocked):6.2f} s   (the first save, allocating the "
              f"buffers: {first_async:.2f} s)")
        print(f"{'async save: background write':34s} {med(write):6.2f} s   (snapshot copy, check, write, fsync, "
              "rename, links)")
        print(f"{'the step during the write':34s} {med(step_busy):6.2f} s   (alone: {med(step_alone):.2f} s; "
              f"{args.tokens} tokens: the write shares the CPU)")
        print(f"{'async, nothing to overlap: blocked':34s} {med(worst):6.2f} s   (the optimizer step right "
              "after the save: the whole snapshot copy)")
        print(f"blocked / sync save = {med(blocked) / med(sync):.3f}   blocked / plain save = "
              f"{med(blocked) / med(plain):.3f}   (done: <= 0.25)")
        print(f"nothing to overlap: blocked / sync save = {med(worst) / med(sync):.3f}   blocked / plain save = "
              f"{med(worst) / med(plain):.3f}", flush=True)

        print("\nwhere a synchronous save's time goes (one pass each):")
        old_check = timed(lambda: all(bool(torch.isfinite(q).all()) for q in trainer.model.parameters()))
        parts = [("finite check, isfinite per tensor (before)", old_check),
                 ("finite check, one max-abs pass (now)", timed(lambda: weights_finite(trainer.state_dict()))),
                 ("state_dict()", timed(trainer.state_dict)),
                 ("snapshot copy into reused buffers", timed(lambda: trainer.ckpts._snapshots.copy(trainer.state_dict())))]
        state = trainer.state_dict()
        target = tmp_path / "parts.pt"
        with open(target, "wb") as f:
            parts.append(("torch.save to the page cache", timed(lambda: torch.save(state, f))))
            parts.append(("fsync of the file", timed(lambda: os.fsync(f.fileno()))))
        parts.append(("fsync of the folder", timed(lambda: ckpt._fsync_dir(tmp_path))))
        parts.append(("latest.pt: hard link + rename + fsync", timed(lambda: ckpt._link_atomic(target, tmp_path / "l.pt"))))
        target.unlink()  # latest.pt still links the bytes
        parts.append(("prune: unlink the last link of a step file", timed((tmp_path / "l.pt").unlink)))
        for name, s in parts:
            print(f"  {name:44s} {s:6.2f} s")


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


if __name__ == "__main__":
    main()

"""A fork of a data-parallel run under torchrun (2 gloo ranks on CPU) is the parent's continuation, bitwise."""
from __future__ import annotations

from test_distributed import TINY, records, torchrun


def test_a_fork_with_two_ranks_continues_its_parent_bitwise(tmp_path):
    parent, fork = tmp_path / "ddp", tmp_path / "ddp-fork"
    steps = ["--steps", "8", "--eval-every", "4", "--batch-size", "4", "--log-every", "1", "--eval-batches", "1",
             "--sample-tokens", "4"]
    proc = torchrun([*steps, *TINY, "--out", str(parent)], tmp_path)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    proc = torchrun(["--fork", f"{parent}@4", "--out", str(fork)], tmp_path)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    theirs = {r["step"]: r["train_loss"] for r in records(parent) if r["type"] == "train"}
    mine = {r["step"]: r["train_loss"] for r in records(fork) if r["type"] == "train"}
    start = records(fork)[0]
    assert start["parent"]["step"] == 4 and "x2 ranks (gloo)" in start["device"]
    assert sorted(mine) == [5, 6, 7, 8] and mine == {s: theirs[s] for s in mine}  # the same floats
    assert [r["type"] for r in records(fork)].count("run_start") == 1  # rank 0 alone wrote
    assert "rank 1: run finished at step 8" in err

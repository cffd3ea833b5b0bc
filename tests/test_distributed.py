"""Data-parallel training: two gloo processes on CPU started by torchrun."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist

from tui_trainer import cli
from tui_trainer.train import distributed
from tui_trainer.config import UserError
from tui_trainer.control.channel import request
from tui_trainer.train.data import BatchSampler, make_batches
from tui_trainer.train.engine import Trainer, train

REPO = Path(__file__).resolve().parents[1]
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--context-length", "16",
        "--eval-batches", "4", "--sample-tokens", "8", "--warmup-steps", "5", "--log-every", "5"]


# --- one process: nothing changes -------------------------------------------

def test_world_of_one_from_a_plain_environment():
    d = distributed.from_env({})
    assert (d.rank, d.world_size, d.enabled, d.is_main) == (0, 1, False, True)
    assert d.describe() == ""


def test_torchrun_variables_are_read():
    d = distributed.from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (d.rank, d.world_size, d.local_rank, d.enabled, d.is_main) == (1, 4, 1, True, False)


@pytest.mark.parametrize("env, fragment", [
    ({"WORLD_SIZE": "two"}, "not a number"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "does not fit"),
])
def test_bad_torchrun_variables_are_one_line_errors(env, fragment):
    with pytest.raises(UserError, match=fragment):
        distributed.from_env(env)


def test_world_size_set_by_hand_without_torchrun_is_one_line_and_no_folder(tmp_path, monkeypatch, capsys):
    for var in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    out = tmp_path / "run"
    assert cli.main(["train", "--headless", "--steps", "6", "--threads", "1", "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot join the other processes") and "torchrun" in err and "\n" not in err
    assert not out.exists()


def test_single_process_run_uses_no_collectives(tiny_cfg, tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)

    def forbidden(*a, **k):
        raise AssertionError("a collective in a single-process run")

    monkeypatch.setattr(torch_dist, "all_reduce", forbidden)
    monkeypatch.setattr(torch_dist, "init_process_group", forbidden)
    (tmp_path / "r").mkdir()
    trainer = Trainer(tiny_cfg(steps=6, eval_every=3), tmp_path / "r")
    assert not trainer.dist.enabled and trainer.train_model is trainer.model
    assert type(trainer.sampler) is BatchSampler
    assert trainer.run().status == "finished"
    assert trainer.state_dict()["world_size"] == 1


# --- sharding ---------------------------------------------------------------

def test_ranks_together_draw_the_single_process_global_batch():
    data = torch.arange(5000, dtype=torch.int64) % 251
    single = BatchSampler(data, 8, 16, seed=3)
    ranks = [distributed.ShardedBatchSampler(data, 4, 16, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(5):
        x, y = single.next()
        parts = [s.next() for s in ranks]
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
    # The generator state is the same on every rank, so rank 0's checkpoint fits all.
    assert torch.equal(ranks[0].state_dict()["generator"], ranks[1].state_dict()["generator"])


def test_eval_batches_are_split_by_rows():
    data = torch.arange(3000, dtype=torch.int64) % 97
    batches = make_batches(data, 8, 16, max_batches=3)
    shards = [distributed.Dist(rank=r, world_size=2).shard_batches(batches) for r in range(2)]
    for i, (x, _) in enumerate(batches):
        assert torch.equal(torch.cat([shards[0][i][0], shards[1][i][0]]), x)


def test_resume_refuses_a_different_world_size(tiny_cfg, tmp_path):
    trainer = Trainer(tiny_cfg(steps=8, eval_every=4), tmp_path / "r")
    state = trainer.state_dict()
    state["world_size"] = 2
    with pytest.raises(UserError, match="nproc_per_node=2"):
        Trainer(tiny_cfg(steps=8, eval_every=4), tmp_path / "s").load_state_dict(state)


# --- two processes with torchrun --------------------------------------------

def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def torchrun(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tui_trainer", "train", "--headless", "--threads", "1", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines() if line.strip()]


def wait_for(pred, timeout: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    return False


def test_two_ranks_match_one_process_with_the_same_global_batch(tmp_path):
    steps = ["--steps", "24", "--eval-every", "12", "--batch-size", "4", "--seed", "7"]
    proc = torchrun([*steps, *TINY, "--out", str(tmp_path / "ddp")], tmp_path)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]

    from tui_trainer.cli import build_parser, config_from_args

    args = build_parser().parse_args(["train", *steps, *TINY, "--batch-size", "8", "--threads", "1",
                                      "--out", str(tmp_path / "one")])
    train(config_from_args(args), tmp_path / "one")

    ddp, one = records(tmp_path / "ddp"), records(tmp_path / "one")
    # One writer: one run_start, one run_end, each step once.
    assert [r["type"] for r in ddp].count("run_start") == 1
    assert [r["type"] for r in ddp].count("run_end") == 1
    assert "x2 ranks (gloo)" in ddp[0]["device"]
    assert [r["step"] for r in ddp if r["type"] == "train"] == list(range(1, 25))
    for kind, key in (("train", "train_loss"), ("eval", "val_loss"), ("eval", "train_loss")):
        a = [r[key] for r in ddp if r["type"] == kind]
        b = [r[key] for r in one if r["type"] == kind]
        assert len(a) == len(b) > 0
        assert a == pytest.approx(b, abs=1e-4), kind
    # The global batch is 2 x 4 rows: tokens count both ranks.
    assert ddp[-2]["tokens"] == one[-2]["tokens"] if ddp[-2]["type"] == "train" else True
    assert [r["tokens"] for r in ddp if r["type"] == "train"][-1] == 24 * 8 * 16
    # Only rank 0 wrote files; no stray logs or sockets.
    names = {p.name for p in (tmp_path / "ddp").iterdir()}
    assert "control.sock" not in names and {"losses.jsonl", "latest.pt"} <= names
    assert "rank 1: run finished at step 24" in err


def test_commands_over_the_control_channel_reach_both_ranks_then_resume(tmp_path, capsys):
    run = tmp_path / "run"
    proc = torchrun(["--steps", "100000", "--eval-every", "100000", "--batch-size", "4", *TINY,
                     "--out", str(run)], tmp_path)
    try:
        assert wait_for(lambda: (run / "control.sock").exists() and request(run, "status")["step"] >= 3), \
            "the run never served its control channel"
        assert request(run, "pause")["ok"]
        assert wait_for(lambda: any(r["type"] == "pause" for r in records(run)))
        paused_at = request(run, "status")["step"]
        assert request(run, "eval")["ok"]
        assert wait_for(lambda: any(r["type"] == "eval" and r["forced"] for r in records(run)))
        assert request(run, "checkpoint")["ok"]
        assert wait_for(lambda: any(r["type"] == "checkpoint" and r["reason"] == "manual" for r in records(run)))
        assert request(run, "status")["step"] == paused_at  # neither rank trained while paused
        assert request(run, "resume")["ok"]
        assert wait_for(lambda: request(run, "status")["step"] > paused_at + 2)
        assert request(run, "stop")["ok"]
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    recs = records(run)
    end = recs[-1]
    assert end["type"] == "run_end" and end["status"] == "stopped"
    # Rank 1 stopped at the very step rank 0 did: no deadlock, no rank left behind.
    assert f"rank 1: run stopped at step {end['step']}" in err
    assert [r["type"] for r in recs].count("run_start") == 1
    # The resume hint is the torchrun command the run was started with (issue 20 item 14).
    assert f"resume: {sys.executable} -m torch.distributed.run --standalone --nproc_per_node=2 -m tui_trainer " \
           f"train --headless --resume {run}" in out, out[-2000:]
    steps = [r["step"] for r in recs if r["type"] == "train"]
    assert steps == list(range(1, end["step"] + 1))
    assert not (run / "control.sock").exists()

    # Resume with the same world size continues; with one process it is refused.
    assert cli.main(["train", "--headless", "--resume", str(run), "--steps", str(end["step"] + 4)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "nproc_per_node=2" in err
    proc = torchrun(["--resume", str(run), "--steps", str(end["step"] + 4)], tmp_path)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    recs = records(run)
    assert recs[-1]["type"] == "run_end" and recs[-1]["status"] == "finished"
    assert recs[-1]["step"] == end["step"] + 4


def test_no_host_sync_inside_a_step_under_ddp(tmp_path):
    """Two ranks: the steps between log intervals read nothing back from the
    device, and neither does the per-step command sync (CPU tensors over its
    own gloo group); every step is still reported, in order, on both ranks.
    (Before: one all-reduce on the device and a read of it every step.)"""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tests" / "ddp_sync_probe.py"), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        got = json.loads((tmp_path / f"syncs.{rank}.json").read_text())
        assert (got["status"], got["step"]) == ("finished", 24)
        boundary = {s for s in range(1, 25) if s % got["log_every"] == 0 or s % got["eval_every"] == 0}
        inside = [(s, n) for s, n in got["per_step"] if s not in boundary]
        assert len(inside) >= 12
        assert all(n == 0 for _, n in inside), f"rank {rank}: host syncs inside steps: {inside}"
        assert not [(s, c) for s, c in got["between"] if s not in boundary | {0}], got["between"]
    assert json.loads((tmp_path / "syncs.0.json").read_text())["train"] == list(range(1, 25))  # rank 0 reports


def test_a_lagging_rank_settles_every_rank_at_the_same_steps(tmp_path):
    """Rank 1's steps wait too long for the log at every step, rank 0's never:
    both settle at the same steps (the flag rides the command all-reduce),
    so their collectives pair up and the run ends with every step logged."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tests" / "ddp_sync_probe.py"), str(tmp_path), "1"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = [json.loads((tmp_path / f"syncs.{rank}.json").read_text()) for rank in (0, 1)]
    assert all((g["status"], g["step"]) == ("finished", 24) for g in got)
    assert got[0]["settles"] == got[1]["settles"]
    assert len(got[0]["settles"]) > 24 // got[0]["log_every"] + 2  # more than the log intervals: the lag's
    assert got[0]["train"] == list(range(1, 25))


def test_the_settle_flag_is_agreed_like_the_stop_flag():
    """The settle flag is agreed like the stop flag: any rank's lag settles all."""
    import torch.multiprocessing as mp

    mp.spawn(_agree_on_settle, args=(2, _free_port()), nprocs=2, join=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agree_on_settle(rank: int, world: int, port: int) -> None:
    torch_dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        d = distributed.Dist(rank=rank, world_size=world, backend="gloo",
                             control_group=torch_dist.new_group(backend="gloo"))
        for lag0, lag1 in ((False, False), (True, False), (False, True), (True, True)):
            cmds, stop, settle = d.sync_commands([], False, lag0 if rank == 0 else lag1)
            assert (cmds, stop, settle) == ([], False, lag0 or lag1)
    finally:
        torch_dist.destroy_process_group()

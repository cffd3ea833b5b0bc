"""Checkpoints: atomic writes, pruning, links, and safe loading."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from tui_trainer.run import checkpoint as ckpt
from tui_trainer import cli

REPO = Path(__file__).resolve().parents[1]
TINY = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--context-length", "16", "--batch-size", "4",
        "--eval-batches", "1", "--sample-tokens", "8", "--warmup-steps", "2", "--threads", "1"]


def _state(step: int, size: int = 16) -> dict:
    return {"format": ckpt.FORMAT, "step": step, "tokens": step * 10, "config": {"seed": 1},
            "model": {"w": torch.full((size,), float(step))}, "optimizer": {}, "sampler": {}, "rng": {}}


def test_save_links_latest_and_best_and_prunes(tmp_path):
    for step in (10, 20, 30, 40):
        ckpt.save_checkpoint(_state(step), tmp_path, step, keep=1, best=step == 20)
    # keep=1: the newest step file and one older one
    assert [s for s, _ in ckpt.list_step_checkpoints(tmp_path)] == [30, 40]
    assert ckpt.load_checkpoint(tmp_path / ckpt.LATEST)["step"] == 40
    assert ckpt.load_checkpoint(tmp_path)["step"] == 40  # a folder means its latest.pt
    # best.pt survives the pruning of the step file it was linked from
    assert ckpt.load_checkpoint(tmp_path / ckpt.BEST)["step"] == 20
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_keep_zero_keeps_only_the_newest_step_file(tmp_path):
    for step in (1, 2, 3):
        ckpt.save_checkpoint(_state(step), tmp_path, step, keep=0, best=False)
    assert [s for s, _ in ckpt.list_step_checkpoints(tmp_path)] == [3]


def _one_line_error(path) -> str:
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.load_checkpoint(path)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400
    return msg


def test_truncated_checkpoint_is_a_clean_error(tmp_path):
    ckpt.save_checkpoint(_state(5, size=20_000), tmp_path, 5, keep=2, best=False)
    data = (tmp_path / "ckpt-step00000005.pt").read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        bad = tmp_path / f"cut{cut}.pt"
        bad.write_bytes(data[:cut])
        assert "truncated or not a tui-trainer checkpoint" in _one_line_error(bad)


def test_random_bytes_and_foreign_files_are_clean_errors(tmp_path):
    rnd = tmp_path / "random.pt"
    rnd.write_bytes(random.Random(0).randbytes(50_000))
    assert "truncated or not a tui-trainer checkpoint" in _one_line_error(rnd)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, foreign)  # a loadable file, but not ours
    assert "not a tui-trainer checkpoint" in _one_line_error(foreign)
    partial = tmp_path / "partial.pt"
    torch.save({"format": ckpt.FORMAT, "step": 3}, partial)
    assert "lacks" in _one_line_error(partial)
    assert "not found" in _one_line_error(tmp_path / "nope.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.target}",))


def test_loading_never_runs_code_from_the_file(tmp_path):
    _Evil.target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "payload": _Evil()}, path)
    _one_line_error(path)
    assert not _Evil.target.exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real run folder with checkpoints at steps 4 and 8."""
    d = tmp_path_factory.mktemp("ck") / "run"
    n = torch.get_num_threads()
    try:
        assert cli.main(["train", "--headless", "--out", str(d), "--steps", "8", "--eval-every", "4", *TINY]) == 0
    finally:
        torch.set_num_threads(n)
    return d


def _copy_run(src: Path, dst: Path) -> Path:
    """Copy a run folder, keeping latest.pt a hard link of its step file."""
    dst.mkdir()
    for p in src.iterdir():
        if p.is_file() and p.name not in (ckpt.LATEST, ckpt.BEST):
            (dst / p.name).write_bytes(p.read_bytes())
    newest = ckpt.list_step_checkpoints(dst)[-1][1]
    os.link(newest, dst / ckpt.LATEST)
    return dst


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_resume_from_a_damaged_latest_is_one_error_line(tiny_run, tmp_path, capsys, damage):
    d = _copy_run(tiny_run, tmp_path / "run")
    latest = d / ckpt.LATEST
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 3] if damage == "truncated" else os.urandom(len(data)))
    log_before = (d / "losses.jsonl").read_bytes()
    rc = cli.main(["train", "--headless", "--resume", str(d), "--steps", "12"])
    err = capsys.readouterr().err.strip()
    assert rc == cli.EXIT_FAILED  # the flags were right; the file is not
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert "truncated or not a tui-trainer checkpoint" in err
    assert "ckpt-step00000004.pt" in err  # names a sound checkpoint to resume from instead
    assert (d / "losses.jsonl").read_bytes() == log_before  # nothing written


_WRITER = textwrap.dedent("""
    import sys, torch
    from tui_trainer import checkpoint as ckpt
    run_dir, start = sys.argv[1], int(sys.argv[2])
    big = torch.randn(1_000_000)  # 4 MB: each save takes a while, so kills land mid-write
    step = start
    while True:
        w = big + step
        state = {"format": ckpt.FORMAT, "step": step, "tokens": 0, "config": {}, "model": {"w": w},
                 "check": w[::1000].clone(), "optimizer": {}, "sampler": {}, "rng": {}}
        ckpt.save_checkpoint(state, run_dir, step, keep=2, best=step % 3 == 0)
        print(step, flush=True)
        step += 1
""")


def test_writer_killed_mid_save_leaves_loadable_checkpoints(tmp_path):
    rng = random.Random()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = 0
    for _ in range(2):
        p = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(start)],
                             stdout=subprocess.PIPE, text=True, env=env)
        assert p.stdout is not None
        p.stdout.readline()  # one save done: latest.pt exists
        time.sleep(rng.uniform(0.0, 0.4))
        p.send_signal(signal.SIGKILL)
        p.wait()
        latest = ckpt.load_checkpoint(tmp_path / ckpt.LATEST)
        steps = [s for s, _ in ckpt.list_step_checkpoints(tmp_path)]
        # latest.pt is the newest whole save, or the one before if the kill
        # came between writing the step file and repointing latest.pt
        assert latest["step"] in steps[-2:]
        assert torch.equal(latest["model"]["w"][::1000], latest["check"])  # whole, not torn (no sum: a
        # sum's last bit depends on the thread count, which differs between the writer and this process)
        for _, f in ckpt.list_step_checkpoints(tmp_path):
            st = ckpt.load_checkpoint(f)
            assert f.name == f"ckpt-step{st['step']:08d}.pt"
        if (tmp_path / ckpt.BEST).exists():
            assert ckpt.load_checkpoint(tmp_path / ckpt.BEST)["step"] % 3 == 0
        start = steps[-1] + 1
    # The next save sweeps away the temporary files killed writers left.
    ckpt.save_checkpoint(_state(start), tmp_path, start, keep=2, best=False)
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]

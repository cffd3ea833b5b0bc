"""Surviving faults: signals, kill -9, a dropped terminal, and NaN steps.

The subprocess tests run the real command (``python -m tui_trainer train
--headless``) on a tiny model and poll its ``losses.jsonl``.
"""
from __future__ import annotations

import hashlib
import math
import os
import pty
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tui_trainer.run import checkpoint as ckpt
from tui_trainer import cli
from tui_trainer.train import engine
from tui_trainer.train.engine import Command, Trainer
from trainer_with_run import trainer_with_run
from tui_trainer.records import Checkpoint, Paused
from tui_trainer.logs import ReadCounts, effective_records, read_records
from tui_trainer.run.log_writer import LOG_NAME, JsonlSink

REPO = Path(__file__).resolve().parents[1]
TINY = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--context-length", "16", "--batch-size", "4",
        "--eval-batches", "1", "--sample-tokens", "8", "--warmup-steps", "3", "--threads", "1"]
ENV = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def start(out: Path, *extra: str, prelude: str | None = None, **kw) -> subprocess.Popen:
    argv = ["train", "--headless", "--out", str(out), *TINY, *extra]
    if prelude is None:
        cmd = [sys.executable, "-m", "tui_trainer", *argv]
    else:  # patch something in the child first, then run the real CLI
        cmd = [sys.executable, "-c", prelude + "\nimport sys\nfrom tui_trainer.cli import main\n"
               "raise SystemExit(main(sys.argv[1:]))", *argv]
    kw.setdefault("stdout", subprocess.DEVNULL)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(cmd, env=ENV, **kw)


def records(out: Path, stats: ReadCounts | None = None) -> list[dict]:
    path = out / LOG_NAME
    return read_records(path, stats) if path.exists() else []


def last_train_step(out: Path) -> int:
    return max((r["step"] for r in records(out) if r["type"] == "train"), default=0)


def wait_until(pred, proc: subprocess.Popen, timeout: float = 60.0, tick=None) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if tick:
            tick()
        assert proc.poll() is None, f"run ended early (rc {proc.returncode}): {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < end, "timed out waiting for the run"
        time.sleep(0.005)


def train_losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["train_loss"] for r in effective_records(records(out)) if r["type"] == "train"}


# --- signals ----------------------------------------------------------------

def test_sigterm_stops_after_the_step_with_checkpoint_and_run_end(tmp_path):
    out = tmp_path / "run"
    p = start(out, "--steps", "5000", "--eval-every", "50")
    wait_until(lambda: last_train_step(out) >= 30, p)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 0
    assert "SIGTERM: stopping after this step" in p.stderr.read().decode()
    stats = ReadCounts()
    recs = records(out, stats)
    assert stats.bad == 0 and not stats.torn_tail
    end = recs[-1]
    assert end["type"] == "run_end" and end["status"] == "stopped" and end["step"] >= 30
    assert last_train_step(out) == end["step"]  # nothing trained after the stop
    ckpts = [r for r in recs if r["type"] == "checkpoint"]
    assert ckpts[-1]["step"] == end["step"]
    assert ckpt.load_checkpoint(out / ckpt.LATEST)["step"] == end["step"]


# The final save sleeps, so the second SIGINT surely lands while the first
# one's stop is still in progress.
_SLOW_FINAL_SAVE = """
import time, pathlib
from tui_trainer.run.checkpoint import CheckpointManager as M
_orig = M.save
def _save(self, step, state, *, reason, **kw):
    if reason == "final":
        (self.folder / "saving-final").touch()
        time.sleep(60)
    return _orig(self, step, state, reason=reason, **kw)
M.save = _save
"""


def test_second_sigint_exits_at_once_with_a_valid_log(tmp_path):
    out = tmp_path / "run"
    p = start(out, "--steps", "5000", "--eval-every", "20", prelude=_SLOW_FINAL_SAVE)
    wait_until(lambda: last_train_step(out) >= 25, p)
    p.send_signal(signal.SIGINT)
    wait_until(lambda: (out / "saving-final").exists(), p)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=30) == 130  # well before the 60 s sleep ends
    stats = ReadCounts()
    recs = records(out, stats)
    assert stats.bad == 0 and not stats.torn_tail
    assert recs[-1]["type"] == "run_end" and recs[-1]["status"] == "killed"
    # the last scheduled checkpoint is still whole and resumable
    last = [r for r in recs if r["type"] == "checkpoint"][-1]
    assert ckpt.load_checkpoint(out / ckpt.LATEST)["step"] == last["step"] == 20 * (recs[-1]["step"] // 20)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except (BlockingIOError, OSError):
        pass


def test_sighup_keeps_training_and_writing(tmp_path):
    """The terminal goes away (its pty closed, so writes fail with EIO) and
    SIGHUP arrives: the run carries on to the end, log and checkpoints."""
    out = tmp_path / "run"
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    p = start(out, "--steps", "150", "--eval-every", "50", "--log-every", "1",
              stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        wait_until(lambda: last_train_step(out) >= 10, p, tick=lambda: _drain(master))
    finally:
        os.close(master)  # the SSH session is gone: the child's terminal writes now fail
    time.sleep(0.05)
    p.send_signal(signal.SIGHUP)
    at_hup = last_train_step(out)
    assert at_hup < 150
    assert p.wait(timeout=60) == 0
    stats = ReadCounts()
    recs = records(out, stats)
    assert stats.bad == 0
    assert recs[-1]["type"] == "run_end" and recs[-1]["status"] == "finished" and recs[-1]["step"] == 150
    assert sorted(train_losses(out)) == list(range(1, 151))
    assert [r["step"] for r in recs if r["type"] == "checkpoint"][-1] == 150
    assert ckpt.load_checkpoint(out / ckpt.LATEST)["step"] == 150


# --- kill -9 ----------------------------------------------------------------

def test_kill_9_at_a_random_moment_leaves_a_readable_log_and_a_resumable_run(tmp_path):
    args = ["--steps", "120", "--eval-every", "20"]
    out = tmp_path / "killed"
    p = start(out, *args)
    target = random.randint(25, 70)
    wait_until(lambda: last_train_step(out) >= target, p)
    time.sleep(random.uniform(0, 0.02))
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    stats = ReadCounts()
    recs = records(out, stats)
    assert stats.bad == 0  # at most a torn last line, which the reader skips
    assert recs and not any(r["type"] == "run_end" for r in recs)
    killed_at = last_train_step(out)
    saved = ckpt.load_checkpoint(out / ckpt.LATEST)["step"]
    assert saved <= killed_at and saved % 20 == 0

    assert cli.main(["train", "--headless", "--resume", str(out)]) == 0
    ref = tmp_path / "ref"
    assert cli.main(["train", "--headless", "--out", str(ref), *TINY, *args]) == 0
    got = train_losses(out)
    assert sorted(got) == list(range(1, 121))
    assert got == train_losses(ref)  # the resumed run is the uninterrupted run
    assert read_records(out / LOG_NAME)[-1]["status"] == "finished"


# --- bad steps --------------------------------------------------------------

def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tiny_cfg(tmp_path, *extra):
    return cli.config_from_args(cli.build_parser().parse_args(
        ["train", "--out", str(tmp_path / "run"), *TINY, *extra]))


def _inject_nan(monkeypatch, when):
    real = engine.calc_loss_batch

    def calc(*a, **kw):
        loss = real(*a, **kw)
        return loss * math.nan if when() else loss

    monkeypatch.setattr(engine, "calc_loss_batch", calc)


class _Recorder:
    def __init__(self, run_dir: Path):
        self.run_dir, self.records, self.latest_sha = run_dir, [], {}

    def emit(self, r):
        self.records.append(r)
        if isinstance(r, Checkpoint):  # the bytes of latest.pt as that save left them
            self.latest_sha[r.step] = _sha(self.run_dir / ckpt.LATEST)


def test_nan_steps_are_skipped_recorded_and_stop_with_the_good_checkpoint_intact(tmp_path, monkeypatch):
    cfg = _tiny_cfg(tmp_path, "--steps", "40", "--eval-every", "5", "--max-bad-steps", "3")
    run = Path(cfg.out)
    run.mkdir()
    rec = _Recorder(run)
    log = JsonlSink(run / LOG_NAME)
    t = Trainer(cfg, run, [log, rec])
    _inject_nan(monkeypatch, lambda: t.step >= 10)  # every step after the checkpoint at 10 blows up
    try:
        end = t.run()
    finally:
        log.close()
    assert (end.status, end.step) == ("diverged", 10)
    recs = read_records(run / LOG_NAME)
    bad = [r for r in recs if r["type"] == "bad_step"]
    assert [b["consecutive"] for b in bad] == [1, 2, 3] and {b["step"] for b in bad} == {11}
    assert all(b["train_loss"] is None and "train_loss" in b["nonfinite"] for b in bad)
    assert max(r["step"] for r in recs if r["type"] == "train") == 10
    assert [r["step"] for r in recs if r["type"] == "checkpoint"] == [5, 10]
    assert _sha(run / ckpt.LATEST) == rec.latest_sha[10]  # not a byte changed since the good save
    good = ckpt.load_checkpoint(run / ckpt.LATEST)
    assert good["step"] == 10
    # the skipped steps never touched the weights
    assert all(torch.equal(v, good["model"][k]) for k, v in t.model.state_dict().items())


def test_cli_huge_learning_rate_diverges_nonzero_exit(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["train", "--headless", "--out", str(out), *TINY, "--warmup-steps", "0", "--steps", "30",
                   "--eval-every", "10", "--checkpoint-every", "1", "--max-lr", "1e6", "--max-bad-steps", "3"])
    assert rc == cli.EXIT_FAILED
    assert "skipped (3 in a row)" in capsys.readouterr().out
    recs = read_records(out / LOG_NAME)
    end = recs[-1]
    assert end["type"] == "run_end" and end["status"] == "diverged"
    assert [r["consecutive"] for r in recs if r["type"] == "bad_step"] == [1, 2, 3]
    ckpts = [r["step"] for r in recs if r["type"] == "checkpoint"]
    assert ckpts and ckpts[-1] == end["step"]  # the last good step's save, nothing after
    assert ckpt.load_checkpoint(out / ckpt.LATEST)["step"] == end["step"]


def test_dashboard_mode_pauses_on_divergence_and_recovers_when_resumed(tmp_path, monkeypatch):
    cfg = _tiny_cfg(tmp_path, "--steps", "20", "--eval-every", "5", "--max-bad-steps", "2")
    run = Path(cfg.out)
    run.mkdir()
    nan = {"on": False}

    class Human:  # what a person at the dashboard would do
        def emit(self, r):
            if getattr(r, "type", "") == "train" and r.step == 7:
                nan["on"] = True
            if isinstance(r, Paused) and r.reason == "diverged":
                nan["on"] = False
                held.send(Command.CHECKPOINT)  # refused: the model diverged
                held.send(Command.RESUME)

    rec = _Recorder(run)
    t, held = trainer_with_run(cfg, run, [rec, Human()], interactive=True)
    _inject_nan(monkeypatch, lambda: nan["on"])
    end = t.run()
    assert (end.status, end.step) == ("finished", 20)
    kinds = [(r.type, r.step) for r in rec.records if r.type in ("bad_step", "pause", "ack", "resume")]
    assert kinds == [("bad_step", 8), ("bad_step", 8), ("pause", 7), ("ack", 7), ("resume", 7)]
    refused = [r for r in rec.records if r.type == "ack"][0]
    assert not refused.ok and "diverged" in refused.message
    # after good steps again, checkpoints are written as usual
    assert [r.step for r in rec.records if isinstance(r, Checkpoint)] == [5, 10, 15, 20]


@pytest.mark.parametrize("sig", ["SIGHUP", "SIGTERM"])
def test_signals_under_the_dashboard(tmp_path, sig):
    """Dashboard mode (a pty for a terminal).  SIGHUP: the terminal is gone,
    the UI closes, the trainer thread carries on to the end, then the process
    exits.  SIGTERM: the UI closes and the run stops after its step with a
    final checkpoint."""
    out = tmp_path / "run"
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    cmd = [sys.executable, "-m", "tui_trainer", "train", "--out", str(out), *TINY, "--steps", "150",
           "--eval-every", "50"]
    p = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                         env=dict(ENV, TERM="xterm-256color"))
    os.close(slave)
    try:
        wait_until(lambda: last_train_step(out) >= 10, p, tick=lambda: _drain(master))
        if sig == "SIGHUP":
            os.close(master)  # the terminal goes away first
            master = -1
            time.sleep(0.05)
        p.send_signal(getattr(signal, sig))
        assert last_train_step(out) < 150
        deadline = time.monotonic() + 60
        while p.poll() is None and time.monotonic() < deadline:
            if master >= 0:
                _drain(master)
            time.sleep(0.01)
        # neither did the UI keep the process alive, nor take the run down with it
        assert p.poll() == 0
    finally:
        if master >= 0:
            os.close(master)
        if p.poll() is None:
            p.kill()
    recs = records(out)
    end = recs[-1]
    assert end["type"] == "run_end"
    if sig == "SIGHUP":
        assert end["status"] == "finished" and end["step"] == 150
        assert sorted(train_losses(out)) == list(range(1, 151))
    else:
        assert end["status"] == "stopped" and 10 <= end["step"] < 150
        assert last_train_step(out) == end["step"]
        assert [r for r in recs if r["type"] == "checkpoint"][-1]["step"] == end["step"]

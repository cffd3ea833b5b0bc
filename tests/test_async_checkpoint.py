"""Checkpoints written in the background: off the training thread, one at a
time, waited for at the end, failures ending the run, and files that stay
whole under kill -9 (checkpoint_writer.py, CheckpointManager)."""
from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from tui_trainer.run import checkpoint as ckpt
from tui_trainer import cli
from tui_trainer.run.checkpoint_writer import Snapshotter
from trainer_with_run import trainer_with_run
from tui_trainer.logs import read_records
from tui_trainer.records import Checkpoint, RunEnd, Status, TrainStep
from tui_trainer.run.log_writer import LOG_NAME

TINY = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--context-length", "16", "--batch-size", "4",
        "--eval-batches", "1", "--sample-tokens", "4", "--warmup-steps", "2", "--threads", "1"]
WAIT_S = 60  # generous: the machine is shared


def _cfg(out, *extra):
    return cli.config_from_args(cli.build_parser().parse_args(
        ["train", "--headless", "--out", str(out), *TINY, *extra]))


class Tape:
    """A sink that keeps every record, and lets a test wait for one."""

    def __init__(self):
        self.records, self.cond = [], threading.Condition()

    def emit(self, r):
        with self.cond:
            self.records.append(r)
            self.cond.notify_all()

    def wait_for(self, pred):
        with self.cond:
            assert self.cond.wait_for(lambda: any(pred(r) for r in self.records), timeout=WAIT_S)


class Gate:
    """``save_checkpoint`` held until ``opened``: a slow disk, on demand."""

    def __init__(self, monkeypatch):
        self.opened, self.threads = threading.Event(), []
        real = ckpt.save_checkpoint

        def held(state, run_dir, step, **kw):
            self.threads.append(threading.current_thread().name)
            assert self.opened.wait(WAIT_S)
            return real(state, run_dir, step, **kw)

        monkeypatch.setattr(ckpt, "save_checkpoint", held)


def test_training_goes_on_while_a_write_is_held_and_the_next_save_waits_for_it(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    gate, tape = Gate(monkeypatch), Tape()
    t, _ = trainer_with_run(_cfg(out, "--steps", "12", "--eval-every", "100", "--checkpoint-every", "4"), out, [tape])
    end = {}
    runner = threading.Thread(target=lambda: end.setdefault("end", t.run()))
    runner.start()
    try:
        # the write of step 4 is held, and steps after it are trained all the same
        tape.wait_for(lambda r: isinstance(r, TrainStep) and r.step == 6)
        assert gate.threads == ["checkpoint-writer"]  # not the training thread
        # the save at step 8 comes due first: it waits, and says so
        tape.wait_for(lambda r: isinstance(r, Status) and "waiting for the previous" in r.detail)
        waiting = next(i for i, r in enumerate(tape.records) if isinstance(r, Status) and r.detail)
        assert tape.records[waiting].step == 8
        assert max(r.step for r in tape.records if isinstance(r, TrainStep)) == 8  # blocked there
        assert not any(isinstance(r, Checkpoint) for r in tape.records)  # nothing complete yet
    finally:
        gate.opened.set()
        runner.join(WAIT_S)
    assert end["end"].status == "finished"
    recs = tape.records
    saved = [r for r in recs if isinstance(r, Checkpoint)]
    assert [r.step for r in saved] == [4, 8, 12]
    # each record is written once its file is whole, after training went past it
    first = recs.index(saved[0])
    assert any(isinstance(r, TrainStep) and r.step > 4 for r in recs[:first])
    assert all(r.blocked_s is not None and r.write_s is not None and r.write_s >= 0 for r in saved)
    assert isinstance(recs[-1], RunEnd) and recs.index(saved[-1]) < len(recs) - 1
    assert ckpt.load_checkpoint(out / ckpt.LATEST)["step"] == 12


@pytest.mark.parametrize("how", ["finished", "stopped"])
def test_the_final_checkpoint_is_whole_before_run_end(tmp_path, monkeypatch, how):
    """The write in flight at the end (the last scheduled save, or the one
    before a stop) ends before the final save and ``run_end``."""
    out = tmp_path / "run"
    out.mkdir()
    order, ended = [], threading.Event()
    real = ckpt.save_checkpoint

    def slow(state, run_dir, step, **kw):
        ended.wait(1.0)  # returns at once if run_end came first: the order below then fails
        path = real(state, run_dir, step, **kw)
        order.append(("written", step))
        return path

    monkeypatch.setattr(ckpt, "save_checkpoint", slow)

    class Sink:
        def emit(self, r):
            if isinstance(r, Checkpoint):
                order.append(("record", r.step))
            if isinstance(r, TrainStep) and how == "stopped" and r.step == 5:
                run.request_stop()
            if isinstance(r, RunEnd):
                order.append(("run_end", r.step))
                ended.set()

    t, run = trainer_with_run(_cfg(out, "--steps", "8", "--eval-every", "100", "--checkpoint-every", "4"), out,
                              [Sink()])
    end = t.run()
    assert end.status == how
    if how == "finished":
        assert order == [("written", 4), ("record", 4), ("written", 8), ("record", 8), ("run_end", 8)]
    else:
        assert order == [("written", 4), ("record", 4), ("written", 5), ("record", 5), ("run_end", 5)]
    assert ckpt.load_checkpoint(out / ckpt.LATEST)["step"] == end.step


@pytest.mark.parametrize("fail_at", [4, 8], ids=["mid-run", "last-scheduled"])
def test_a_full_disk_in_the_background_write_fails_the_run_with_one_line(tmp_path, monkeypatch, capsys, fail_at):
    real = ckpt.atomic_save

    def full(state, path):
        if state["step"] == fail_at:
            assert threading.current_thread() is not threading.main_thread()  # the background write
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(state, path)

    monkeypatch.setattr(ckpt, "atomic_save", full)
    out = tmp_path / "run"
    code = cli.main(["train", "--headless", "--out", str(out), *TINY, "--steps", "8", "--eval-every", "100",
                     "--checkpoint-every", "4"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "No space left on device" in err and "Traceback" not in err
    recs = read_records(out / LOG_NAME)
    assert recs[-1]["type"] == "run_end" and recs[-1]["status"] == "failed"
    assert "No space left on device" in recs[-1]["error"]
    assert [r["step"] for r in recs if r["type"] == "checkpoint"] == ([] if fail_at == 4 else [4])
    assert fail_at <= recs[-1]["step"] <= 8  # at a step boundary after it, and no save after it
    if fail_at == 8:
        assert ckpt.load_checkpoint(out / ckpt.LATEST)["step"] == 4  # the old one, whole
    else:
        assert not (out / ckpt.LATEST).exists()


def test_a_final_save_that_fails_still_fails_the_run(tmp_path, monkeypatch, capsys):
    def full(state, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "atomic_save", full)
    out = tmp_path / "run"
    assert cli.main(["train", "--headless", "--out", str(out), *TINY, "--steps", "5", "--eval-every", "100",
                     "--checkpoint-every", "100"]) == 1
    assert read_records(out / LOG_NAME)[-1]["status"] == "failed"
    assert capsys.readouterr().err.count("error: ") == 1


def test_async_files_hold_the_state_of_their_step_bit_for_bit(tmp_path):
    """A snapshot, not a reference: each step file of a background run equals
    the synchronous run's, though training changed the weights in place meanwhile."""
    files = {}
    for mode in ("async", "sync"):
        out = tmp_path / mode
        extra = ["--sync-checkpoints"] if mode == "sync" else []
        assert cli.main(["train", "--headless", "--out", str(out), *TINY, "--steps", "6", "--eval-every", "3",
                         "--checkpoint-every", "1", "--keep", "10", *extra]) == 0
        files[mode] = {s: ckpt.load_checkpoint(p) for s, p in ckpt.list_step_checkpoints(out)}
    assert sorted(files["async"]) == sorted(files["sync"]) == list(range(1, 7))
    for step, a in files["async"].items():
        b = files["sync"][step]
        assert a["step"] == step
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
        sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
        assert all(torch.equal(sa[i][k], sb[i][k]) for i in sb for k in sb[i])
        assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    recs = [r for r in read_records(tmp_path / "async" / LOG_NAME) if r["type"] == "checkpoint"]
    assert all("blocked_s" in r and "write_s" in r for r in recs)


def test_the_snapshot_reuses_its_buffers_and_keeps_tied_weights_one_tensor():
    snap = Snapshotter()
    w = torch.randn(4, 3)
    state = {"model": {"a": w, "tied": w.detach(), "half": w[:2]}, "n": 3, "list": [torch.ones(2)]}
    first = snap.copy(state)
    assert first["model"]["a"] is first["model"]["tied"]  # one storage in, one tensor out
    assert first["model"]["half"].shape == (2, 3) and first["model"]["half"].untyped_storage().nbytes() == 24
    w.add_(1)  # training goes on in place
    assert not torch.equal(first["model"]["a"], w)
    second = snap.copy(state)
    assert second["model"]["a"] is first["model"]["a"] and torch.equal(second["model"]["a"], w)
    assert second["n"] == 3 and torch.equal(second["list"][0], torch.ones(2))


# --- kill -9 at random moments ------------------------------------------------------

def _loadable(out):
    for _, p in ckpt.list_step_checkpoints(out):
        ckpt.load_checkpoint(p)  # raises on a torn file
    if (out / ckpt.LATEST).exists():
        return ckpt.load_checkpoint(out / ckpt.LATEST)["step"]
    return None


def _saved_past(out, step):
    return out.exists() and any(s > step for s, _ in ckpt.list_step_checkpoints(out))


def _wait_saved_past(out, step, alive):
    deadline = time.monotonic() + WAIT_S
    while not _saved_past(out, step):  # poll the condition, never a fixed sleep
        assert alive(), "the writer died before it saved"
        assert time.monotonic() < deadline
        time.sleep(0.01)


# A process that imports torch once and forks a fresh writer per kill (an
# import takes seconds here; a fork, milliseconds).  Each writer saves every
# step in the background while its "training" fills the weights with the step
# number in place: a file whose tensor is not all its own step is torn or stale.
ZYGOTE = """
import os, signal, sys
import torch
from pathlib import Path
from tui_trainer import checkpoint as ckpt
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reap themselves
for line in sys.stdin:
    folder = Path(line.strip())
    pid = os.fork()
    if pid == 0:
        torch.set_num_threads(1)
        m = ckpt.CheckpointManager(folder, every=1, keep=2, emit=lambda r: None)
        step = max([s for s, _ in ckpt.list_step_checkpoints(folder)], default=0)
        w = torch.zeros(1 << 20)
        while True:
            step += 1
            w.fill_(float(step))
            m.poll()
            m.save(step, lambda: {"format": ckpt.FORMAT, "step": step, "tokens": 0, "config": {}, "model": {"w": w},
                                  "optimizer": {}, "sampler": {}, "rng": {}},
                   reason="scheduled", val_loss=None, healthy=True, state_after="running", background=True)
    print(pid, flush=True)
"""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_kill_9_at_random_moments_of_background_writes_leaves_whole_files(tmp_path):
    rng = random.Random(22)
    out = tmp_path / "run"
    out.mkdir()
    zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        before = 0
        for _ in range(15):
            zygote.stdin.write(f"{out}\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())
            _wait_saved_past(out, before + 1, lambda: _alive(pid))
            time.sleep(rng.uniform(0.0, 0.1))  # the random moment of the kill
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + WAIT_S
            while _alive(pid):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            files = ckpt.list_step_checkpoints(out)
            for step, p in files:
                assert torch.equal(ckpt.load_checkpoint(p)["model"]["w"], torch.full((1 << 20,), float(step)))
            latest = ckpt.load_checkpoint(out / ckpt.LATEST)
            assert latest["step"] > before and torch.equal(latest["model"]["w"], torch.full((1 << 20,), float(latest["step"])))
            assert len(files) <= 3 + 1  # keep 2 besides the newest, and at most one more not yet pruned
            before = max(s for s, _ in files)
    finally:
        zygote.kill()
        zygote.wait()


def test_kill_9_of_a_training_run_mid_write_then_resume(tmp_path):
    """The real command, --checkpoint-every 1 (a write in flight nearly all the
    time): killed at a random moment, then resumed to its end."""
    out = tmp_path / "run"
    shape = ["--n-layer", "2", "--n-embd", "96", "--n-head", "2", "--context-length", "32", "--batch-size", "2",
             "--eval-batches", "1", "--sample-tokens", "2", "--warmup-steps", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "tui_trainer", "train", "--headless", "--threads", "1",
                             "--out", str(out), *shape, "--steps", "100000", "--eval-every", "100000",
                             "--checkpoint-every", "1"], env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_saved_past(out, random.Random(7).randint(2, 6), lambda: proc.poll() is None)
        time.sleep(random.Random(8).uniform(0.0, 0.2))  # the random moment of the kill
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    saved = _loadable(out)
    assert saved is not None
    assert cli.main(["train", "--headless", "--resume", str(out), "--steps", str(saved + 2)]) == 0
    recs = read_records(out / LOG_NAME)
    assert recs[-1]["type"] == "run_end" and recs[-1]["status"] == "finished" and recs[-1]["step"] == saved + 2


# --- the manager alone ------------------------------------------------------------

def _manager(folder, records):
    return ckpt.CheckpointManager(folder, every=1, keep=5, emit=records.append)


def _state(w, step):
    return {"format": ckpt.FORMAT, "step": step, "tokens": 0, "config": {}, "model": {"w": w},
            "optimizer": {}, "sampler": {}, "rng": {}}


def test_a_non_finite_snapshot_is_refused_in_the_background_and_nothing_is_written(tmp_path):
    from tui_trainer.train.model import weights_finite

    records = []
    m = _manager(tmp_path, records)
    w = torch.ones(8)
    m.save(1, lambda: _state(w, 1), reason="scheduled", val_loss=None, healthy=True, state_after="running",
           background=True, check=weights_finite)
    m.wait()
    w[3] = float("nan")
    m.save(2, lambda: _state(w, 2), reason="best", val_loss=0.5, healthy=True, state_after="running",
           background=True, check=weights_finite)
    m.wait()
    assert [s for s, _ in ckpt.list_step_checkpoints(tmp_path)] == [1]
    assert ckpt.load_checkpoint(tmp_path / ckpt.LATEST)["step"] == 1 and not (tmp_path / ckpt.BEST).exists()
    refused = [r for r in records if getattr(r, "command", None) == "checkpoint"]
    assert len(refused) == 1 and not refused[0].ok and refused[0].step == 2
    assert (m.last_step, m.best_val) == (1, float("inf"))  # as before the refused save


def test_the_guarded_optimizer_step_waits_for_the_copy(tmp_path, monkeypatch):
    """The copy runs on the writer's thread; the optimizer step (what changes
    the saved tensors in place) waits for it, so the file holds the state of
    its step."""
    from tui_trainer.run import checkpoint_writer

    held = threading.Event()
    real = checkpoint_writer.Snapshot.complete

    def slow(self):
        assert held.wait(WAIT_S)
        return real(self)

    monkeypatch.setattr(checkpoint_writer.Snapshot, "complete", slow)
    w = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([w], lr=1.0)
    m = _manager(tmp_path, [])
    m.guard(opt)
    m.save(1, lambda: _state(w, 1), reason="scheduled", val_loss=None, healthy=True, state_after="running",
           background=True)  # returns with the copy not made
    w.grad = torch.ones(4)
    stepped = threading.Event()
    stepper = threading.Thread(target=lambda: (opt.step(), stepped.set()))
    stepper.start()
    assert not stepped.wait(0.2)  # still held by the copy (a wrong answer here only ever fails)
    held.set()
    stepper.join(WAIT_S)
    assert stepped.is_set() and torch.equal(w.detach(), -torch.ones(4))
    m.wait()
    assert torch.equal(ckpt.load_checkpoint(tmp_path / ckpt.LATEST)["model"]["w"], torch.zeros(4))


def test_files_and_logs_from_before_the_new_fields_still_read(tmp_path):
    from tui_trainer.records import from_dict

    old = from_dict({"type": "checkpoint", "step": 4, "time": 0.0, "path": "run/ckpt-step00000004.pt",
                     "reason": "scheduled", "val_loss": None})
    assert isinstance(old, Checkpoint) and old.blocked_s is None and old.write_s is None
    out = tmp_path / "run"
    assert cli.main(["train", "--headless", "--out", str(out), *TINY, "--steps", "3", "--eval-every", "3"]) == 0
    state = ckpt.load_checkpoint(out / ckpt.LATEST)
    del state["config"]["sync_checkpoints"]  # a checkpoint written before the setting existed
    ckpt.save_checkpoint(state, out, 3, keep=2, best=False)
    assert cli.main(["train", "--headless", "--resume", str(out), "--steps", "5"]) == 0
    assert read_records(out / LOG_NAME)[-1]["status"] == "finished"

"""Who owns a run folder (issue 20, items 4 and 5): the lock and every file
that carries state are 0600; a pid is named, with a ``kill`` to try, only when
that process is seen holding the lock; a child forked from a training script
is detached from its parent's run."""
from __future__ import annotations

import fcntl
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tui_trainer
from tui_trainer.errors import UserError
from tui_trainer.logs import read_records
from tui_trainer.run.folder import LOCK_NAME, RunLock, lock_holders

from test_distributed import _env

LINUX_LOCKS = Path("/proc/locks").exists()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_fresh_run_folder_keeps_its_lock_and_checkpoints_private(tmp_path):
    folder = tmp_path / "run"
    old = os.umask(0o022)  # the usual umask: what others may read is up to us, not to it
    try:
        with tui_trainer.init(folder, quiet=True) as run:
            run.log(1, train_loss=1.0)
            run.log_eval(1, val_loss=0.5)
            run.save_checkpoint(1, {"w": torch.ones(2), "rng": torch.get_rng_state()})
            run.log(2, train_loss=0.9)
            run.save_checkpoint(2, {"w": torch.zeros(2)})
            assert mode(folder / LOCK_NAME) == 0o600  # `ls -l` shows -rw------- while it trains
    finally:
        os.umask(old)
    assert mode(folder / LOCK_NAME) == 0o600
    for name in ("ckpt-step00000001.pt", "ckpt-step00000002.pt", "latest.pt", "best.pt"):
        assert mode(folder / name) == 0o600, name
    assert not stat.S_IMODE(os.stat(folder / "losses.jsonl").st_mode) & 0o002  # the log keeps the umask


def test_a_lock_left_0644_by_an_older_version_is_made_private(tmp_path):
    (tmp_path / LOCK_NAME).write_text("123\n")
    os.chmod(tmp_path / LOCK_NAME, 0o644)
    lock = RunLock(tmp_path).acquire()
    try:
        assert mode(tmp_path / LOCK_NAME) == 0o600
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()


def _hold(path: Path, how: int) -> int:
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, how | fcntl.LOCK_NB)
    return fd


@pytest.mark.parametrize("how", [fcntl.LOCK_SH, fcntl.LOCK_EX])
def test_a_pid_the_lock_file_names_is_not_offered_to_kill_unless_it_holds_the_lock(tmp_path, how):
    """Another process holds the lock (say another user's ``flock -s``), and
    the file still names the pid of a run long gone: that pid must not be
    named, and no kill suggested for it."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(f"{dead.pid}\n")
    fd = _hold(tmp_path / LOCK_NAME, how)
    try:
        with pytest.raises(UserError) as e:
            RunLock(tmp_path).acquire()
    finally:
        os.close(fd)
    msg = str(e.value)
    assert "\n" not in msg and "locked by another process" in msg
    assert str(dead.pid) not in msg and "kill" not in msg
    RunLock(tmp_path).acquire().release()  # once it lets go, the run is ours again


def test_a_live_holder_is_named_with_the_kill_that_stops_it(tmp_path):
    folder = tmp_path / "run"
    code = ("import sys, tui_trainer; run = tui_trainer.init(sys.argv[1], quiet=True); "
            "print('ready', flush=True); sys.stdin.readline(); run.finish()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(UserError) as e:
            RunLock(folder).acquire()
        assert f"pid {holder.pid}" in str(e.value) and f"kill -TERM {holder.pid}" in str(e.value)
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0


@pytest.mark.skipif(not LINUX_LOCKS, reason="reads the kernel's lock table, /proc/locks")
def test_lock_holders_reads_the_kernels_table_for_that_file_only(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text(""), b.write_text("")
    fa, fb = _hold(a, fcntl.LOCK_EX), _hold(b, fcntl.LOCK_SH)
    try:
        assert lock_holders(os.stat(a)) == {os.getpid(): "WRITE"}
        assert lock_holders(os.stat(b)) == {os.getpid(): "READ"}
    finally:
        os.close(fa), os.close(fb)
    assert lock_holders(os.stat(a)) == {}
    assert lock_holders(os.stat(a), table=str(tmp_path / "none")) is None


FORKING_LOOP = r"""
import json, os, sys
import tui_trainer
from tui_trainer.control.channel import request
from tui_trainer.run.folder import is_live

folder = sys.argv[1]
run = tui_trainer.init(folder, quiet=True)
run.log(1, train_loss=1.0)
pid = os.fork()
if pid == 0:   # the child logs, finishes and exits the way a script does: atexit runs
    run.log(2, train_loss=99.0)
    run.finish()
    sys.exit(0)
_, status = os.waitpid(pid, 0)
seen = {"child_status": os.waitstatus_to_exitcode(status),
        "socket": os.path.exists(os.path.join(folder, "control.sock")),
        "live": is_live(folder), "status_ok": request(folder, "status").get("ok")}
run.log(2, train_loss=0.5)
run.log(3, train_loss=0.25)
r, w = os.pipe()
pid = os.fork()
if pid == 0:   # a child still alive when the parent ends (a worker): it must not keep the lock held
    os.close(w)
    os.read(r, 1)
    os._exit(0)
os.close(r)
run.finish()
seen["live_after_finish"] = is_live(folder)
os.write(w, b"x")
os.waitpid(pid, 0)
print(json.dumps(seen))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_that_exits_leaves_the_parents_run_alone(tmp_path):
    folder = tmp_path / "run"
    out = subprocess.run([sys.executable, "-c", FORKING_LOOP, str(folder)], capture_output=True, text=True,
                         timeout=120, env=_env())
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"child_status": 0, "socket": True, "live": True, "status_ok": True,
                    "live_after_finish": False}
    recs = read_records(folder / "losses.jsonl")
    assert [(r["type"], r["step"]) for r in recs] == [("run_start", 0), ("train", 1), ("train", 2),
                                                      ("train", 3), ("run_end", 3)]
    assert recs[-1]["status"] == "finished" and 99.0 not in [r.get("train_loss") for r in recs]
    assert not (folder / "control.sock").exists()  # the parent's own close removed it

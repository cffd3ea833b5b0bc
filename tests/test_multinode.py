"""Two nodes rehearsed on one machine: two torchrun agents, one rank each.

    torchrun --nnodes=2 --nproc_per_node=1 --rdzv-backend=c10d \\
             --rdzv-endpoint=127.0.0.1:PORT --node-rank=K -m tui_trainer train --headless ...

is what a user runs on each of two boxes.  Here both agents run on this
machine (gloo, one thread each, a tiny model) and train one run into one
folder, as they would on a shared filesystem.  The c10d rendezvous gives out
ranks itself (``--node-rank`` is only read by the static backend), so which
agent holds rank 0, the one that writes, is looked up from its worker's
``RANK``, never assumed.

torchrun's agents meet at an exit barrier when their workers are done.  An
agent that is signalled leaves without it, so after a signal on one agent
the other may wait there (300 s, torchrun's default) although its worker
has ended; the tests end that wait themselves once both workers are gone.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_distributed import TINY, _env, records, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="finds each agent's worker through /proc")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agents:
    """Two torchrun agents on 127.0.0.1, as two nodes of one job."""

    def __init__(self, args: list[str], cwd: Path, name: str):
        port = free_port()
        self.cwd = cwd
        self.logs = [cwd / f"{name}-node{k}.err" for k in range(2)]
        self.procs: list[subprocess.Popen] = []
        for k in range(2):
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                   "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--node-rank={k}",
                   "-m", "tui_trainer", "train", "--headless", "--threads", "1", *args]
            with open(self.logs[k], "w") as err:
                self.procs.append(subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL,
                                                   stderr=err, text=True))

    def wait(self, timeout: float = 120) -> list[int]:
        return [p.wait(timeout=timeout) for p in self.procs]

    def err(self) -> str:
        return "".join(log.read_text() for log in self.logs)

    def workers(self, agent: subprocess.Popen) -> list[int]:
        try:
            return [int(p) for p in Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split()]
        except OSError:  # the agent has gone
            return []

    def rank_of(self, agent: subprocess.Popen) -> int:
        """The RANK torchrun gave this agent's worker."""
        for pid in self.workers(agent):
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            ranks = [int(e.split(b"=", 1)[1]) for e in env if e.startswith(b"RANK=")]
            if ranks:
                return ranks[0]
        raise LookupError(f"agent {agent.pid} has no worker yet")

    def signal_agent_of_rank(self, rank: int, sig: int = signal.SIGTERM) -> None:
        agent = next(a for a in self.procs if self.rank_of(a) == rank)
        os.kill(agent.pid, sig)

    def end_after_workers(self, timeout: float = 60) -> None:
        """Once no agent has a worker left, end any agent still waiting at
        torchrun's exit barrier for the one that was signalled (it may sit
        in a blocking store wait, where a SIGTERM is not seen for minutes)."""
        assert wait_for(lambda: not any(self.workers(a) for a in self.procs if a.poll() is None), timeout), \
            "a worker outlived the run"
        wait_for(lambda: all(a.poll() is not None for a in self.procs), 5.0)
        self.kill()

    def kill(self) -> None:
        for a in self.procs:
            if a.poll() is None:
                a.kill()
                a.wait()


def stopped_step(run: Path) -> int:
    end = records(run)[-1]
    assert end["type"] == "run_end" and end["status"] == "stopped", end
    return end["step"]


def test_two_nodes_train_one_run_stop_on_either_agent_and_resume(tmp_path):
    run = tmp_path / "run"
    common = ["--batch-size", "4", "--eval-every", "100000", *TINY]

    # 1. A new run; a SIGTERM on the agent of rank 1 (the node that does not write).
    agents = Agents(["--steps", "100000", *common, "--out", str(run)], tmp_path, "first")
    try:
        assert wait_for(lambda: any(r["type"] == "train" and r["step"] >= 3 for r in records(run))), \
            agents.err()[-3000:]
        agents.signal_agent_of_rank(1)
        agents.end_after_workers()
    finally:
        agents.kill()
    first = stopped_step(run)
    err = agents.err()
    # Both ranks stopped at the step rank 0 logged: the stop reached across nodes.
    assert f"rank 1: run stopped at step {first}" in err, err[-3000:]
    recs = records(run)
    assert [r["type"] for r in recs].count("run_start") == 1
    assert "x2 ranks (gloo)" in recs[0]["device"]
    assert [r["step"] for r in recs if r["type"] == "train"] == list(range(1, first + 1))
    assert any(r["type"] == "checkpoint" and r["reason"] == "final" and r["step"] == first for r in recs)
    # One writer: the node without rank 0 left nothing in the folder.
    assert not (run / "control.sock").exists()

    # 2. Resume with the same layout and run to a clean end on both agents.
    target = first + 6
    agents = Agents(["--resume", str(run), "--steps", str(target)], tmp_path, "resumed")
    try:
        codes = agents.wait()
    finally:
        agents.kill()
    err = agents.err()
    assert codes == [0, 0], err[-3000:]
    assert f"rank 1: run finished at step {target}" in err
    recs = records(run)
    assert recs[-1]["type"] == "run_end" and recs[-1]["status"] == "finished" and recs[-1]["step"] == target
    assert [r["step"] for r in recs if r["type"] == "run_start"] == [0, first]
    assert [r["step"] for r in recs if r["type"] == "train"] == list(range(1, target + 1))

    # 3. Resume again; a SIGTERM on the agent of rank 0 (the writer) stops both too.
    agents = Agents(["--resume", str(run), "--steps", "100000"], tmp_path, "third")
    try:
        assert wait_for(lambda: any(r["type"] == "train" and r["step"] >= target + 3 for r in records(run))), \
            agents.err()[-3000:]
        agents.signal_agent_of_rank(0)
        agents.end_after_workers()
    finally:
        agents.kill()
    last = stopped_step(run)
    err = agents.err()
    assert last > target
    assert f"rank 1: run stopped at step {last}" in err, err[-3000:]
    recs = records(run)
    assert [r["step"] for r in recs if r["type"] == "train"] == list(range(1, last + 1))
    assert [r["type"] for r in recs].count("run_end") == 3

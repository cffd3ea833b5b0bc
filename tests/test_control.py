"""The control channel: a socket in the run folder that steers a running trainer."""
from __future__ import annotations

import json
import os
import queue
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tui_trainer import cli
from tui_trainer.control import channel as control, server as control_server
from tui_trainer.control.commands import CommandQueue
from tui_trainer.control.channel import ControlError, ControlServer, TrainerControl, request, serve_trainer
from tui_trainer.train.engine import Command
from tui_trainer.records import Checkpoint, Eval, Paused, Resumed, RunEnd
from trainer_with_run import trainer_with_run


def fake_trainer(step: int = 7) -> SimpleNamespace:
    return SimpleNamespace(commands=CommandQueue(), step=step, paused=False, stopping=False,
                           total_steps=100)


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    return d


@pytest.fixture
def served(run_dir):
    t = fake_trainer()
    srv = serve_trainer(t, run_dir)
    yield t, srv
    srv.close()


def raw(path: Path, payload: bytes, timeout: float = 3.0, want: int | None = None) -> list[dict]:
    """Send raw bytes, read answers until the server closes or goes quiet."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(os.fspath(path))
    try:
        s.sendall(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass  # a refused client may be answered and dropped before it has sent anything
    buf = b""
    want = want or payload.count(b"\n") or 1
    try:
        while buf.count(b"\n") < want:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    return [json.loads(line) for line in buf.splitlines() if line.strip()]


def drained(q: queue.Queue) -> list:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def test_command_is_acknowledged_and_queued(served, run_dir):
    t, srv = served
    answer = request(run_dir, "pause")
    assert answer["ok"] is True and answer["cmd"] == "pause" and answer["queued"] is True
    assert answer["step"] == 7 and answer["state"] == "running" and answer["total_steps"] == 100
    assert drained(t.commands) == [Command.PAUSE]
    status = request(run_dir, "status")
    assert status["ok"] and status["pid"] == os.getpid()
    assert drained(t.commands) == []  # a query queues nothing


def test_socket_is_owner_only_and_in_the_run_folder(served, run_dir):
    _, srv = served
    assert srv.path == run_dir.resolve() / "control.sock"
    st = os.stat(srv.path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_socket_removed_at_close(run_dir):
    srv = serve_trainer(fake_trainer(), run_dir)
    assert (run_dir / "control.sock").exists()
    srv.close()
    assert not (run_dir / "control.sock").exists()
    with pytest.raises(ControlError, match="no live run"):
        request(run_dir, "status")


@pytest.mark.parametrize("line, fragment", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b"{}", '"cmd"'),
    (b'{"cmd": 5}', "unknown command"),
    (b'{"cmd": "frobnicate"}', "unknown command 'frobnicate'"),
    (b'{"cmd": "PAUSE"}', "unknown command"),
    (b"\xff\xfe{", "not JSON"),
])
def test_malformed_or_unknown_gets_an_error_and_changes_nothing(served, line, fragment):
    t, srv = served
    (answer,) = raw(srv.path, line + b"\n")
    assert answer["ok"] is False and fragment in answer["error"]
    assert drained(t.commands) == []
    assert request(srv.run_dir, "ping")["ok"]  # the channel still works


def test_several_requests_on_one_connection(served):
    t, srv = served
    answers = raw(srv.path, b'{"cmd": "eval", "id": 1}\n\n{"cmd": "checkpoint", "id": "b"}\n', want=2)
    assert [(a["ok"], a["id"]) for a in answers] == [(True, 1), (True, "b")]
    assert drained(t.commands) == [Command.EVAL, Command.CHECKPOINT]


def test_overlong_request_is_refused_and_connection_closed(served):
    t, srv = served
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(os.fspath(srv.path))
    s.sendall(b'{"cmd": "pause", "pad": "' + b"x" * (control.MAX_LINE + 100))
    buf = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break  # the server closed the connection
        buf += chunk
    s.close()
    answer = json.loads(buf.splitlines()[0])
    assert answer["ok"] is False and "longer than" in answer["error"]
    assert drained(t.commands) == []


def test_repeated_command_is_coalesced(served, run_dir):
    t, _ = served
    answers = [request(run_dir, "eval") for _ in range(5)]
    assert all(a["ok"] for a in answers)
    assert [a.get("coalesced", False) for a in answers] == [False, True, True, True, True]
    assert drained(t.commands) == [Command.EVAL]


def test_toggles_are_never_coalesced(served, run_dir):
    t, _ = served
    request(run_dir, "toggle_pause")
    request(run_dir, "toggle_pause")
    assert drained(t.commands) == [Command.TOGGLE_PAUSE, Command.TOGGLE_PAUSE]


def test_flood_is_bounded_and_never_blocks(served, run_dir):
    """Eight clients hammering alternating commands: the queue stays bounded,
    every request gets an answer, and the channel still answers afterwards."""
    t, _ = served
    answers: list[dict] = []
    lock = threading.Lock()

    def hammer(i: int) -> None:
        mine = [request(run_dir, "pause" if (i + k) % 2 else "resume") for k in range(40)]
        with lock:
            answers.extend(mine)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert len(answers) == 320
    assert t.commands.qsize() <= control.MAX_PENDING
    busy = [a for a in answers if not a["ok"]]
    assert busy and all("busy" in a["error"] for a in busy)
    assert request(run_dir, "status")["ok"]


def test_idle_and_excess_connections_do_not_block_others(run_dir):
    t = fake_trainer()
    with ControlServer(run_dir, TrainerControl(t).handle, max_clients=4) as srv:
        idle = []
        for _ in range(4):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(os.fspath(srv.path))
            s.sendall(b'{"cmd": "pau')  # half a line, never finished
            idle.append(s)
        (answered,) = raw(srv.path, b'{"cmd": "status"}\n')  # the quietest half line made room for it
        assert answered["ok"] is True
        for s in idle:
            s.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if request(run_dir, "status").get("ok"):
                break
            time.sleep(0.05)
        assert request(run_dir, "pause")["ok"]
    assert drained(t.commands) == [Command.PAUSE]  # the half lines never became commands


def test_idle_connection_is_dropped(run_dir):
    with ControlServer(run_dir, TrainerControl(fake_trainer()).handle, idle_timeout=0.3) as srv:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(os.fspath(srv.path))
        assert s.recv(10) == b""  # closed by the server, no answer
        s.close()


def test_other_users_are_refused(served, monkeypatch):
    t, srv = served
    monkeypatch.setattr(control_server, "peer_uid", lambda conn: os.getuid() + 1)
    (answer,) = raw(srv.path, b'{"cmd": "stop"}\n')
    assert answer["ok"] is False and "permission denied" in answer["error"]
    assert drained(t.commands) == []


@pytest.mark.skipif(not hasattr(socket, "SO_PEERCRED"), reason="SO_PEERCRED is Linux-only")
def test_peer_uid_reads_the_real_credentials():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        assert control_server.peer_uid(a) == os.getuid()
    finally:
        a.close()
        b.close()


def _dead_socket(path: Path) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(os.fspath(path))
    s.close()  # the file stays: what a killed run leaves behind


def test_stale_socket_from_a_dead_run_is_replaced(run_dir):
    _dead_socket(run_dir / "control.sock")
    with pytest.raises(ControlError, match="not answering"):
        request(run_dir, "status")
    t = fake_trainer()
    with serve_trainer(t, run_dir):
        assert request(run_dir, "eval")["ok"]
    assert drained(t.commands) == [Command.EVAL]


def test_live_socket_is_not_stolen(served, run_dir):
    with pytest.raises(ControlError, match="another live process"):
        serve_trainer(fake_trainer(), run_dir)
    assert request(run_dir, "ping")["ok"]  # the first server is untouched


def test_a_file_in_the_way_is_not_deleted(run_dir):
    (run_dir / "control.sock").write_text("mine")
    with pytest.raises(ControlError, match="not a socket"):
        serve_trainer(fake_trainer(), run_dir)
    assert (run_dir / "control.sock").read_text() == "mine"
    assert control.start_for_run(fake_trainer(), run_dir) is None  # the run goes on without a channel


@pytest.mark.parametrize("runtime", [True, False])
def test_long_run_folder_gets_a_short_socket_path(tmp_path, monkeypatch, runtime):
    short = Path(tempfile.mkdtemp(prefix="xdg"))
    if runtime:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(short))
    else:
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
        monkeypatch.setattr(tempfile, "gettempdir", lambda: str(short))
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    t = fake_trainer()
    srv = serve_trainer(t, deep)
    try:
        assert len(os.fsencode(srv.path)) <= control.MAX_SOCKET_PATH
        assert srv.path.is_relative_to(short)
        assert stat.S_IMODE(os.stat(srv.path).st_mode) == 0o600
        if not runtime:
            assert stat.S_IMODE(os.stat(srv.path.parent).st_mode) == 0o700
        info = json.loads((deep / "control.json").read_text())
        assert info["socket"] == str(srv.path)
        assert request(deep, "pause")["ok"]
    finally:
        srv.close()
    assert not srv.path.exists() and not (deep / "control.json").exists()
    assert drained(t.commands) == [Command.PAUSE]


def test_client_errors_are_one_line(tmp_path):
    with pytest.raises(ControlError, match="not a run folder"):
        request(tmp_path / "missing", "pause")
    with pytest.raises(ControlError, match="no live run"):
        request(tmp_path, "pause")


# --- with a real trainer ----------------------------------------------------

class ListSink:
    def __init__(self):
        self.records = []

    def emit(self, r):
        self.records.append(r)

    def of(self, cls):
        return [r for r in self.records if isinstance(r, cls)]


def wait_for(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_steering_a_real_trainer(tiny_cfg, run_dir):
    sink = ListSink()
    trainer, run = trainer_with_run(tiny_cfg(steps=100_000, eval_every=100_000), run_dir, [sink])
    ended: list[RunEnd] = []
    th = threading.Thread(target=lambda: ended.append(trainer.run()))
    with serve_trainer(run, run_dir):
        th.start()
        assert wait_for(lambda: trainer.step >= 3)
        assert request(run_dir, "pause")["ok"]
        assert wait_for(lambda: sink.of(Paused))
        assert request(run_dir, "status")["state"] == "paused"
        paused_at = trainer.step
        assert request(run_dir, "eval")["ok"]
        assert wait_for(lambda: sink.of(Eval))
        assert request(run_dir, "checkpoint")["ok"]
        assert wait_for(lambda: sink.of(Checkpoint))
        assert trainer.step == paused_at  # nothing trained while paused
        assert request(run_dir, "resume")["ok"]
        assert wait_for(lambda: sink.of(Resumed) and trainer.step > paused_at + 2)
        assert request(run_dir, "stop")["ok"]
        th.join(timeout=30)
    assert ended and ended[0].status == "stopped"
    assert (run_dir / "latest.pt").exists()
    assert Path(sink.of(Checkpoint)[0].path).exists()


def test_attach_send_from_the_cli(tiny_cfg, run_dir, capsys):
    trainer, run = trainer_with_run(tiny_cfg(steps=100_000, eval_every=100_000), run_dir, [])
    with serve_trainer(run, run_dir):
        th = threading.Thread(target=trainer.run)
        th.start()
        try:
            assert cli.main(["attach", str(run_dir), "--send", "pause"]) == 0
            answer = json.loads(capsys.readouterr().out)
            assert answer["ok"] and answer["cmd"] == "pause"
            assert wait_for(lambda: run.paused)
        finally:
            run.request_stop()
            th.join(timeout=30)
    assert cli.main(["attach", str(run_dir), "--send", "status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no live run") and err.count("\n") == 1


def test_train_serves_the_channel_and_removes_it_at_the_end(tmp_path, capsys):
    """cmd_train opens the channel for a headless run; stop over it ends the run cleanly."""
    out = tmp_path / "run"
    flags = ["train", "--headless", "--steps", "100000", "--eval-every", "100000", "--n-layer", "1",
             "--n-head", "2", "--n-embd", "32", "--context-length", "16", "--batch-size", "4", "--out", str(out)]
    codes: list[int] = []
    th = threading.Thread(target=lambda: codes.append(cli.main(flags)))
    th.start()
    try:
        assert wait_for(lambda: (out / "control.sock").exists())
        assert wait_for(lambda: request(out, "status")["step"] > 2)
        assert request(out, "stop")["ok"]
    finally:
        th.join(timeout=60)
    assert codes == [0]
    assert not (out / "control.sock").exists()
    last = json.loads((out / "losses.jsonl").read_text().splitlines()[-1])
    assert last["type"] == "run_end" and last["status"] == "stopped"


def test_client_reports_a_refusal_at_the_door(served, monkeypatch):
    t, srv = served
    monkeypatch.setattr(control_server, "peer_uid", lambda conn: os.getuid() + 1)
    for _ in range(5):  # whichever way the race between send and close goes
        answer = request(srv.run_dir, "stop")
        assert answer["ok"] is False and "permission denied" in answer["error"]
    assert drained(t.commands) == []

"""Requests cannot end a run (issue 20): what arrives by socket, key or an own
loop's callback is answered, refused or dropped, and only ``stop`` ends the
run.  Items 2 (a bad prompt failed the run), 8 (deep nesting killed the
control thread), 9 (EMFILE killed it, then the final checkpoint), 13 (a
request that timed out was applied later) and 15 (token-id prompts turned
into token 0)."""
from __future__ import annotations

import errno
import json
import os
import resource
import signal
import socket
import threading
import time

import numpy as np
import pytest

from tui_trainer import cli
from tui_trainer.control import server as control_server
from tui_trainer.control.commands import Command, Dropped, Order
from tui_trainer.control.channel import ControlError, TrainerControl, request, serve_trainer
from tui_trainer.control.server import MAX_DEPTH, nesting, parse_request
from tui_trainer.train.data import ByteTokenizer, IdTokenizer
from tui_trainer.train.engine import Trainer
from trainer_with_run import trainer_with_run
from tui_trainer.records import Ack, RunEnd, Sample
from tui_trainer.run.run import Run
from tui_trainer.run.log_writer import LOG_NAME, JsonlSink

from test_control import ListSink, drained, fake_trainer, raw
from test_faults import records, start, wait_until


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


def wait_for(pred, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if pred():
                return True
        except ControlError:
            pass
        time.sleep(0.02)
    return False


def live(tiny_cfg, run_dir, sink, **cfg):
    """A real trainer writing its log, training in a thread until stopped
    (serve its channel with ``serve_trainer``)."""
    trainer, run = trainer_with_run(tiny_cfg(**{"steps": 100_000, "eval_every": 100_000, "threads": 1, **cfg}),
                                    run_dir, [sink, JsonlSink(run_dir / LOG_NAME)])
    ended: list[RunEnd] = []
    th = threading.Thread(target=lambda: ended.append(trainer.run()), daemon=True)
    return trainer, run, th, ended


# --- item 8: length and nesting are checked before parsing ---------------------

def test_nesting_is_counted_on_the_raw_bytes_outside_strings():
    assert nesting(b'{"cmd": "set", "key": "k", "value": [1, [2]]}') == 3
    assert nesting(b'{"cmd": "sample", "prompt": "[[[[{{{{ \\" [[["}') == 1
    assert nesting(b"[" * 3000) == 3000
    req, why = parse_request(b"[" * 2000 + b"]" * 2000)
    assert req is None and f"deeper than {MAX_DEPTH}" in why
    assert parse_request(b'{"cmd": "ping"}') == ({"cmd": "ping"}, None)


@pytest.mark.parametrize("line", [
    b"[" * 2040 + b"]" * 2040,                       # the 4 KB line of item 8
    b'{"cmd": "status", "x": ' + b"{\"a\":" * 600 + b"1" + b"}" * 600 + b"}",
    b"[" * 4000,                                     # never closed
], ids=["arrays", "objects", "unclosed"])
def test_a_deeply_nested_line_is_answered_and_the_channel_lives(served, run_dir, line):
    t, srv = served
    assert len(line) <= control_server.MAX_LINE
    [answer] = raw(srv.path, line + b"\n")
    assert answer["ok"] is False and "nested deeper" in answer["error"]
    assert request(run_dir, "status", timeout=5)["ok"]
    assert srv._thread.is_alive() and drained(t.commands) == []


def test_any_exception_while_serving_costs_one_connection_never_the_thread(served, run_dir, monkeypatch, capsys):
    t, srv = served
    boom = iter([RuntimeError("a bug in the reader")])

    def parse(line):
        e = next(boom, None)
        if e is not None:
            raise e
        return parse_request(line)

    monkeypatch.setattr(control_server, "parse_request", parse)
    assert raw(srv.path, b'{"cmd": "pause"}\n') == []  # that connection is dropped unanswered
    assert request(run_dir, "status", timeout=5)["ok"]
    assert srv._thread.is_alive() and srv.errors == 1
    assert "control channel: RuntimeError: a bug in the reader" in capsys.readouterr().err


def test_an_answer_that_cannot_be_sent_is_an_error_answer(run_dir):
    with control_server.ControlServer(run_dir, lambda req: {"ok": True, "x": object()}).start() as srv:
        [answer] = raw(srv.path, b'{"cmd": "ping"}\n')
        assert answer["ok"] is False and answer["error"].startswith("internal error: TypeError")


# --- item 9: out of descriptors ------------------------------------------------

class _Starved:
    """The listener, whose accept fails as a process out of descriptors does."""

    def __init__(self, real: socket.socket, fails: int):
        self.real, self.fails, self.calls = real, fails, 0

    def fileno(self) -> int:
        return self.real.fileno()

    def accept(self):
        self.calls += 1
        if self.calls <= self.fails:
            raise OSError(errno.EMFILE, "Too many open files")
        return self.real.accept()

    def close(self) -> None:
        self.real.close()


def test_emfile_on_accept_backs_off_and_the_channel_lives(served, run_dir, monkeypatch):
    t, srv = served
    monkeypatch.setattr(control_server, "ACCEPT_BACKOFF_S", 0.05)
    starved = _Starved(srv._listener, fails=6)
    srv._listener = starved
    for _ in range(3):  # each is answered (busy, with the reason) or waits for the back-off
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(os.fspath(srv.path))
        s.close()
    assert wait_for(lambda: starved.calls > starved.fails, timeout=30)
    assert wait_for(lambda: request(run_dir, "status", timeout=5)["ok"], timeout=30)
    assert srv._thread.is_alive() and srv.refused >= 1


# --- item 13: a request carries its deadline -------------------------------------

def test_a_request_that_arrives_after_its_deadline_is_dropped(served, run_dir):
    t, srv = served
    [answer] = raw(srv.path, json.dumps({"cmd": "pause", "deadline": time.time() - 5}).encode() + b"\n")
    assert answer["ok"] is False and "arrived after its deadline" in answer["error"]
    [note] = drained(t.commands)
    assert isinstance(note, Dropped) and note.command is Command.PAUSE  # never the pause itself
    [answer] = raw(srv.path, json.dumps({"cmd": "pause", "deadline": time.time() + 60}).encode() + b"\n")
    assert answer["ok"] and drained(t.commands) == [Command.PAUSE]


@pytest.mark.parametrize("deadline", ["soon", True, None, [1], 10**400, float("inf")],
                         ids=["text", "bool", "nan", "list", "huge", "inf"])
def test_a_malformed_deadline_is_refused(served, deadline):
    t, srv = served
    line = json.dumps({"cmd": "pause", "deadline": deadline}).encode() if deadline is not None \
        else b'{"cmd": "pause", "deadline": NaN}'  # Python's json reads NaN and Infinity
    [answer] = raw(srv.path, line + b"\n")
    assert answer["ok"] is False and '"deadline"' in answer["error"]
    assert drained(t.commands) == []


def test_the_client_sends_a_deadline_due_before_it_gives_up(run_dir):
    got = []
    with control_server.ControlServer(run_dir, lambda req: got.append(req) or {"ok": True}).start():
        before = time.time()
        assert request(run_dir, "pause", timeout=4.0)["ok"]
    [req] = got
    assert before < req["deadline"] < before + 4.0


def test_a_late_request_is_written_as_dropped_and_never_applied(tiny_cfg, run_dir):
    sink = ListSink()
    trainer, run, th, ended = live(tiny_cfg, run_dir, sink)
    with serve_trainer(run, run_dir) as srv:
        th.start()
        try:
            assert wait_for(lambda: trainer.step >= 2)
            [answer] = raw(srv.path, json.dumps({"cmd": "pause", "deadline": time.time() - 1}).encode() + b"\n")
            assert answer["ok"] is False
            assert wait_for(lambda: sink.of(Ack))
            [ack] = sink.of(Ack)
            assert ack.command == "pause" and not ack.ok and ack.message.startswith("dropped: arrived after")
            assert not run.paused and request(run_dir, "status")["state"] == "running"
            assert request(run_dir, "stop")["ok"]
        finally:
            run.request_stop()
            th.join(timeout=60)
    assert ended[0].status == "stopped"


def stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads a process's state from /proc")
def test_the_issues_reproductions_in_a_real_run(tmp_path):
    """Items 9 and 13 as reported, on one real ``train --headless`` process:
    under ``ulimit -n 16`` ten connections are refused with the reason (the
    channel lives); a request sent while the process is SIGSTOPped times
    out and is not applied after SIGCONT; SIGTERM still writes the final
    checkpoint."""
    out = tmp_path / "run"

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))

    p = start(out, "--steps", "100000", "--eval-every", "100000", preexec_fn=low_limit)
    held: list[socket.socket] = []
    try:
        wait_until(lambda: (out / "control.sock").exists() and any(r["type"] == "train" for r in records(out)), p)
        for _ in range(10):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(os.fspath(out / "control.sock"))
            held.append(s)
        answer = request(out, "status", timeout=30)
        assert answer["ok"] or "file descriptors" in answer["error"], answer
        for s in held:
            s.close()
        assert wait_for(lambda: request(out, "status", timeout=30)["ok"])  # the channel lived

        p.send_signal(signal.SIGSTOP)
        assert wait_for(lambda: stopped(p.pid))  # kill() returns before the process has stopped
        with pytest.raises(ControlError, match="did not answer"):
            request(out, "pause", timeout=1.0)
        p.send_signal(signal.SIGCONT)
        wait_until(lambda: any(r["type"] == "ack" for r in records(out)), p)
        assert request(out, "status", timeout=30)["state"] == "running"

        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 0, p.stderr.read().decode()
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
        for s in held:
            s.close()
    recs = records(out)
    [ack] = [r for r in recs if r["type"] == "ack"]
    assert ack["command"] == "pause" and "arrived after its deadline" in ack["message"]
    assert not any(r["type"] == "pause" for r in recs)
    assert recs[-1]["type"] == "run_end" and recs[-1]["status"] == "stopped", recs[-1]
    assert (out / "latest.pt").exists()


# --- item 2: a bad prompt is refused on arrival; a failing request is an ack -----

def test_prompts_are_checked_on_arrival(tiny_cfg):
    t, run = trainer_with_run(tiny_cfg(threads=1))
    handle = TrainerControl(run).handle
    answer = handle({"cmd": "sample", "prompt": "\ud800abc"})
    assert answer["ok"] is False and "U+D800" in answer["error"] and "lone surrogate" in answer["error"]
    assert handle({"cmd": "sample", "prompt": "caf\udce9"})["ok"]  # a byte model takes the byte 0xE9
    assert ByteTokenizer().encode("caf\udce9") == list(b"caf\xe9")
    # A loop of your own gets text only: no surrogate reaches its on_sample.
    own = Run(None)
    own.set_handlers(on_sample=lambda *a: "x")
    for prompt in ("\ud800abc", "caf\udce9"):
        answer = TrainerControl(own).handle({"cmd": "sample", "prompt": prompt})
        assert answer["ok"] is False and "lone surrogate" in answer["error"]


def test_a_non_utf8_prompt_from_attach_samples_and_the_run_goes_on(tiny_cfg, run_dir, capsys):
    sink = ListSink()
    trainer, run, th, ended = live(tiny_cfg, run_dir, sink, sample_tokens=4)
    with serve_trainer(run, run_dir):
        th.start()
        try:
            assert wait_for(lambda: trainer.step >= 2)
            # argv of `attach --sample $'caf\xe9'`: os.fsdecode gives 'caf\udce9'
            assert cli.main(["attach", str(run_dir), "--sample", "caf\udce9", "--tokens", "4"]) == 0
            assert capsys.readouterr().out.startswith("caf")
            code = cli.main(["attach", str(run_dir), "--sample", "\ud800abc"])
            got = capsys.readouterr()
            assert code == 1 and not got.out  # one error line, not the socket's JSON answer
            assert got.err.startswith("error: the run refused the sample: ") and "lone surrogate" in got.err
            assert got.err.count("\n") == 1
            assert request(run_dir, "status")["state"] == "running"
            assert request(run_dir, "stop")["ok"]
        finally:
            run.request_stop()
            th.join(timeout=60)
    assert ended[0].status == "stopped" and ended[0].error is None
    assert [s.requested for s in sink.of(Sample)] == [True]


def test_an_exception_while_applying_a_request_is_an_ack_and_the_run_finishes(tiny_cfg):
    c = tiny_cfg(steps=12, eval_every=1000, threads=1)
    sink = ListSink()
    run = Run(None, sinks=[sink], checkpoint_every=c.ckpt_every, keep=c.keep)
    t = Trainer(c, run)

    def broken(*args):
        raise RuntimeError("the sampler broke")

    run._handlers._fns[Command.SAMPLE] = broken  # over the trainer's own
    run._handlers._fns[Command.EVAL] = broken
    for item in (Order(Command.SAMPLE, {"prompt": "def ", "id": "x9"}, "attach"), Command.EVAL, "no-such-command"):
        run.commands.put(item)
    end = t.run()
    assert end.status == "finished" and end.step == 12
    acks = sink.of(Ack)
    assert [a.command for a in acks] == ["sample", "eval", "no-such-command"]
    assert all(not a.ok and "the run goes on" in a.message for a in acks)
    assert "RuntimeError: the sampler broke" in acks[0].message
    assert acks[0].id == "x9" and acks[1].id is None


def test_attach_sample_says_at_once_when_the_run_could_not_draw_it(tiny_cfg, run_dir, capsys):
    sink = ListSink()
    trainer, run, th, ended = live(tiny_cfg, run_dir, sink)

    def broken(*args):
        raise RuntimeError("out of memory")

    run._handlers._fns[Command.SAMPLE] = broken  # over the trainer's own
    with serve_trainer(run, run_dir):
        th.start()
        try:
            assert wait_for(lambda: trainer.step >= 2)
            assert cli.main(["attach", str(run_dir), "--sample", "def "]) == 2
            err = capsys.readouterr().err
            assert "could not draw the sample" in err and "out of memory" in err and err.count("\n") == 1
            assert request(run_dir, "status")["state"] == "running"
        finally:
            run.request_stop()
            th.join(timeout=60)
    assert ended[0].status == "stopped"


def test_the_prompt_box_is_checked_like_the_socket(tiny_cfg):
    from types import SimpleNamespace

    from tui_trainer.ui.sources import LocalSteering

    t, run = trainer_with_run(tiny_cfg(threads=1))
    steering = LocalSteering(SimpleNamespace(trainer=t, run=run, done=False, stopping=False))  # the g key's route
    answer = steering.request({"cmd": "sample", "prompt": "\udfffx", "id": "ui-1"})
    assert answer["ok"] is False and "U+DFFF" in answer["error"]
    assert drained(run.commands) == []


def test_an_own_loops_failing_callback_is_an_ack_not_an_exception(tmp_path):
    import tui_trainer
    from tui_trainer.logs import read_records

    def on_sample(prompt, **kw):
        raise KeyError("no tokenizer here")

    folder = tmp_path / "run"
    with tui_trainer.init(folder, quiet=True, signals=False, on_sample=on_sample) as run:
        run.log(1, train_loss=1.0)
        assert request(folder, {"cmd": "sample", "prompt": "hi"})["ok"]
        run.log(2, train_loss=1.0)  # applied here: the failure is written, not raised
        run.log(3, train_loss=1.0)
    recs = read_records(folder / LOG_NAME)
    [ack] = [r for r in recs if r["type"] == "ack"]
    assert ack["command"] == "sample" and "KeyError" in ack["message"] and not ack["ok"]
    assert recs[-1]["type"] == "run_end" and recs[-1]["status"] == "finished" and recs[-1]["step"] == 3


def test_a_bad_sample_prompt_at_start_is_one_line_before_any_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--headless", "--steps", "3", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
                     "--context-length", "16", "--batch-size", "4", "--threads", "1", "--out", str(out),
                     "--sample-prompt", "\ud800x"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --sample-prompt") and err.count("\n") == 1, err
    assert "lone surrogate" in err and not out.exists()


# --- item 15: a token-id run's prompts ----------------------------------------------

@pytest.mark.parametrize("prompt", ["hello", "-1", "1e5", "50", "3 x", "  ", "٣", "9" * 40])
def test_token_id_prompts_are_refused_never_read_as_token_0(prompt):
    tok = IdTokenizer(50)
    why = tok.check(prompt)
    assert why is not None and "space-separated token ids below 50" in why
    with pytest.raises(ValueError, match="token ids below 50"):
        tok.encode(prompt)
    assert tok.check("0 7 49") is None and tok.encode("0 7 49") == [0, 7, 49]


@pytest.fixture
def bin_data(tmp_path):
    path = tmp_path / "ids.bin"
    np.random.default_rng(0).integers(0, 50, 4000, dtype=np.uint16).tofile(path)
    return path


def test_a_token_id_run_refuses_bad_prompts_on_arrival(tiny_cfg, bin_data):
    t, run = trainer_with_run(tiny_cfg(threads=1, data=str(bin_data)))
    handle = TrainerControl(run).handle
    for prompt in ("hello", "-1", "1e5", "50"):
        answer = handle({"cmd": "sample", "prompt": prompt})
        assert answer["ok"] is False and "space-separated token ids below 50" in answer["error"], prompt
    assert handle({"cmd": "sample", "prompt": "1 2 3"})["ok"]


def test_a_token_id_run_refuses_a_bad_sample_prompt_at_start(tmp_path, bin_data, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--headless", "--steps", "3", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
                     "--context-length", "16", "--batch-size", "4", "--threads", "1", "--out", str(out),
                     "--data", str(bin_data), "--sample-prompt", "hello"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "token ids below 50" in err, err
    assert not out.exists()

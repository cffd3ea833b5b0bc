"""A fuzzer at a live run's control socket (issue 20): random bytes, random
JSON, deep nesting, 1 MB lines, invalid UTF-8, lone surrogates and wrong types
for every known command's fields, a few hundred messages from a seeded
generator.  Every line is answered with one JSON object (or the connection is
closed after an overlong line), the run keeps answering ``status``, no
request fails while it is applied, and the run, resumed, ends ``finished``."""
from __future__ import annotations

import json
import os
import random
import socket
import threading
import time

import pytest

from tui_trainer.control.channel import COMMANDS, request
from tui_trainer.train.engine import Trainer
from tui_trainer.records import Ack, RunEnd
from tui_trainer.run.run import Run
from tui_trainer.control.settings import coerce

MESSAGES = 300
SEED = 20

ODD = [None, True, False, 0, -1, 1, 7, 1.5, -0.0, 1e308, -1e308, 10**30, -(10**30), "", "x", "1e5", "nan",
       "inf", "-1", "\ud800", "\udce9abc", "caf\u00e9", "\x00\x1b[2J", "9" * 3000, [], [1, 2], {}, {"a": 1},
       [[[[]]]], {"cmd": "stop"}]
FIELDS = ["cmd", "key", "value", "prompt", "tokens", "temperature", "top_k", "id", "deadline"]
KEYS = ["lr_scale", "max_lr", "min_lr", "steps", "eval_every", "checkpoint_every", "grad_clip", "weight_decay",
        "pause_at", "nope", "", "\ud800"]
# Requests that may legitimately end or unpause the run, or make it diverge:
# the fuzzer keeps them out so the run's end is known.  Refusals of them are sent.
ENDS = {"stop", "resume", "toggle_pause"}
RISKY_KEYS = {"lr_scale", "max_lr", "min_lr", "steps", "grad_clip", "weight_decay"}


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(6 if depth < 4 else 3)
    if kind == 0:
        return rng.choice(ODD[:20])
    if kind == 1:
        return rng.uniform(-1e6, 1e6)
    if kind == 2:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(12)))
    if kind == 3:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(FIELDS + ["zz"]): random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def a_request(rng: random.Random) -> dict:
    """A request for a known command, some of its fields of the wrong type."""
    cmd = rng.choice(COMMANDS)
    req: dict = {"cmd": cmd}
    if cmd == "set":
        req["key"] = rng.choice(KEYS)
        req["value"] = rng.choice(ODD) if rng.random() < 0.8 else rng.randrange(1, 50)
    if cmd == "sample":
        req["prompt"] = rng.choice(ODD)
    for field in rng.sample(FIELDS[1:], rng.randrange(4)):
        req[field] = rng.choice(ODD)
    if rng.random() < 0.3:
        req["cmd"] = rng.choice(ODD)
    return req


def tame(req: dict) -> dict | None:
    """The request, kept from ending, unpausing or diverging the run (None:
    leave it out), and any sample it asks for kept short."""
    cmd = req.get("cmd")
    if isinstance(cmd, str) and cmd in ENDS:
        return None
    key = req.get("key")
    if cmd == "set" and isinstance(key, str) and key in RISKY_KEYS and coerce(req.get("value"), float) is not None:
        return None
    if cmd == "sample":
        n = coerce(req.get("tokens"), int)
        if n is not None and n > 8:
            req["tokens"] = 8
    return req


def messages(rng: random.Random):
    """(raw bytes to send on one connection) x MESSAGES."""
    for _ in range(MESSAGES):
        kind = rng.randrange(10)
        if kind == 0:  # random bytes, newlines and all
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) + b"\n"
        elif kind == 1:  # random JSON
            yield json.dumps(random_json(rng)).encode() + b"\n"
        elif kind == 2:  # deep nesting, arrays or objects, thousands deep
            n = rng.choice([40, 1000, 2000, 5000])
            line = b"[" * n + b"]" * n if rng.random() < 0.5 else b'{"a":' * n + b"1" + b"}" * n
            yield line + b"\n"
        elif kind == 3:  # a 1 MB line
            yield b'{"cmd": "sample", "prompt": "' + b"a" * (1 << 20) + b'"}\n'
        elif kind == 4:  # invalid UTF-8 in a string
            yield b'{"cmd": "sample", "prompt": "caf\xe9 \xff\xfe", "id": "\xc3"}\n'
        elif kind == 5:  # lone surrogates, as escapes, wherever a string goes
            field = rng.choice(["cmd", "prompt", "key", "id"])
            req = {"cmd": "sample", "prompt": "ok"} if field != "key" else {"cmd": "set", "value": 1}
            req[field] = rng.choice(["\ud800abc", "\udfff", "\udce9", "a\udbff\udbff"])
            yield json.dumps(req).encode() + b"\n"
        else:  # a known command with odd fields, sometimes several per connection
            reqs = [r for r in (tame(a_request(rng)) for _ in range(rng.randrange(1, 4))) if r is not None]
            yield b"".join(json.dumps(r).encode() + b"\n" for r in reqs) or b"\n"


def send(path, payload: bytes) -> list[bytes]:
    """Send ``payload`` on a fresh connection, close our side, read every answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)  # the channel answers at once, whatever the loop is doing
    s.connect(os.fspath(path))
    try:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # an overlong line: answered, then the server closed
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    return [line for line in buf.split(b"\n") if line.strip()]


def wait_for(pred, timeout: float = 120.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


class Sink:
    def __init__(self):
        self.records = []

    def emit(self, r):
        self.records.append(r)


def test_a_fuzzed_socket_never_ends_the_run(tiny_cfg, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    cfg = tiny_cfg(steps=30, eval_every=1000, threads=1, out=str(folder))
    sink = Sink()
    run = Run(folder, sinks=[sink], checkpoint_every=cfg.ckpt_every, keep=cfg.keep).open(signals=False)
    trainer = Trainer(cfg, run)
    ended: list[RunEnd] = []
    th = threading.Thread(target=lambda: ended.append(trainer.run()), daemon=True)
    try:
        th.start()
        path = run._out.control.path
        assert wait_for(lambda: trainer.step >= 1)
        assert request(folder, "pause", timeout=30)["ok"]
        assert wait_for(lambda: run.paused)

        rng = random.Random(SEED)
        answered = 0
        for payload in messages(rng):
            for line in send(path, payload):
                answer = json.loads(line)
                assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool), line[:200]
                assert answer["ok"] or (isinstance(answer.get("error"), str) and answer["error"]), line[:200]
                answered += 1
            assert not ended, f"the run ended during the fuzz: {ended}"
        assert answered >= MESSAGES // 2
        status = request(folder, "status", timeout=30)
        assert status["ok"] and status["state"] == "paused"
        assert run._out.control._thread.is_alive() and run._out.control.errors == 0

        # Resumed, it finishes: whatever pause_at or cadence the fuzz left.  The
        # queue may still be full of what the fuzz asked for ("busy"): ask again.
        assert wait_for(lambda: request(folder, {"cmd": "set", "key": "pause_at", "value": 0}, timeout=30)["ok"])
        assert wait_for(lambda: request(folder, "resume", timeout=30)["ok"])
        th.join(timeout=300)
    finally:
        run.request_stop()
        th.join(timeout=60)
        run.close()
    assert ended and ended[0].status == "finished" and ended[0].step == 30, ended
    # Nothing was applied and failed: the only refusals written are late arrivals.
    failed = [a.message for a in sink.records if isinstance(a, Ack) and not a.ok
              and not a.message.startswith("dropped: arrived after its deadline")]
    assert failed == []
    log = [json.loads(line) for line in (folder / "losses.jsonl").read_text().splitlines()]
    assert log[-1]["type"] == "run_end" and log[-1]["status"] == "finished"

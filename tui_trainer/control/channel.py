"""The control channel: steer a running trainer from another process.

A Unix domain socket in the run folder (``control.sock``), served by one
thread of the training process.  One JSON line in, one JSON line out:

    {"cmd": "pause"}        ->  {"ok": true, "cmd": "pause", "step": 812, "state": "running", "queued": true}
    {"cmd": "frobnicate"}   ->  {"ok": false, "error": "unknown command 'frobnicate'; ..."}

The acknowledgement says the command was accepted into the trainer's queue;
what it did shows up in the run log as usual (a ``pause`` record, an ``eval``,
a ``checkpoint``).  Commands: pause, resume, toggle_pause, eval, checkpoint,
stop, and the read-only status (with ``settings``: the live settings and their
values now) and ping; with arguments:

    {"cmd": "set", "key": "lr_scale", "value": 0.5}   ->  checked now, applied at the next step
    {"cmd": "sample", "prompt": "def ", "tokens": 100, "temperature": 0.8, "top_k": 20, "id": 7}

A set is validated against the run's live settings (``settings.Settings``)
before it is queued, and refused with the reason if the key is unknown or the
value out of range; it is written as a ``change`` record when applied, with
source ``attach`` (or ``mcp`` when the request says ``"source": "mcp"``).  A
sample's prompt is checked against the run's tokenizer when it arrives (a
refusal is the answer, never ok then a failure); it runs on the training
thread between steps (at once while paused) and is written as a ``sample``
record with ``"requested": true`` and the id.

Any request may carry ``"deadline"``: a time (seconds since the epoch, as
``time.time()``) after which it is worth nothing, because its sender has
stopped waiting for the answer.  One that arrives later (the run was stopped
with SIGSTOP, or stuck) is answered as dropped and never applied; the loop's
thread writes an ``ack`` record saying so.  ``request`` sends one, due when
it gives up waiting.

This module is the protocol: what a request does (``TrainerControl``) and
the client (``request``, ``ControlClient``).  The socket itself (where it
lives, owner-only access, the serving thread) is ``control.server``'s.  A
flood cannot stall training: the server thread never touches the model, it
only offers commands to the run's queue, where a repeat of the command
already waiting at the tail is coalesced and the number waiting is bounded.
"""
from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..bounds import BOUNDS, Bound
from ..files import read_if_regular
from ..records import json_object
from .commands import STEERING, WITH_ARGS, Command, CommandQueue, Dropped, Order, Source, surrogate_problem
from .settings import coerce, short
from .server import INFO_NAME, MAX_LINE, MAX_SOCKET_PATH, SOCKET_NAME, ControlError, ControlServer, peer_uid

MAX_PENDING = 16  # commands from the channel waiting in the run's queue

QUERIES = ("status", "ping")
SOCKET_SOURCES = ("attach", "mcp")  # what a request's "source" may name (change records)
COMMANDS = STEERING + QUERIES  # STEERING: every commands.Command, by its wire name


def find_socket(run_dir: str | os.PathLike[str]) -> Path:
    """Where a client connects: control.json if the server wrote one, else the
    socket in the folder.  A one-line ``ControlError`` when there is no run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ControlError(f"{run_dir} is not a run folder; pass the folder a run is writing (outputs/run-...)")
    info = json_object(read_if_regular(run_dir / INFO_NAME, 1 << 12) or b"")  # file content: untrusted
    if info is not None and isinstance(info.get("socket"), str) and info["socket"] and "\x00" not in info["socket"]:
        return Path(info["socket"])
    p = run_dir / SOCKET_NAME
    if p.exists() or p.is_symlink():
        return p
    raise ControlError(f"no live run in {run_dir} (no control socket): the run has ended; "
                       f"replay it with tui-trainer view {run_dir}")


# --- what a request does ----------------------------------------------------

class TrainerControl:
    """Turns requests into commands on a run's queue, never blocking.

    ``target`` (a ``run.Run``) has a ``commands`` queue (a
    ``commands.CommandQueue``, whose ``offer`` coalesces and bounds); its
    ``step``, ``paused``, ``stopping`` and ``total_steps`` are read (racily,
    which is fine for a status line).
    """

    def __init__(self, target: Any, max_pending: int = MAX_PENDING, source: Source = "attach"):
        self.target = target
        self.max_pending = max_pending
        self.source = source  # who these requests come from, for change records

    def _order(self, command: Command, req: dict[str, Any]) -> tuple[Any, str | None]:
        """A set or sample request as an ``Order``, checked before anything is
        queued; (None, why) when it is refused."""
        if command is Command.SET:
            settings = getattr(self.target, "settings", None)
            if settings is None:
                return None, "this run has no live settings"
            if "key" not in req or "value" not in req:
                return None, ('a set request needs "key" and "value", such as '
                              '{"cmd": "set", "key": "lr_scale", "value": 0.5}')
            value, why = settings.parse(req["key"], req["value"])
            if why is not None:
                return None, why
            return Order(command, {"key": req["key"], "value": value}, self._source(req)), None
        args, why = sample_args(req)
        if why is None:
            check = getattr(self.target, "prompt_refusal", None)  # run.Run's: the tokenizer's word
            why = check(args["prompt"]) if check is not None else surrogate_problem(args["prompt"])
        if why is not None:
            return None, why
        return Order(command, args, self._source(req)), None

    def _source(self, req: dict[str, Any]) -> Source:
        """Who sent it: a request over the socket may say "mcp" (``mcp_server``); anything else is attach's."""
        said = req.get("source")
        return said if isinstance(said, str) and said in SOCKET_SOURCES else self.source

    def state(self) -> dict[str, Any]:
        t = self.target
        state = "stopping" if getattr(t, "stopping", False) else "paused" if getattr(t, "paused", False) \
            else "running"
        out: dict[str, Any] = {"step": getattr(t, "step", None), "state": state}
        total = getattr(t, "total_steps", None)
        if total is not None:
            out["total_steps"] = total
        return out

    def settings(self) -> dict[str, Any] | None:
        """The run's live settings and their values now (finite numbers only), or None."""
        settings = getattr(self.target, "settings", None)
        if settings is None:
            return None
        try:
            now = settings.current()
        except Exception:  # noqa: BLE001 - a loop's getter failing costs the values, not the answer
            return {k: None for k in settings.keys()}
        return {k: v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None
                for k, v in now.items()}

    def handle(self, req: Any) -> dict[str, Any]:
        if not isinstance(req, dict):
            return {"ok": False, "error": 'a request is a JSON object such as {"cmd": "pause"}'}
        cmd = req.get("cmd")
        if cmd is None:
            return {"ok": False, "error": 'a request needs a "cmd", such as {"cmd": "pause"}'}
        if not isinstance(cmd, str) or cmd not in COMMANDS:
            shown = cmd if isinstance(cmd, str) else json.dumps(cmd)
            return {"ok": False, "error": f"unknown command {shown[:40]!r}; use one of {', '.join(COMMANDS)}"}
        answer: dict[str, Any] = {"ok": True, "cmd": cmd}
        if "id" in req and isinstance(req["id"], (int, str)) and not isinstance(req["id"], bool):
            answer["id"] = req["id"] if isinstance(req["id"], int) else req["id"][:64]
        late, why = overdue(req.get("deadline"))
        if why is not None:
            return {**answer, "ok": False, "error": why}
        if late is not None:
            why = f"dropped: arrived after its deadline ({late:.1f}s late); nothing was applied, send it again"
            if cmd not in QUERIES:  # the log says so too (written by the loop's thread)
                self.target.commands.offer(Dropped(Command(cmd), why), self.max_pending)
            return {**answer, "ok": False, "error": why}
        if cmd in QUERIES:
            answer.update(self.state(), pid=os.getpid())
            if cmd == "status" and (live := self.settings()) is not None:
                answer["settings"] = live  # what a set may change, and its value now
            if cmd == "status" and (refusal := getattr(self.target, "refusal", None)) is not None:
                answer["offers"] = [c for c in ("eval", "checkpoint", "sample") if refusal(Command(c)) is None]
            return answer
        command = Command(cmd)
        refusal = getattr(self.target, "refusal", None)
        why = refusal(command) if refusal is not None else None
        item: Command | Order = command
        if why is None and command in WITH_ARGS:
            item, why = self._order(command, req)
        if why is not None:
            return {**answer, "ok": False, "error": why}
        q: CommandQueue = self.target.commands
        got = q.offer(item, self.max_pending)
        if got == "busy":
            return {"ok": False, "cmd": cmd, "error": f"busy: {q.pending()} commands already waiting; "
                                                      "try again after the current step"}
        answer.update(self.state(), queued=True)
        if got == "coalesced":
            answer["coalesced"] = True
        return answer


def overdue(deadline: Any) -> tuple[float | None, str | None]:
    """(seconds past the request's deadline, None), (None, None) when it
    has none or is in time, or (None, why the deadline is malformed)."""
    if deadline is None:
        return None, None
    try:
        if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not math.isfinite(deadline):
            raise ValueError
        late = time.time() - deadline
    except (ValueError, OverflowError):
        return None, ('"deadline" is a time in seconds since the epoch (as time.time() gives it), '
                      f"got {json.dumps(deadline)[:40]}")
    return (late, None) if late > 0 else (None, None)


MAX_PROMPT = 2000        # characters of a requested sample's prompt
MAX_SAMPLE_TOKENS = 4096


def sample_args(req: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The arguments of a sample request, checked: (args, None) or ({}, why)."""
    prompt = req.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return {}, 'a sample request needs a "prompt" (a non-empty string)'
    if len(prompt) > MAX_PROMPT:
        return {}, f"the prompt is {len(prompt)} characters; keep it under {MAX_PROMPT}"
    args: dict[str, Any] = {"prompt": prompt}
    # the run's own ranges (bounds.BOUNDS), but a person's sample is held to fewer tokens
    for key, kind, bound in (("tokens", int, Bound(1, MAX_SAMPLE_TOKENS)),
                             ("temperature", float, BOUNDS["temperature"]), ("top_k", int, BOUNDS["top_k"])):
        v = req.get(key)
        if v is None:
            continue
        got = coerce(v, kind)
        if got is None or not bound.holds(got):
            return {}, f"{key} must be {'an integer' if kind is int else 'a number'} {bound.range()}, got {short(v)}"
        args[key] = got
    if isinstance(req.get("id"), (int, str)) and not isinstance(req["id"], bool):
        args["id"] = req["id"] if not isinstance(req["id"], str) else req["id"][:64]
    return args, None


def serve_trainer(target: Any, run_dir: str | os.PathLike[str]) -> ControlServer:
    """Start the control channel for ``target`` (a ``run.Run``) in ``run_dir``."""
    return ControlServer(run_dir, TrainerControl(target).handle).start()


# --- the client -------------------------------------------------------------
MAX_ANSWER = 1 << 20  # bytes of one answer (a status with its settings, a sample's text: a few kB)

def request(run_dir: str | os.PathLike[str], cmd: str | dict[str, Any], timeout: float = 3.0) -> dict[str, Any]:
    """Send one request to the run in ``run_dir`` and return its answer.

    Any failure to reach the run is a one-line ``ControlError``; a refused
    command is an answer with ``ok`` false, not an exception.
    """
    path = find_socket(run_dir)
    req = {"cmd": cmd} if isinstance(cmd, str) else dict(cmd)
    # Due a little before we give up, so an answer sent in time is read in time.
    req.setdefault("deadline", round(time.time() + timeout - min(0.5, timeout / 4), 3))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    end = time.monotonic() + timeout  # for the whole exchange: a peer that trickles bytes is not waited on
    try:
        try:
            s = _connect(s, path, timeout)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"no live run in {run_dir}: the control socket is not answering "
                               "(the run has ended or was killed)") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}: the run belongs to another user") from None
        _check_peer(s, run_dir, path)
        try:
            s.sendall((json.dumps(req) + "\n").encode())
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused at the door (another user, too many clients): the reason is waiting to be read
        chunks: list[bytes] = []
        got = 0
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise socket.timeout
            s.settimeout(left)
            try:
                chunk = s.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
            if b"\n" in chunk:
                break
            if got > MAX_ANSWER:
                raise ControlError(f"the socket of {run_dir} ({path}) sent more than {MAX_ANSWER >> 20} MiB "
                                   "without ending its answer; it is not a run's control channel")
    except socket.timeout:
        raise ControlError(f"the run in {run_dir} did not answer within {timeout:g}s") from None
    except OSError as e:
        raise ControlError(f"control channel of {run_dir} failed ({e.strerror or e})") from None
    finally:
        s.close()
    line = b"".join(chunks).split(b"\n", 1)[0]
    try:
        answer = json.loads(line)
    except (ValueError, RecursionError):
        raise ControlError(f"the run in {run_dir} closed the connection without an answer") from None
    if not isinstance(answer, dict):
        raise ControlError(f"the run in {run_dir} sent a malformed answer")
    return answer


def _check_peer(s: socket.socket, run_dir: Any, path: Path) -> None:
    """The socket a run folder names (``control.sock``, or ``control.json``'s
    path: file content, so untrusted) is served by this user's process, or a
    one-line ``ControlError``: a request never goes to another user's socket."""
    try:
        uid = peer_uid(s)
    except OSError:
        return
    if uid is not None and uid != os.getuid():
        raise ControlError(f"the control socket {path} of {run_dir} is served by another user (uid {uid}), "
                           "not by a run of yours; check the folder (its control.json or control.sock)")


def _connect(s: socket.socket, path: Path, timeout: float) -> socket.socket:
    """``s`` connected to ``path``; while the run's queue of connections is
    full (EAGAIN: a flood of other clients it is still taking in), tried
    again on a fresh socket until ``timeout``.  A fresh socket that fails
    otherwise is closed here (the caller closes the one it gave)."""
    end = time.monotonic() + timeout
    first = s
    while True:
        try:
            s.connect(os.fspath(path))
            return s
        except BlockingIOError:
            s.close()
        except BaseException:
            if s is not first:
                s.close()
            raise
        if time.monotonic() >= end:
            raise socket.timeout from None
        time.sleep(0.02)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(max(0.01, end - time.monotonic()))


class ControlClient:
    """A handle on one run's channel for a UI: ``send("pause")`` -> answer dict,
    never raising (a failure is an answer with ``ok`` false)."""

    def __init__(self, run_dir: str | os.PathLike[str], timeout: float = 3.0):
        self.run_dir = Path(run_dir)
        self.timeout = timeout

    def send(self, cmd: str) -> dict[str, Any]:
        try:
            return request(self.run_dir, cmd, self.timeout)
        except ControlError as e:
            return {"ok": False, "cmd": cmd, "error": str(e)}

    def available(self) -> bool:
        """Whether a run listens here: its socket, and a process on it (a kill -9 leaves the file behind,
        and a window attached to it offered keys that could only be refused).  Never blocks."""
        try:
            path = find_socket(self.run_dir)
        except ControlError:
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(os.fspath(path))  # the server drops a connection that sends nothing
        except (BlockingIOError, InterruptedError, PermissionError):
            return True  # there, its queue full; or another user's, which a request says in words
        except OSError:
            return False  # refused (no process listens), gone, not a socket, a path too long
        finally:
            s.close()
        return True


def start_for_run(target: Any, run_dir: str | os.PathLike[str]) -> ControlServer | None:
    """The channel ``cmd_train`` opens for every run.  A folder where no
    socket can be made (some network filesystems) costs the channel, not the
    run: one warning line, and training goes on."""
    try:
        return serve_trainer(target, run_dir)
    except (ControlError, OSError) as e:
        import sys

        from ..terminal import printable

        print(f"warning: no control channel ({printable(e, newlines=False)}); `tui-trainer attach` cannot "
              "steer this run", file=sys.stderr, flush=True)
        return None

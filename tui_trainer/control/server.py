"""The control channel's socket: where it lives, who may connect, and the
one thread that serves it.

Only the run's owner gets in: the socket is created 0600 (under a 0177
umask, so there is no moment it is open wider) and each connection's peer uid
is checked with SO_PEERCRED where the platform has it (``peer_uid``).  A
flood cannot stall training: one thread, non-blocking sockets and a
selector; connections, line lengths and depth (``channel_limits``), unread
answers and idle time are capped.  The thread never dies: an error serving a
request is its answer (a bug: logged, that connection dropped), and short of
file descriptors it refuses with the reason, backs off and leaves the run some.

AF_UNIX paths are limited to ~107 bytes.  When the run folder's path is too
long the socket lives under $XDG_RUNTIME_DIR (or a private 0700 folder in
/tmp) named by a hash of the run folder, and ``control.json`` in the run
folder says where, so a client never has to guess.

What a request *does* is not decided here: the server calls a handler
(``control.TrainerControl.handle``).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import selectors
import socket
import stat
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .limits import FD_HEADROOM, MAX_DEPTH, MAX_LINE, Reserve, free_descriptors, nesting, parse_request
from ..config import UserError
from ..files import read_if_regular

SOCKET_NAME = "control.sock"
INFO_NAME = "control.json"
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS; keep a margin
MAX_CLIENTS = 16
IDLE_TIMEOUT = 30.0  # seconds a connection may sit without sending a full line
MAX_OUTBUF = 64 * 1024  # a client that never reads its answers is dropped
ACCEPT_BACKOFF_S = 0.5  # how long accepting pauses after the process ran out of descriptors


class ControlError(UserError):
    """A control channel problem, phrased as one line for the person."""


# --- where the socket lives -------------------------------------------------

def _short_dir() -> Path:
    """A private folder for sockets whose run-folder path is too long."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return Path(runtime)
    d = Path(tempfile.gettempdir()) / f"tui-trainer-{os.getuid()}"
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(d)
    # Someone else's folder (or a link) at our name would let them swap the socket.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ControlError(f"{d} is not a private folder owned by you; remove it or set XDG_RUNTIME_DIR")
    return d


def socket_path_for(run_dir: str | os.PathLike[str]) -> Path:
    """Where a server for ``run_dir`` binds: in the folder when the path fits."""
    run_dir = Path(run_dir).resolve()
    p = run_dir / SOCKET_NAME
    if len(os.fsencode(p)) <= MAX_SOCKET_PATH:
        return p
    digest = hashlib.sha256(os.fsencode(run_dir)).hexdigest()[:16]
    return _short_dir() / f"tui-trainer-{digest}.sock"


def _probe_live(path: Path) -> bool:
    """True when a server answers at ``path``; False when nobody listens."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(os.fspath(path))
        return True
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise ControlError(f"cannot check the control socket {path} ({e.strerror})") from None
    finally:
        s.close()


# --- the server -------------------------------------------------------------

def peer_uid(conn: socket.socket) -> int | None:
    if not hasattr(socket, "SO_PEERCRED"):
        return None  # macOS/BSD: the 0600 socket file is the guard
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


_SHORT_OF_FDS = {"ok": False, "error": "busy: the run is short of file descriptors (ulimit -n); "
                                       "try again later, or raise the limit for the next run"}


class _Conn:
    __slots__ = ("sock", "inbuf", "outbuf", "last", "closing")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.inbuf = b""
        self.outbuf = b""
        self.last = time.monotonic()
        self.closing = False


class ControlServer:
    """Serves ``handler(request) -> answer`` on the run folder's socket.

    One thread, non-blocking sockets and a selector: a slow or hostile client
    can hold a connection slot, never the thread.
    """

    def __init__(self, run_dir: str | os.PathLike[str], handler: Callable[[Any], dict[str, Any]], *,
                 max_clients: int = MAX_CLIENTS, idle_timeout: float = IDLE_TIMEOUT):
        self.run_dir = Path(run_dir)
        self.handler = handler
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        self.path = socket_path_for(self.run_dir)
        self._sel: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._conns: dict[int, _Conn] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.served = 0
        self.refused = 0
        self.errors = 0  # unexpected exceptions survived (logged once each kind)
        self._reserve = Reserve()  # a descriptor held back to make room when none are left
        self._paused_until = 0.0  # accepting is paused until then (out of descriptors)
        self._logged: set[str] = set()

    # lifecycle
    def start(self) -> "ControlServer":
        self._bind()
        self._reserve.take()
        self._thread = threading.Thread(target=self._serve, name="tui-trainer-control", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        for c in list(self._conns.values()):
            c.sock.close()
        self._conns.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            self._unlink_own()
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        self._reserve.release()

    def abandon(self) -> None:
        """In a child after ``fork`` (where the serving thread does not exist):
        close this process's copies of the sockets and leave the socket file
        alone; the parent serves on."""
        self._stop.set()
        for c in list(self._conns.values()):
            c.sock.close()  # the parent holds the connection too: it stays open
        self._conns.clear()
        for closable in (self._listener, self._sel):
            try:
                if closable is not None:
                    closable.close()
            except OSError:
                pass
        self._listener = self._sel = None

    def __enter__(self) -> "ControlServer":
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _bind(self) -> None:
        path = self.path
        if path.exists() or path.is_symlink():
            st = os.lstat(path)
            if not stat.S_ISSOCK(st.st_mode):
                raise ControlError(f"{path} exists and is not a socket; remove it to steer this run")
            if _probe_live(path):
                raise ControlError(f"another live process is serving {self.run_dir} ({path}); "
                                   "stop it first, or attach to it with tui-trainer attach")
            path.unlink()  # a stale socket left by a run that died
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is born 0600: no window where others could connect
        try:
            s.bind(os.fspath(path))
        except OSError as e:
            s.close()
            raise ControlError(f"cannot create the control socket {path} ({e.strerror})") from None
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        s.listen(self.max_clients)
        s.setblocking(False)
        self._listener = s
        self._ino = os.stat(path).st_ino
        if path.parent != self.run_dir.resolve():
            info = {"socket": os.fspath(path), "pid": os.getpid()}
            tmp = self.run_dir / f".{INFO_NAME}.tmp"
            tmp.write_text(json.dumps(info) + "\n", encoding="utf-8")
            os.replace(tmp, self.run_dir / INFO_NAME)
        self._sel = selectors.DefaultSelector()
        self._sel.register(s, selectors.EVENT_READ, None)

    def _unlink_own(self) -> None:
        # Remove the socket only if it is still ours (a later run may have replaced it).
        try:
            if os.stat(self.path).st_ino == self._ino:
                self.path.unlink()
        except OSError:
            pass
        info = self.run_dir / INFO_NAME
        try:
            raw = read_if_regular(info, 1 << 12)  # never blocks, whatever was put at that name
            if raw is not None and json.loads(raw).get("pid") == os.getpid():
                info.unlink()
        except (OSError, ValueError, AttributeError, RecursionError):
            pass

    # the loop
    def _serve(self) -> None:
        assert self._sel is not None
        while not self._stop.is_set():
            try:
                events = self._sel.select(timeout=0.2)
            except (OSError, ValueError):
                return  # closed under us
            for key, mask in events:
                conn: _Conn | None = key.data
                try:
                    if conn is None:
                        self._accept()
                    else:
                        if mask & selectors.EVENT_READ:
                            self._read(conn)
                        if mask & selectors.EVENT_WRITE and conn.sock.fileno() >= 0:
                            self._flush(conn)
                except Exception as e:  # noqa: BLE001 - a bug costs that connection, never the channel
                    self._survived(e, conn)
            try:
                self._resume_accepting()
                self._reap_idle()
            except Exception as e:  # noqa: BLE001
                self._survived(e, None)

    def _survived(self, e: Exception, conn: "_Conn | None") -> None:
        """An unexpected exception while serving: logged (once per kind), the
        connection it came from dropped, and serving goes on."""
        self.errors += 1
        try:
            if type(e).__name__ not in self._logged:
                self._logged.add(type(e).__name__)
                what = ascii(f"{type(e).__name__}: {e}")[1:-1][:200]
                print(f"warning: control channel: {what}; it keeps serving", file=sys.stderr, flush=True)
            if conn is not None:
                self._drop(conn)
        except Exception:  # noqa: BLE001 - no stderr, a socket already gone: nothing more to do
            pass

    # descriptors
    def _pause_accepting(self) -> None:
        """Out of descriptors: stop watching the listener for a while (it
        would wake the loop at once, again and again)."""
        assert self._sel is not None and self._listener is not None
        self._paused_until = time.monotonic() + ACCEPT_BACKOFF_S
        try:
            self._sel.unregister(self._listener)
        except (KeyError, ValueError):
            pass

    def _resume_accepting(self) -> None:
        if self._paused_until and time.monotonic() >= self._paused_until and self._listener is not None:
            assert self._sel is not None
            self._paused_until = 0.0
            self._reserve.take()
            try:
                self._sel.register(self._listener, selectors.EVENT_READ, None)
            except KeyError:
                pass

    def _accept(self) -> None:
        assert self._listener is not None and self._sel is not None
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                raise
            self._out_of_descriptors()
            return
        sock.setblocking(False)
        try:
            uid = peer_uid(sock)
        except OSError:
            uid = -1
        if uid is not None and uid != os.getuid():
            self.refused += 1
            self._say_and_drop(sock, {"ok": False, "error": "permission denied: this run belongs to another user"})
            return
        if len(self._conns) >= self.max_clients:
            self.refused += 1
            self._say_and_drop(sock, {"ok": False, "error": f"busy: {self.max_clients} clients connected"})
            return
        free = free_descriptors()
        if free is not None and free < FD_HEADROOM:
            self.refused += 1
            self._say_and_drop(sock, _SHORT_OF_FDS)
            return
        conn = _Conn(sock)
        self._conns[sock.fileno()] = conn
        self._sel.register(sock, selectors.EVENT_READ, conn)

    def _out_of_descriptors(self) -> None:
        """accept failed with EMFILE/ENFILE: spend the reserve descriptor to
        take the waiting connection and tell it why, then back off."""
        self.refused += 1
        self._reserve.release()
        assert self._listener is not None
        try:
            sock, _ = self._listener.accept()
        except OSError:
            pass
        else:
            sock.setblocking(False)
            self._say_and_drop(sock, _SHORT_OF_FDS)
        self._pause_accepting()

    @staticmethod
    def _say_and_drop(sock: socket.socket, answer: dict[str, Any]) -> None:
        try:
            sock.send((json.dumps(answer) + "\n").encode())
        except OSError:
            pass
        sock.close()

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.last = time.monotonic()
        conn.inbuf += data
        while b"\n" in conn.inbuf and not conn.closing:
            line, conn.inbuf = conn.inbuf.split(b"\n", 1)
            if not line.strip():
                continue
            self._answer(conn, self._dispatch(line))
        if len(conn.inbuf) > MAX_LINE:
            conn.inbuf = b""
            conn.closing = True
            self._answer(conn, {"ok": False, "error": f"request longer than {MAX_LINE} bytes; send one short JSON line"})

    def _dispatch(self, line: bytes) -> dict[str, Any]:
        self.served += 1
        req, why = parse_request(line)
        if why is not None:
            return {"ok": False, "error": why}
        try:
            answer = self.handler(req)
            json.dumps(answer)  # an answer that cannot be sent is the handler's error, not the channel's
            return answer
        except Exception as e:  # noqa: BLE001 - a bug in a handler must not kill the channel
            return {"ok": False, "error": f"internal error: {ascii(f'{type(e).__name__}: {e}')[1:-1][:200]}"}

    def _answer(self, conn: _Conn, answer: dict[str, Any]) -> None:
        conn.outbuf += (json.dumps(answer) + "\n").encode()
        if len(conn.outbuf) > MAX_OUTBUF:
            self._drop(conn)
            return
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        assert self._sel is not None
        try:
            while conn.outbuf:
                n = conn.sock.send(conn.outbuf)
                conn.outbuf = conn.outbuf[n:]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(conn)
            return
        if conn.closing and not conn.outbuf:
            self._drop(conn)
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
        try:
            self._sel.modify(conn.sock, want, conn)
        except (KeyError, ValueError):
            pass

    def _drop(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd >= 0 and self._sel is not None:
            try:
                self._sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        self._conns.pop(fd, None)
        conn.sock.close()

    def _reap_idle(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._conns.values() if now - c.last > self.idle_timeout]:
            self._drop(conn)

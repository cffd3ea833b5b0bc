"""The control channel's serving thread: one thread over the run's socket
(``socket_access``: where it lives, owner-only access).

A flood cannot stall training: one thread, non-blocking sockets and a
selector; connections, line lengths and depth (``control.limits``), unread
answers and idle time are capped.  The thread never dies: an error serving a
request is its answer (a bug: logged, that connection dropped), and short of
file descriptors it refuses with the reason, backs off and leaves the run some.

What a request *does* is not decided here: the server calls a handler
(``control.TrainerControl.handle``).
"""
from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .limits import FD_HEADROOM, MAX_DEPTH, MAX_LINE, Reserve, free_descriptors, nesting, parse_request
from .socket_access import (INFO_NAME, MAX_SOCKET_PATH, SOCKET_NAME, ControlError,  # noqa: F401 (server's names)
                            bind_owner_only, peer_uid, say_where, socket_path_for, unlink_own)

MAX_CLIENTS = 16
IDLE_TIMEOUT = 30.0  # seconds a connection may sit without sending a full line
MAX_OUTBUF = 64 * 1024  # a client that never reads its answers is dropped
ACCEPT_BACKOFF_S = 0.5  # how long accepting pauses after the process ran out of descriptors


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
    can hold a connection slot until a new one needs it, never the thread.
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
        s, self._ino = bind_owner_only(self.path, self.run_dir, self.max_clients)
        self._listener = s
        say_where(self.path, self.run_dir)
        self._sel = selectors.DefaultSelector()
        self._sel.register(s, selectors.EVENT_READ, None)

    def _unlink_own(self) -> None:
        unlink_own(self.path, self._ino, self.run_dir)

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
            self._make_room()
        free = free_descriptors()
        if free is not None and free < FD_HEADROOM:
            self.refused += 1
            self._say_and_drop(sock, _SHORT_OF_FDS)
            return
        conn = _Conn(sock)
        self._conns[sock.fileno()] = conn
        self._sel.register(sock, selectors.EVENT_READ, conn)

    def _make_room(self) -> None:
        """Every slot taken: the connection quiet the longest goes, so the one
        arriving is heard.  Requests are answered as their line arrives, so a
        connection in a slot holds half a line or waits for nothing: clients
        that connect and never finish (a leaked script, a hostile one) cannot
        keep a stop or a status out."""
        stalest = min(self._conns.values(), key=lambda c: c.last)
        self.refused += 1
        try:
            stalest.sock.send(b'{"ok": false, "error": "dropped: quiet while other clients waited; '
                              b'send one whole line at once"}\n')
        except OSError:
            pass
        self._drop(stalest)

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

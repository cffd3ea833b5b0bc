"""Who may open a run's control socket, and where it lives.

Only the run's owner gets in: the socket is created 0600 (under a 0177
umask, so there is no moment it is open wider) and each connection's peer uid
is checked with SO_PEERCRED where the platform has it (``peer_uid``).

AF_UNIX paths are limited to ~107 bytes.  When the run folder's path is too
long the socket lives under $XDG_RUNTIME_DIR (or a private 0700 folder in
/tmp) named by a hash of the run folder, and ``control.json`` in the run
folder says where, so a client never has to guess.

Serving the connections is ``control.server``'s.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import stat
import struct
import tempfile
from pathlib import Path

from ..config import UserError
from ..files import read_if_regular

SOCKET_NAME = "control.sock"
INFO_NAME = "control.json"
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS; keep a margin


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


# --- who may connect --------------------------------------------------------

def peer_uid(conn: socket.socket) -> int | None:
    if not hasattr(socket, "SO_PEERCRED"):
        return None  # macOS/BSD: the 0600 socket file is the guard
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


# --- the socket file ---------------------------------------------------------

def bind_owner_only(path: Path, run_dir: Path, backlog: int) -> tuple[socket.socket, int]:
    """A listening, non-blocking socket at ``path`` that only its owner may
    open, and its inode (for ``unlink_own``); a stale socket there is
    replaced, a live one is refused."""
    if path.exists() or path.is_symlink():
        st = os.lstat(path)
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"{path} exists and is not a socket; remove it to steer this run")
        if _probe_live(path):
            raise ControlError(f"another live process is serving {run_dir} ({path}); "
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
    s.listen(backlog)
    s.setblocking(False)
    return s, os.stat(path).st_ino


def say_where(path: Path, run_dir: Path) -> None:
    """``control.json`` in ``run_dir`` names the socket when it lives elsewhere."""
    if path.parent != run_dir.resolve():
        info = {"socket": os.fspath(path), "pid": os.getpid()}
        tmp = run_dir / f".{INFO_NAME}.tmp"
        tmp.write_text(json.dumps(info) + "\n", encoding="utf-8")
        os.replace(tmp, run_dir / INFO_NAME)


def unlink_own(path: Path, ino: int, run_dir: Path) -> None:
    """Remove the socket only if it is still ours (a later run may have
    replaced it), and ``control.json`` only if this process wrote it."""
    try:
        if os.stat(path).st_ino == ino:
            path.unlink()
    except OSError:
        pass
    info = run_dir / INFO_NAME
    try:
        raw = read_if_regular(info, 1 << 12)  # never blocks, whatever was put at that name
        if raw is not None and json.loads(raw).get("pid") == os.getpid():
            info.unlink()
    except (OSError, ValueError, AttributeError, RecursionError):
        pass

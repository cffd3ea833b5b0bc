"""Reading a file incrementally, as toolong does: ``os.pread`` from the last
offset, hand out complete lines, keep a torn last line until its newline
arrives.  Files are read in chunks, so memory is one chunk however big the log.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .formats import hugging_face
from .paths import LogError, is_binary

CHUNK = 4 << 20      # bytes per read: bounds the memory of a load
MAX_LINE = 16 << 20  # a "line" longer than this is junk (or a binary file): dropped
HEAD = 256           # bytes of the file's start remembered to notice a rewrite


class Tail:
    """Reads a file from where it left off, one complete line at a time.

    Notices when the file was truncated (smaller than our offset), replaced
    (the path now names another inode: log rotation, a rerun) or rewritten in
    place (its first bytes changed): ``changed()`` is then true and the owner
    reads it again from the start with ``open()``.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None
        self.ino: tuple[int, int] | None = None
        self.offset = 0
        self.partial = b""
        self.head = b""
        self.size = 0

    def open(self) -> bool:
        """Open the file (again, from its start); False while it does not exist."""
        self.close()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return False
        except PermissionError:
            raise LogError(f"cannot read {self.path}: permission denied") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise LogError(f"{self.path} is not a regular file")
        self.fd, self.ino, self.size = fd, (st.st_dev, st.st_ino), st.st_size
        self.offset, self.partial, self.head = 0, b"", b""
        if is_binary(os.pread(fd, 8192, 0)):
            self.close()
            raise LogError(f"{self.path} is a binary file, not a JSONL log")
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def changed(self) -> bool:
        if self.fd is None:
            return False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # moved away: keep reading the old one until a new file appears
        if (st.st_dev, st.st_ino) != self.ino:
            return True
        if st.st_size < self.offset:
            return True
        if st.st_size > self.offset and self.head:
            if os.pread(self.fd, len(self.head), 0) != self.head:
                return True
        self.size = st.st_size
        return False

    def read(self, limit: int = CHUNK) -> list[bytes] | None:
        """The complete lines of up to ``limit`` new bytes; None when nothing new."""
        buf = self.read_chunk(limit)
        if buf is None:
            return None
        lines = buf.split(b"\n")
        lines.pop()  # b"" after the last newline
        return lines

    def read_chunk(self, limit: int = CHUNK) -> bytes | None:
        """The complete lines of up to ``limit`` new bytes as one buffer, each
        ending in a newline (b"" when no line is complete yet); None when
        nothing new."""
        assert self.fd is not None
        data = os.pread(self.fd, limit, self.offset)
        if not data:
            return None
        if len(self.head) < HEAD and self.offset < HEAD:
            self.head = (self.head + data)[:HEAD]
        self.offset += len(data)
        self.size = max(self.size, self.offset)
        end = data.rfind(b"\n") + 1
        if not end:
            self.partial += data
            out = b""
        else:
            out = self.partial + data[:end] if self.partial else data[:end] if end < len(data) else data
            self.partial = data[end:]
        if len(self.partial) > MAX_LINE:  # no newline in sight: junk, not a line
            self.partial = b""
            out += b"\0\n"  # counted as one bad line
        return out

    def take_partial(self) -> bytes:
        """The unterminated last line (replay: the file is finished)."""
        p, self.partial = self.partial, b""
        return p

    @property
    def progress(self) -> float:
        return min(1.0, self.offset / self.size) if self.size else 1.0


class StateTail(Tail):
    """A Hugging Face ``trainer_state.json`` as a log: read whole when opened
    (it is one JSON document, rewritten, never appended to) and handed out as
    JSONL lines, one entry of its ``log_history`` a line; ``state`` holds its
    other figures (``formats.hugging_face``)."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.data = b""
        self.state: hugging_face.TrainerState | None = None
        self.stamp: tuple[int, int, int, int] | None = None

    def open(self) -> bool:
        self.close()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not wait for a writer
        except FileNotFoundError:
            return False
        except PermissionError:
            raise LogError(f"cannot read {self.path}: permission denied") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise LogError(f"{self.path} is not a regular file; pass a trainer_state.json or a checkpoint folder")
            if st.st_size > hugging_face.MAX_STATE:
                raise LogError(f"{self.path} is {st.st_size >> 20} MB, over the {hugging_face.MAX_STATE >> 20} MB "
                               "a trainer_state.json is read up to; pass a checkpoint's trainer_state.json")
            raw = os.pread(fd, hugging_face.MAX_STATE + 1, 0)
        finally:
            os.close(fd)
        try:
            state = hugging_face.read_state(raw)
        except hugging_face.StateError as e:
            raise LogError(f"{self.path} {e}; pass a Hugging Face trainer_state.json, a checkpoint-N "
                           "folder or the output folder holding them") from None
        self.state, self.data = state, state.lines
        self.ino, self.size = (st.st_dev, st.st_ino), len(self.data)
        self.stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        self.offset, self.partial, self.head = 0, b"", b""
        return True

    def changed(self) -> bool:
        """Rewritten (the Trainer writes a new file): read it again."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return self.stamp is not None and (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != self.stamp

    def read_chunk(self, limit: int = CHUNK) -> bytes | None:
        start = self.offset
        if start >= len(self.data):
            return None
        end = self.data.rfind(b"\n", start, start + limit) + 1
        if end <= start:  # a line longer than limit: all of it
            end = self.data.find(b"\n", start) + 1 or len(self.data)
        self.offset = end
        return self.data[start:end]


def open_tail(path: Path) -> Tail:
    """The reader for the log at ``path``: a ``StateTail`` for a trainer_state.json, else a ``Tail``."""
    head = b""
    if path.suffix.lower() == ".json" and path.name != hugging_face.STATE_NAME:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not wait for a writer
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                head = os.pread(fd, 4096, 0) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
            except OSError:
                pass
            finally:
                os.close(fd)
    return StateTail(path) if hugging_face.is_state_file(path, head) else Tail(path)

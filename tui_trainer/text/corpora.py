"""Text corpora of many documents: what ``--data`` names when it is more than
one text file, read as a stream of documents without holding them in memory.

- a folder: every regular file under it, hidden ones left out, in the order
  of their paths relative to it (sorted, so the same on every machine);
- a glob (``'books/*.txt'``, ``'notes/**/*.md'``): the regular files it
  matches, sorted by path;
- a ``.jsonl`` file: one JSON object per line, its text in ``--text-field``;
- a ``.parquet`` file: the ``--text-field`` column (needs pyarrow, the
  ``[parquet]`` extra).

A single text file read through a tokenizer is one document of this kind too.
``stream`` gives the text as pieces for a tokenizer, split into the training
and validation parts.
A folder holding nanoGPT's ``train.bin`` is not a text corpus: it is left to
the caller.

Two fingerprints: ``fingerprint`` names the data for the resume check (each
file's relative name and size, and a hash of its first and last MiB, as for a
single file), so copying a folder elsewhere keeps it; ``cache_key`` adds each
file's modification time (ns), so any edit, even in the middle of a file, makes
new token ids instead of reusing the cached ones.
"""
from __future__ import annotations

import codecs
import glob
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import regular_file_size
from .tokenizer import CHUNK

BLOCK = 4 << 20  # bytes read at a time from a text file
MAX_PIECE = 8 * CHUNK  # a piece of text with no newline is cut here
PARQUET_EXTRA = "pip install 'tui-trainer[parquet]'"
GLOB_CHARS = "*?["


@dataclass
class Documents:
    """Where the text comes from, and how to read it document by document."""

    kind: str  # "file", "files", "jsonl" or "parquet"
    source: str  # what the user called it
    files: list[Path]
    text_field: str = "text"
    root: Path | None = None  # a folder: names in the fingerprint are relative to it
    fingerprint: str = ""
    cache_key: str = ""
    skipped: list[int] = field(default_factory=lambda: [0])  # lines or rows without text, and the first such
    first_skip: list[str] = field(default_factory=list)

    @property
    def many(self) -> bool:
        return self.kind != "file"

    def blocks(self) -> Iterator[Iterator[bytes]]:
        """Each document as an iterator of its UTF-8 bytes, in order."""
        self.skipped, self.first_skip = [0], []
        if self.kind in ("file", "files"):
            for f in self.files:
                yield _file_blocks(f)
        elif self.kind == "jsonl":
            for text in _jsonl_texts(self):
                yield iter((text,))
        else:
            for text in _parquet_texts(self):
                yield iter((text,))

    def text_bytes(self) -> int:
        """The documents' bytes in all (a pass over a .jsonl or .parquet file)."""
        if self.kind in ("file", "files"):
            return sum(os.stat(f).st_size for f in self.files)
        return sum(len(t) for b in self.blocks() for t in b)


def documents(data: str, tokenizer: str, text_field: str = "text") -> Documents | None:
    """The documents ``--data`` names, or None when it is one file read the
    old way (bytes of one file, a .bin of ids) or a nanoGPT data folder."""
    p = Path(data)
    if any(c in data for c in GLOB_CHARS) and not os.path.lexists(p):
        files = [Path(f) for f in sorted(glob.glob(data, recursive=True)) if _is_regular(Path(f))]
        if not files:
            raise UserError(f"--data {data} matches no files; check the pattern (quote it so the shell "
                            "does not expand it)")
        _no_token_files(files, data)
        return _finish(Documents("files", data, files))
    if p.is_dir():
        if (p / "train.bin").exists():
            return None  # nanoGPT's folder of token ids
        files = sorted(_walk(p), key=lambda f: f.relative_to(p).as_posix())
        if not files:
            raise UserError(f"--data {p} is a directory with no files in it; put text files in it, or pass a file")
        _no_token_files(files, data)
        return _finish(Documents("files", str(p), files, root=p))
    if p.suffix in (".jsonl", ".parquet"):
        size = regular_file_size(p, "--data", "data file", "a file (text, .jsonl, .parquet or a .bin of tokens)")
        if size == 0:
            raise UserError(f"data file {p} is empty; pass a file with some text in it")
        return _finish(Documents(p.suffix[1:], str(p), [p], text_field=text_field))
    if tokenizer != "bytes" and p.suffix != ".bin":
        size = regular_file_size(p, "--data", "data file", "a file (text, or a .bin of uint16 tokens)")
        if size == 0:
            raise UserError(f"data file {p} is empty; pass a file with some text in it")
        return _finish(Documents("file", str(p), [p]))
    return None


def _walk(root: Path) -> Iterator[Path]:
    """The regular files under ``root``, hidden files and folders left out;
    linked folders are not followed (no loops), linked files are read."""
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for n in names:
            if not n.startswith(".") and _is_regular(Path(folder) / n):
                yield Path(folder) / n


def _no_token_files(files: list[Path], data: str) -> None:
    bins = [f for f in files if f.suffix == ".bin"]
    if bins:
        raise UserError(f"--data {data} takes in {bins[0].name}, a .bin of token ids, as text; pass the .bin "
                        "itself, or a folder or glob of text files only")


def _is_regular(f: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(f).st_mode)
    except OSError:
        return False


def _finish(d: Documents) -> Documents:
    root = d.root
    ident = hashlib.sha256(f"{d.kind}\0{d.text_field if d.kind in ('jsonl', 'parquet') else ''}".encode())
    key = hashlib.sha256()
    for f in d.files:
        try:
            st = os.stat(f)
        except OSError as e:
            raise UserError(f"cannot read data file {f} ({e.strerror}); check its permissions") from None
        name = f.relative_to(root).as_posix() if root is not None else (f.as_posix() if d.kind == "files" else "")
        ident.update(f"\0{name}\0{st.st_size}\0".encode())
        ident.update(head_tail(f, st.st_size))
        key.update(f"\0{st.st_mtime_ns}".encode())
    d.fingerprint = "sha256:" + ident.hexdigest()[:16]
    key.update(ident.digest())
    d.cache_key = key.hexdigest()[:32]
    return d


def head_tail(path: Path, size: int) -> bytes:
    """The sha256 of the first and last MiB of a file."""
    h = hashlib.sha256()
    try:
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            h.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(-(1 << 20), os.SEEK_END)
                h.update(f.read(1 << 20))
    except OSError as e:
        raise UserError(f"cannot read data file {path} ({e.strerror}); check its permissions") from None
    return h.digest()


def _file_blocks(path: Path) -> Iterator[bytes]:
    try:
        # O_NONBLOCK: a file swapped for a FIFO since it was listed cannot hang the read
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UserError(f"data file {path} is no longer a regular file; pass regular files")
        with open(fd, "rb") as f:
            while block := f.read(BLOCK):
                yield block
    except OSError as e:
        raise UserError(f"cannot read data file {path} ({e.strerror}); check its permissions") from None


def _skip(d: Documents, where: str) -> None:
    d.skipped[0] += 1
    if not d.first_skip:
        d.first_skip.append(where)


def _jsonl_texts(d: Documents) -> Iterator[bytes]:
    """Each line's text field as UTF-8.  A line that is not a JSON object with
    a string in the field is skipped and counted (``skipped``); blank lines are
    not counted.  When the very first object lacks the field, that is one line
    naming the fields it has: the field was most likely misnamed."""
    name = d.text_field
    seen = 0
    with open(d.files[0], "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                _skip(d, f"line {n} is not JSON")
                continue
            if not isinstance(obj, dict):
                _skip(d, f"line {n} is not a JSON object")
                continue
            text = obj.get(name)
            if not isinstance(text, str):
                if seen == 0 and name not in obj:
                    fields = ", ".join(ascii(k)[1:-1] for k in list(obj)[:8]) or "none"
                    raise UserError(f"{d.source} line {n} has no field {ascii(name)} (its fields: {fields}); "
                                    "pass --text-field NAME")
                _skip(d, f"line {n} has no string in {ascii(name)}")
                continue
            seen += 1
            yield text.encode("utf-8", "replace")


def _parquet_texts(d: Documents) -> Iterator[bytes]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"reading {d.source} needs the Python package 'pyarrow', which is not installed; "
                        f"{PARQUET_EXTRA}") from None
    try:
        pf = pq.ParquetFile(d.files[0])
    except Exception as e:  # an untrusted file: whatever pyarrow raised is one line
        raise UserError(f"{d.source} is not a Parquet file ({type(e).__name__}); pass a .parquet file") from None
    names = pf.schema_arrow.names
    if d.text_field not in names:
        fields = ", ".join(names[:8]) or "none"
        raise UserError(f"{d.source} has no column {ascii(d.text_field)} (its columns: {fields}); "
                        "pass --text-field NAME")
    try:
        for batch in pf.iter_batches(batch_size=4096, columns=[d.text_field]):
            for v in batch.column(0).to_pylist():
                if isinstance(v, bytes):
                    yield v
                elif isinstance(v, str):
                    yield v.encode("utf-8", "replace")
                else:
                    _skip(d, f"a row has {type(v).__name__} in {ascii(d.text_field)}")
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{d.source} cannot be read ({type(e).__name__}: {str(e)[:80]}); "
                        "pass a readable .parquet file") from None


def describe_skips(d: Documents) -> str | None:
    """One line about the lines or rows left out, or None."""
    if not d.skipped[0]:
        return None
    return f"{d.source}: {d.skipped[0]} without text skipped (first: {d.first_skip[0]})"


# --- the stream -----------------------------------------------------------------

def split_at(docs: Documents, total: int, val_fraction: float) -> int:
    """Where validation begins in the documents' bytes: the tail
    ``val_fraction``, moved forward off any UTF-8 continuation byte."""
    cut = total - int(total * val_fraction)
    if docs.kind not in ("file", "files"):
        return cut  # whole documents come as one block: the stream adjusts the cut itself
    pos = 0
    for f in docs.files:
        size = os.stat(f).st_size
        if pos + size > cut:
            with open(f, "rb") as fh:
                fh.seek(cut - pos)
                tail = fh.read(4)
            k = 0
            while k < len(tail) and (tail[k] & 0xC0) == 0x80:
                k += 1
            return cut + k
        pos += size
    return cut


def stream(docs: Documents, cut: int, progress: Any) -> Iterator[tuple[int, str | None]]:
    """``(part, piece)`` in order, part 0 (train) then 1 (validation); a piece
    of None is a boundary between documents."""
    part, pos, buf = (0 if cut > 0 else 1), 0, ""
    dec = codecs.getincrementaldecoder("utf-8")("replace")
    for i, doc in enumerate(docs.blocks()):
        if i:
            buf += dec.decode(b"", final=True)
            yield from ((part, p) for p in _cut(buf, final=True)[0])
            buf = ""
            yield part, None
        for block in doc:
            if progress is not None:
                progress.add(len(block))
            if part == 0 and pos + len(block) > cut:
                k = cut - pos
                while 0 < k < len(block) and (block[k] & 0xC0) == 0x80:
                    k += 1
                buf += dec.decode(block[:k], final=True)
                yield from ((0, p) for p in _cut(buf, final=True)[0])
                part, buf, block = 1, "", block[k:]
                dec = codecs.getincrementaldecoder("utf-8")("replace")
            pos += len(block) if part == 0 else 0
            buf += dec.decode(block)
            pieces, buf = _cut(buf, final=False)
            yield from ((part, p) for p in pieces)
    buf += dec.decode(b"", final=True)
    yield from ((part, p) for p in _cut(buf, final=True)[0])


def _cut(buf: str, final: bool) -> tuple[list[str], str]:
    """Pieces as ``text.tokenizer._pieces`` cuts them (after the first newline at
    or past ``CHUNK`` characters), and the rest; a line longer than
    ``MAX_PIECE`` is cut there."""
    out, start = [], 0
    while True:
        end = buf.find("\n", start + CHUNK, start + MAX_PIECE)
        if end >= 0:
            end += 1
        elif len(buf) - start > MAX_PIECE:
            end = start + MAX_PIECE
        else:
            break
        out.append(buf[start:end])
        start = end
    rest = buf[start:]
    if final and rest:
        out.append(rest)
        rest = ""
    return out, rest

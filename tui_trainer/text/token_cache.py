"""Token ids of a text corpus, made once and kept: a stream of documents
(``text.corpora``) encoded in parallel batches into a file of uint8/16/32
ids, memory-mapped by every later run on the same data and tokenizer.

Memory stays flat whatever the corpus size: text is read in blocks, cut into
pieces of about ``text.tokenizer.CHUNK`` characters, encoded a batch at a time
(``encode_batch``, which runs on every core) and written out at once.

The split is the one rule of ``data``: validation is the tail
``val_fraction`` of the text's bytes, cut at a character; a BPE learns from
the training part alone.  Documents are joined by the tokenizer's
end-of-text token (``<|endoftext|>``: GPT-2's id 50256, a trained BPE's own;
a tokenizer without one joins them with the ids of a blank line); with bytes
as tokens, by a blank line (``\\n\\n``).

The cache lives in ``$TUI_TRAINER_CACHE`` or ``~/.cache/tui-trainer``; a file
is named by a hash of the data's ``cache_key``, the split and the tokenizer's
own bytes.  It is written to a temporary file and renamed, so a run killed
mid-write leaves no half file under the real name; a file that is not a
regular file, has another header or the wrong size, or holds an id beyond the
vocabulary is ignored and made again.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import mmap
import os
import re
import secrets
import stat
import struct
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .corpora import Documents, describe_skips, split_at, stream
from ..errors import UserError
from .tokenizer import CHUNK, ENDOFTEXT, HFTokenizer, make_tokenizer, train_bpe

MAGIC = b"TUITOK01"
HEADER = struct.Struct("<8sQQQ16sQ")  # magic, itemsize, n_train, n_val, key, skipped
HEADER_SIZE = 64
# Characters handed to one encode_batch call: a piece for each core, up to 8.
# tokenizers holds ~130 bytes per token of a batch (its Encoding objects), so
# 8 pieces of 1 M characters peak near 300 MB, whatever the corpus size.
BATCH_CHARS = CHUNK * max(2, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                 else os.cpu_count() or 2))
BYTES_JOIN = b"\n\n"


def cache_dir() -> Path:
    env = os.environ.get("TUI_TRAINER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tui-trainer"


Say = Callable[[str], None]


class Progress:
    """A line at most once a second: MB read, MB/s and time left."""

    def __init__(self, what: str, total: int, say: Say | None):
        self.what, self.total, self.done, self.lines = what, max(total, 1), 0, 0
        self.say = say or _stderr
        self.t0 = self.last = time.monotonic()
        if say is not None:  # the dashboard's loading screen shows the bar at once
            say(self.line(self.t0))

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= 1.0:
            self.last = now
            self.lines += 1
            self.say(self.line(now))

    def end(self, path: Path, n: int) -> None:
        """A last line, when the work was long enough to show progress."""
        if self.lines:
            took = time.monotonic() - self.t0
            self.say(f"{self.what}: {n:,} tokens in {took:,.1f} s, kept in {path} for the next run")

    def line(self, now: float) -> str:
        rate = self.done / max(now - self.t0, 1e-6)
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        frac = min(self.done / self.total, 1.0)
        bar = "█" * int(frac * 20) + "░" * (20 - int(frac * 20))
        return (f"{self.what} {bar} {frac:4.0%} {self.done / 1e6:,.0f}/{self.total / 1e6:,.0f} MB, "
                f"{rate / 1e6:,.1f} MB/s, {left:,.0f} s left")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --- encoding ---------------------------------------------------------------------

def batch_encoder(tok: Any) -> Callable[[list[str]], list[list[int]]]:
    if isinstance(tok, HFTokenizer):
        fast = getattr(tok.tok, "encode_batch_fast", tok.tok.encode_batch)
        return lambda texts: [e.ids for e in fast(texts, add_special_tokens=False)]
    return lambda texts: tok.enc.encode_ordinary_batch(texts)


def end_of_text(tok: Any) -> list[int]:
    """The ids that join two documents."""
    if isinstance(tok, HFTokenizer):
        i = tok.tok.token_to_id(ENDOFTEXT)
        return [i] if i is not None else list(tok.tok.encode("\n\n", add_special_tokens=False).ids)
    i = getattr(tok.enc, "_special_tokens", {}).get(ENDOFTEXT)
    return [i] if i is not None else list(tok.enc.encode_ordinary("\n\n"))


def _encode_to(f: Any, items: Iterator[tuple[int, str | None]], encode: Callable[[list[str]], list[list[int]]],
               eot: list[int], dtype: Any) -> tuple[int, int]:
    """Encode the stream into ``f``; (train ids, val ids) written."""
    counts = [0, 0]
    pending: list[str | None] = []
    chars, part = 0, 0

    def flush() -> None:
        nonlocal chars
        texts = [p for p in pending if p is not None]
        encoded = iter(encode(texts)) if texts else iter(())
        for p in pending:
            ids = eot if p is None else next(encoded)
            if ids:
                f.write(np.asarray(ids, dtype=dtype).tobytes())
                counts[part] += len(ids)
        pending.clear()
        chars = 0
        _give_back_memory()

    for p_part, piece in items:
        if p_part != part:
            flush()
            part = p_part
        pending.append(piece)
        chars += len(piece) if piece is not None else 0
        if chars >= BATCH_CHARS or len(pending) >= 1 << 16:
            flush()
    flush()
    return counts[0], counts[1]


def _malloc_trim() -> Callable[[], Any]:
    """glibc's ``malloc_trim``: the tokenizer's threads free their batch's
    memory into per-thread arenas that glibc keeps; trimming after each batch
    returns it, so the peak stays that of one batch.  A no-op elsewhere."""
    try:
        import ctypes

        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


_give_back_memory = _malloc_trim()


# --- the cache --------------------------------------------------------------------

def read_cached(path: Path, key: bytes, vocab: int) -> tuple[np.ndarray, int, int] | None:
    """The ids in ``path`` (all, n_train, skipped) when it is a regular file
    with this key's header, the size that header promises and no id at or
    beyond ``vocab``; None otherwise (it is then made again)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size < HEADER_SIZE:
            return None
        magic, itemsize, n_train, n_val, got_key, skipped = HEADER.unpack(os.pread(fd, HEADER.size, 0))
        if magic != MAGIC or got_key != key or itemsize not in (1, 2, 4) or n_train + n_val == 0:
            return None
        if st.st_size != HEADER_SIZE + (n_train + n_val) * itemsize:
            return None
        mm = mmap.mmap(fd, st.st_size, access=mmap.ACCESS_READ)
    except (OSError, ValueError, struct.error):
        return None
    finally:
        os.close(fd)
    ids = np.frombuffer(mm, dtype={1: np.uint8, 2: np.uint16, 4: np.uint32}[itemsize], offset=HEADER_SIZE)
    step = 1 << 26
    if max(int(ids[i:i + step].max()) for i in range(0, len(ids), step)) >= vocab:
        return None
    return ids, n_train, skipped


def _write(path: Path, key: bytes, itemsize: int, fill: Callable[[Any], tuple[int, int]], skipped: Any) -> None:
    """Make ``path`` through a temporary file renamed over it when whole."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot make the token cache folder {folder} ({e.strerror}); "
                        "set TUI_TRAINER_CACHE to a writable folder") from None
    _clear_stale(folder)
    tmp = folder / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(b"\0" * HEADER_SIZE)
            n_train, n_val = fill(f)
            f.seek(0)
            f.write(HEADER.pack(MAGIC, itemsize, n_train, n_val, key, skipped()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise UserError(f"cannot write the token cache {path} ({e.strerror}); free some space "
                        "or set TUI_TRAINER_CACHE to another folder") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# Our own temporary files only (``_write``): TUI_TRAINER_CACHE may name any folder, and
# another program's ``.notes.123.tmp`` there is not ours to delete.
_STALE = re.compile(r"\.[0-9a-f]{32,64}\.[a-z.]+\.(\d{1,10})-[0-9a-f]{8}\.tmp")


def _clear_stale(folder: Path) -> None:
    """Temporary files left by a process that no longer exists (killed mid-write)."""
    for t in folder.glob(".*.tmp"):
        try:
            m = _STALE.fullmatch(t.name)
            if m is None:
                continue
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                t.unlink()
        except (ValueError, OverflowError, OSError):
            continue


def _key(*parts: Any) -> bytes:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.digest()[:16]


# --- the one entry point -------------------------------------------------------------

def tokens_for(docs: Documents, spec: str, val_fraction: float, saved: Path | None,
               say: Say | None = None) -> tuple[Any, Any, Any]:
    """(tokenizer or None for bytes, train ids, val ids) for ``docs``, from
    the cache when it holds them."""
    folder = cache_dir()
    if spec == "bytes":
        key = _key("bytes", docs.cache_key)
        path = folder / f"{key.hex()}.bytes.ids"
        found = read_cached(path, key, 256)
        if found is None:
            progress = Progress(f"joining {docs.source}", _total(docs, say), say)
            _write(path, key, 1, lambda f: _join_bytes(f, docs, progress), lambda: docs.skipped[0])
            found = read_cached(path, key, 256)
            progress.end(path, len(found[0]) if found is not None else 0)
        assert found is not None, "the cache file just written reads back"
        ids, _, skipped = found
        _note_skips(docs, skipped, say)
        n_val = int(len(ids) * val_fraction)
        return None, ids[: len(ids) - n_val], ids[len(ids) - n_val:]

    total: int | None = None
    tok = _cached_bpe(docs, spec, val_fraction) if saved is None and spec.startswith("bpe:") else None
    if tok is None:
        if spec.startswith("bpe:") and saved is None:
            total = _total(docs, say)
            cut = split_at(docs, total, val_fraction)
            learning = Progress(f"learning a {spec} tokenizer from {docs.source}", cut, say)
            train = itertools.takewhile(lambda item: item[0] == 0, stream(docs, cut, learning))
            tok = train_bpe((p for _, p in train if p is not None), int(spec[4:]), spec)
            _keep_bpe(docs, spec, val_fraction, tok)
        else:
            tok = make_tokenizer(spec, None, saved)
    itemsize = 2 if tok.vocab_size <= 1 << 16 else 4
    dtype = np.uint16 if itemsize == 2 else np.uint32
    key = _key("ids", docs.cache_key, val_fraction, hashlib.sha256(tok.data).hexdigest())
    path = folder / f"{key.hex()}.ids"
    found = read_cached(path, key, tok.vocab_size)
    if found is None:
        total = total if total is not None else _total(docs, say)
        cut = split_at(docs, total, val_fraction)
        progress = Progress(f"tokenizing {docs.source}", total, say)
        _write(path, key, itemsize,
               lambda f: _encode_to(f, stream(docs, cut, progress), batch_encoder(tok), end_of_text(tok), dtype),
               lambda: docs.skipped[0])
        found = read_cached(path, key, tok.vocab_size)
        progress.end(path, len(found[0]) if found is not None else 0)
    assert found is not None, "the cache file just written reads back"
    ids, n_train, skipped = found
    _note_skips(docs, skipped, say)
    return tok, ids[:n_train], ids[n_train:]


def _total(docs: Documents, say: Say | None) -> int:
    if docs.kind in ("jsonl", "parquet") and say is not None:
        say(f"counting the text in {docs.source}…")
    total = docs.text_bytes()
    if total == 0:
        raise UserError(f"--data {docs.source} holds no text; pass files with some text in them")
    return total


def _note_skips(docs: Documents, skipped: int, say: Say | None) -> None:
    if skipped:
        line = describe_skips(docs) or f"{docs.source}: {skipped} without text skipped (counted when it was tokenized)"
        (say or _stderr)(line)


def _join_bytes(f: Any, docs: Documents, progress: Progress) -> tuple[int, int]:
    n = 0
    for i, doc in enumerate(docs.blocks()):
        if i:
            f.write(BYTES_JOIN)
            n += len(BYTES_JOIN)
        for block in doc:
            progress.add(len(block))
            f.write(block)
            n += len(block)
    return n, 0


def _bpe_path(docs: Documents, spec: str, val_fraction: float) -> Path:
    import tokenizers

    key = _key("bpe", docs.cache_key, spec, val_fraction, tokenizers.__version__)
    return cache_dir() / f"{key.hex()}.tokenizer.json"


def _cached_bpe(docs: Documents, spec: str, val_fraction: float) -> Any:
    from .tokenizer import _need, read_kept

    _need("tokenizers")
    data = read_kept(_bpe_path(docs, spec, val_fraction))
    if data is None:
        return None
    from tokenizers import Tokenizer

    try:
        return HFTokenizer(Tokenizer.from_str(data.decode("utf-8")), spec, data)
    except Exception:  # a damaged cache file: trained again
        return None


def _keep_bpe(docs: Documents, spec: str, val_fraction: float, tok: Any) -> None:
    from ..files import replaced

    path = _bpe_path(docs, spec, val_fraction)
    with contextlib.suppress(OSError, UserError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced(path, binary=True) as f:
            f.write(tok.data)

"""Data: the embedded corpus, user files, the train/val split and batches.

Two kinds of input, one shape after loading: a 1-D array of token ids.
- Any text or binary file: byte-level tokens (vocab 256), so every file works;
  or, with ``--tokenizer`` (``text.tokenizer``), the tokenizer's ids, the text
  split into train and validation first so a BPE learns from train alone.
- Many documents (a folder, a glob, ``.jsonl``, ``.parquet``: ``text.corpora``),
  or text through a tokenizer: tokenized as a stream into a cached memmap
  (``token_cache``), so a corpus of any size loads in flat memory.
- A nanoGPT-style ``.bin`` of uint16 token ids, memory-mapped so a corpus
  tokenised elsewhere can be any size without being read into memory; with
  ``--tokenizer``, the tokenizer that made them decodes samples and prompts.

Targets are always the inputs shifted by one position.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..control.commands import surrogate_problem
from ..config import TrainConfig, UserError
from ..text.corpora import documents
from ..files import regular_file_size
from ..text.nanogpt import data_folder, meta_tokenizer
from ..text.tokenizer import make_tokenizer, saved_in
from ..text.token_cache import tokens_for

DEFAULT_CORPUS = "stdlib.txt.gz"


def load_default_corpus() -> bytes:
    """The embedded default: ~1 MB of CPython standard-library source (PSF
    licence), shipped gzipped in the package; see scripts/make_corpus.py."""
    ref = importlib.resources.files("tui_trainer") / "corpus" / DEFAULT_CORPUS
    return gzip.decompress(ref.read_bytes())


class ByteTokenizer:
    """Bytes as tokens.  A prompt is text; a lone surrogate that stands for an
    undecodable byte (``'\\udce9'``, from a command line that was not UTF-8)
    is that byte, and any other lone surrogate is refused (``check``)."""

    vocab_size = 256

    def check(self, text: str) -> str | None:
        """Why ``text`` cannot be a prompt (None when it can)."""
        if not isinstance(text, str) or not text:
            return "the prompt is empty; give at least one character"
        return surrogate_problem(text, bytes_ok=True)

    def encode(self, text: str) -> list[int]:
        why = self.check(text)
        if why is not None:
            raise ValueError(why)
        return list(text.encode("utf-8", "surrogateescape"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


class IdTokenizer:
    """For pre-tokenised .bin files we have no vocabulary: prompts are
    space-separated ids and samples print as ids.  Anything else in a prompt
    (a word, a sign, an exponent, an id the model does not have) is refused
    with the form expected, never read as token 0."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def check(self, text: str) -> str | None:
        """Why ``text`` cannot be a prompt (None when it can)."""
        top = self.vocab_size - 1
        example = " ".join(str(min(i, top)) for i in (17, 4, 902))
        form = f"space-separated token ids below {self.vocab_size}, such as '{example}'"
        words = text.split() if isinstance(text, str) else []
        if not words:
            return f"the prompt is empty; this run's data is token ids: give {form}"
        for w in words:
            if not (w.isascii() and w.isdigit()) or len(w) > 12 or int(w) >= self.vocab_size:
                shown = w if len(w) <= 20 else w[:20] + "…"
                return f"the prompt's {ascii(shown)} is not a token id; this run's data is token ids: give {form}"
        return None

    def encode(self, text: str) -> list[int]:
        why = self.check(text)
        if why is not None:
            raise ValueError(why)
        return [int(w) for w in text.split()]

    def decode(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))


@dataclass
class Corpus:
    train: Any  # torch.Tensor (uint8) or np.memmap (uint16)
    val: Any
    vocab_size: int
    tokenizer: Any  # ByteTokenizer, IdTokenizer or a text.tokenizer tokenizer (same methods)
    source: str  # what the user would call it: a path, or "embedded stdlib corpus"
    fingerprint: str  # identifies the data for resume checks

    @property
    def n_tokens(self) -> int:
        return len(self.train) + len(self.val)


def load_corpus(cfg: TrainConfig, say: Any = None) -> Corpus:
    """The data ``cfg`` names, tokenized; ``say`` gets progress lines while a
    corpus is tokenized (stderr when None)."""
    tokenizer: Any = None  # a text.tokenizer tokenizer, for --tokenizer other than bytes
    text_tokens: tuple[Any, Any] | None = None  # (train, val) when the text was split before tokenizing
    docs = None if cfg.data is None else documents(cfg.data, cfg.tokenizer, cfg.text_field)
    if docs is not None:  # a folder, a glob, .jsonl, .parquet, or text through a tokenizer: token_cache
        tokenizer, train_ids, val_ids = tokens_for(docs, cfg.tokenizer, cfg.val_fraction, saved_in(cfg.out), say)
        text_tokens = (train_ids, val_ids)
        path, source = None, docs.source
        # one file keeps the fingerprint it always had, so older runs resume
        fingerprint = docs.fingerprint if docs.many else _fingerprint(docs.files[0], docs.files[0].stat().st_size)
    elif cfg.data is None:
        raw = load_default_corpus()
        source = "embedded stdlib corpus"
        fingerprint = "sha256:" + hashlib.sha256(raw).hexdigest()[:16]
        path = nano = None
    else:
        nano = data_folder(Path(cfg.data))  # a nanoGPT data folder (or its train.bin): val.bin, meta.pkl
        path = nano.train if nano else Path(cfg.data)
        # Says what the path is when it is not a regular file (a FIFO, a
        # device, a broken link...) without ever opening it for a blocking read.
        size = regular_file_size(path, "--data", "data file", "a file (text, or a .bin of uint16 tokens)")
        if size == 0:
            raise UserError(f"data file {path} is empty; pass a file with some text in it")
        fingerprint = _fingerprint(path, size)
        source = str(path)
    if path is not None and path.suffix == ".bin":
        if size % 2:
            raise UserError(f"{path} has an odd number of bytes, so it is not uint16 tokens; "
                            "rename it (not .bin) to train on its bytes")
        tokens: Any = np.memmap(path, dtype=np.uint16, mode="r")
        top = int(_chunked_max(tokens)) + 1
        if nano and nano.val:  # nanoGPT's own validation split, not the tail of train.bin
            val_size = regular_file_size(nano.val, "--data", "validation file", "nanoGPT's val.bin of uint16 tokens")
            if val_size % 2 or not val_size:
                raise UserError(f"{nano.val} is empty or has an odd number of bytes, so it is not uint16 tokens; "
                                "remake it with nanoGPT's prepare.py, or remove it to validate on train.bin's tail")
            text_tokens = (tokens, np.memmap(nano.val, dtype=np.uint16, mode="r"))
            fingerprint += "+" + _fingerprint(nano.val, val_size)[7:]
            top = max(top, int(_chunked_max(text_tokens[1])) + 1)
        if nano and nano.meta and cfg.tokenizer == "bytes":  # its vocabulary decodes samples and prompts
            meta_vocab, tokenizer = meta_tokenizer(nano.meta)
            if top > meta_vocab:
                raise UserError(f"{path} holds token id {top - 1}, beyond the vocab_size {meta_vocab} of "
                                f"{nano.meta}; remove {nano.meta.name} or pass the data it was made with")
            top = meta_vocab
        elif cfg.tokenizer != "bytes":
            tokenizer = make_tokenizer(cfg.tokenizer, None, saved_in(cfg.out))
            if top > tokenizer.vocab_size:  # every id was read: the check is the whole file's
                raise UserError(f"{path} holds token id {top - 1}, at or beyond the {tokenizer.vocab_size} ids of "
                                f"--tokenizer {cfg.tokenizer} (all {len(tokens)} ids were checked); "
                                "pass the tokenizer these ids were made with")
            top = tokenizer.vocab_size
        vocab = cfg.vocab_size or top
        if top > vocab:
            whose = "--tokenizer" if cfg.tokenizer != "bytes" else "meta.pkl"
            what = f"token id {top - 1}" if tokenizer is None else f"a vocabulary of {top} ({whose})"
            raise UserError(f"{path} holds {what}, outside --vocab-size {vocab}; "
                            f"pass --vocab-size {top} or more")
        tok: Any = tokenizer or IdTokenizer(vocab)
    elif docs is not None:
        tok = tokenizer or ByteTokenizer()
        vocab = cfg.vocab_size or tok.vocab_size
        if vocab < tok.vocab_size or (tokenizer is None and vocab != 256):
            raise UserError(f"--vocab-size {vocab} does not fit --tokenizer {cfg.tokenizer} "
                            f"({tok.vocab_size} ids); leave --vocab-size out")
    else:
        if path is not None:
            raw = path.read_bytes()
        tokens = torch.frombuffer(bytearray(raw), dtype=torch.uint8)  # bytes: other tokenizers go to token_cache
        vocab, tok = 256, ByteTokenizer()
        if cfg.vocab_size not in (None, 256):
            raise UserError(f"--vocab-size {cfg.vocab_size} applies to .bin token files only; "
                            f"{path.name if path else source} is read as bytes (vocab 256)")
    need = cfg.context_length + 1
    if text_tokens is not None:
        train, val = text_tokens
        n, n_val = len(train) + len(val), len(val)
    else:
        n = len(tokens)
        n_val = int(n * cfg.val_fraction)
    if n < need:
        raise UserError(f"data has {n} tokens, shorter than one context window plus one ({need}); "
                        f"use a larger file or a smaller --context-length")
    if n_val < need or n - n_val < need:
        raise UserError(f"data has {n} tokens: too few to split into train and validation of at least "
                        f"{need} tokens each; use a larger file or a smaller --context-length")
    if text_tokens is None:
        # Validation is the tail: a fixed, contiguous slice, the same on every run.
        train, val = tokens[: n - n_val], tokens[n - n_val:]
    return Corpus(train=train, val=val, vocab_size=vocab, tokenizer=tok, source=source, fingerprint=fingerprint)


def _fingerprint(path: Path, size: int) -> str:
    # Hash the size and the first and last MiB: cheap on a 100 GB token file,
    # and enough to notice that --resume was pointed at different data.
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return "sha256:" + h.hexdigest()[:16]


def _chunked_max(arr: np.ndarray, chunk: int = 1 << 26) -> int:
    return max(int(arr[i:i + chunk].max()) for i in range(0, len(arr), chunk))


def _windows(token_ids: Any, starts: Any, length: int) -> torch.Tensor:
    """Rows ``token_ids[s : s + length]`` for each start, as an int64 tensor."""
    # Rows are gathered from a strided view of every window (no index tensor
    # built, no per-row Python): 2-5x cheaper per step than a fancy index.
    if isinstance(token_ids, torch.Tensor):
        starts = torch.as_tensor(starts, dtype=torch.long)
        return token_ids.unfold(0, length, 1).index_select(0, starts).long()
    starts = np.asarray(starts, dtype=np.int64)
    # A view over a memmap: only the chosen rows are read from disk.
    rows = np.lib.stride_tricks.sliding_window_view(token_ids, length)[starts]
    return torch.from_numpy(rows.astype(np.int64))


def make_batches(token_ids: Any, batch_size: int, context_length: int,
                 max_batches: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Slice a token sequence into consecutive (inputs, targets) batches.

    Windows do not overlap; targets are the inputs shifted by one.  The last
    batch may hold fewer rows; a tail shorter than one window is dropped.
    """
    n_windows = (len(token_ids) - 1) // context_length
    if max_batches is not None:
        n_windows = min(n_windows, max_batches * batch_size)
    batches = []
    for b in range(0, n_windows, batch_size):
        starts = np.arange(b, min(b + batch_size, n_windows)) * context_length
        w = _windows(token_ids, starts, context_length + 1)
        batches.append((w[:, :-1], w[:, 1:]))
    return batches


class BatchSampler:
    """Random training windows drawn with a private generator.

    The generator's state is part of a checkpoint, so a resumed run draws the
    very batches the uninterrupted run would have drawn.
    """

    def __init__(self, token_ids: Any, batch_size: int, context_length: int, seed: int,
                 device: torch.device | str = "cpu"):
        self.data = token_ids
        self.batch_size = batch_size
        self.context_length = context_length
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.high = len(token_ids) - context_length - 1

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, self.high + 1, (self.batch_size,), generator=self.generator)
        w = _windows(self.data, starts, self.context_length + 1)
        if self.device.type == "cuda":
            w = w.pin_memory().to(self.device, non_blocking=True)
        return w[:, :-1], w[:, 1:]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

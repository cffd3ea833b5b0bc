"""Validation bits per byte: a loss that does not depend on the tokenizer.

The val loss is nats per token, and a token is a byte in one run and a word
piece in another.  Bits per byte is the same total (nats over the validation
tokens, ÷ ln 2) over the UTF-8 bytes those tokens decode to, so runs on one
text with different tokenizers can be ranked.  The bytes of the fixed
validation slice are counted once, at start, from each token's own bytes
(a table per tokenizer); for ``bytes`` the ratio is 1, and bits per byte is
the val loss ÷ ln 2.  Token ids with no text (``.bin`` without a tokenizer)
have none.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def byte_lengths(tokenizer: Any) -> np.ndarray | None:
    """The UTF-8 bytes each token id decodes to, indexed by id; None when the
    tokens have no text (ids only)."""
    own = getattr(tokenizer, "byte_lengths", None)
    if callable(own):  # a tokenizer that knows its tokens' bytes (text.nanogpt.CharTokenizer)
        return np.asarray(own(), dtype=np.int64)
    kind = type(tokenizer).__name__
    if kind == "ByteTokenizer":
        return np.ones(256, dtype=np.int64)
    if kind == "TiktokenTokenizer":
        enc = tokenizer.enc
        return np.array([_tiktoken_len(enc, i) for i in range(tokenizer.vocab_size)], dtype=np.int64)
    if kind == "HFTokenizer":
        return _hf_lengths(tokenizer)
    return None


def _tiktoken_len(enc: Any, i: int) -> int:
    try:
        return len(enc.decode_single_token_bytes(i))
    except KeyError:  # a gap in the ranks: no bytes
        return 0


def _hf_lengths(tokenizer: Any) -> np.ndarray:
    """A byte-level BPE's token strings are bytes drawn as characters (GPT-2's
    table): one character, one byte, whatever the token is alone (half a
    UTF-8 character decodes to a replacement mark).  Another kind of
    tokenizer: the bytes of each token decoded alone."""
    tok = tokenizer.tok
    byte_level = type(getattr(tok, "decoder", None)).__name__ == "ByteLevel"
    table = _byte_level_chars() if byte_level else frozenset()
    special = {t.content for t in getattr(tok, "get_added_tokens_decoder", dict)().values()}
    out = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    for i in range(tokenizer.vocab_size):
        piece = tok.id_to_token(i)
        if piece is None:
            continue
        if byte_level and piece not in special and all(c in table for c in piece):
            out[i] = len(piece)
        else:
            out[i] = len(tok.decode([i], skip_special_tokens=False).encode("utf-8", "replace"))
    return out


def _byte_level_chars() -> frozenset[str]:
    """The 256 characters GPT-2's byte-level encoding draws bytes as."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    n = 0
    chars = set(map(chr, bs))
    for b in range(256):
        if b not in bs:
            chars.add(chr(256 + n))
            n += 1
    return frozenset(chars)


def eval_targets(val: Any, context_length: int, rows: int) -> Any:
    """The validation tokens the fixed eval slice predicts: ``make_batches``
    cuts ``rows`` windows of ``context_length`` from the start, and each
    window's targets are its inputs shifted by one, so together they are one
    contiguous run of the split."""
    n_windows = min((len(val) - 1) // context_length, rows)
    return val[1: n_windows * context_length + 1]


def bytes_per_token(tokenizer: Any, targets: Any) -> float | None:
    """Mean UTF-8 bytes per token of ``targets``; None without text or tokens."""
    lengths = byte_lengths(tokenizer)
    if lengths is None or not len(targets):
        return None
    ids = np.asarray(targets, dtype=np.int64)
    ids = np.clip(ids, 0, len(lengths) - 1)  # ids were checked against the tokenizer when the data was read
    total = int(lengths[ids].sum())
    return total / len(ids) if total > 0 else None


def bits_per_byte(val_loss: float, per_token: float | None) -> float | None:
    """Nats per token over bytes per token, in bits: None when not known."""
    if per_token is None or not math.isfinite(val_loss):
        return None
    return val_loss / math.log(2) / per_token

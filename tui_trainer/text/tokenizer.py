"""Tokenizers beyond bytes: the ``--tokenizer`` setting, made into an object
with ``vocab_size``, ``check``, ``encode`` and ``decode`` (the shape of
``data.ByteTokenizer``), and kept in the run folder.

- ``bytes``: bytes as tokens (``data.ByteTokenizer``), the default;
- ``bpe:N``: a byte-level BPE of vocabulary N, trained with Hugging Face
  ``tokenizers`` on the training split only;
- ``gpt2``: GPT-2's encoding, through ``tiktoken`` (its file is downloaded on
  first use; offline that is one clear line);
- a path: a Hugging Face ``tokenizer.json``, or a ``.tiktoken`` file of
  ranks (base64 token, rank per line) with GPT-2's split pattern.

The run folder keeps the tokenizer (``tokenizer.json`` or
``tokenizer.tiktoken``, written whole or not at all), and a resumed run reads
that copy: the vocabulary never changes under a run.  ``tokenizers`` and
``tiktoken`` are the optional extra ``[text]``; torch is not imported here.
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..bounds import BPE_VOCAB, is_path, tokenizer_problem as spec_problem  # noqa: F401 (its forms live with the bounds)
from ..control.commands import surrogate_problem
from ..errors import UserError

HF_FILE = "tokenizer.json"
TIKTOKEN_FILE = "tokenizer.tiktoken"
EXTRA = "pip install 'tui-trainer[text]'"
MAX_FILE = 64 << 20  # a tokenizer file: GPT-2's is 1.4 MB, the largest in use ~20 MB
ENDOFTEXT = "<|endoftext|>"
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
CHUNK = 1 << 20  # text is encoded in pieces of about this many characters, in parallel


def _need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"--tokenizer needs the Python package {module!r}, which is not installed; "
                        f"{EXTRA}") from None


class HFTokenizer:
    """A Hugging Face ``tokenizers.Tokenizer``: prompts are text."""

    file_name = HF_FILE

    def __init__(self, tok: Any, spec: str, data: bytes):
        self.tok, self.spec, self.data = tok, spec, data
        self.vocab_size = int(tok.get_vocab_size(with_added_tokens=True))

    def encode_text(self, text: str) -> list[int]:
        pieces = _pieces(text)
        out: list[int] = []
        for enc in self.tok.encode_batch(pieces, add_special_tokens=False):
            out.extend(enc.ids)
        return out

    def check(self, text: str) -> str | None:
        """Why ``text`` cannot be a prompt (None when it can)."""
        if not isinstance(text, str) or not text:
            return "the prompt is empty; give at least one character"
        why = surrogate_problem(text, bytes_ok=False)
        if why is not None:
            return why
        try:
            ids = self.tok.encode(text, add_special_tokens=False).ids
        except Exception as e:  # a tokenizer file is untrusted: its failure is a refusal, not a crash
            return f"the tokenizer cannot encode the prompt ({_first_line(e)}); give plain text"
        if not ids:
            return f"the prompt {_short(text)} encodes to no tokens; give text this tokenizer knows"
        return None

    def encode(self, text: str) -> list[int]:
        why = self.check(text)
        if why is not None:
            raise ValueError(why)
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return "".join(self.tok.decode(run, skip_special_tokens=False) if ok else "\ufffd" * len(run)
                       for ok, run in _runs(ids, self.vocab_size))


class TiktokenTokenizer:
    """A ``tiktoken.Encoding`` (GPT-2's, or ranks read from a file)."""

    file_name = TIKTOKEN_FILE

    def __init__(self, enc: Any, spec: str):
        self.enc, self.spec = enc, spec
        self.vocab_size = int(enc.n_vocab)

    @property
    def data(self) -> bytes:
        ranks = sorted(self.enc._mergeable_ranks.items(), key=lambda kv: kv[1])
        return b"".join(base64.b64encode(tok) + b" %d\n" % rank for tok, rank in ranks)

    def encode_text(self, text: str) -> list[int]:
        out: list[int] = []
        for ids in self.enc.encode_ordinary_batch(_pieces(text)):
            out.extend(ids)
        return out

    def check(self, text: str) -> str | None:
        if not isinstance(text, str) or not text:
            return "the prompt is empty; give at least one character"
        return surrogate_problem(text, bytes_ok=False)

    def encode(self, text: str) -> list[int]:
        why = self.check(text)
        if why is not None:
            raise ValueError(why)
        return self.enc.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        out = b""
        for ok, run in _runs(ids, self.vocab_size):
            out += self.enc.decode_bytes(run) if ok else "\ufffd".encode() * len(run)
        return out.decode("utf-8", errors="replace")


Tokenizer = HFTokenizer | TiktokenTokenizer


def _runs(ids: list[int], vocab: int) -> list[tuple[bool, list[int]]]:
    """``ids`` cut into runs of known (True) and unknown (False) ids: a model
    with a padded vocabulary may sample an id no tokenizer has."""
    runs: list[tuple[bool, list[int]]] = []
    for i in ids:
        ok = 0 <= int(i) < vocab
        if runs and runs[-1][0] == ok:
            runs[-1][1].append(int(i))
        else:
            runs.append((ok, [int(i)]))
    return runs


def _pieces(text: str) -> list[str]:
    """``text`` cut after newlines into pieces of about ``CHUNK`` characters."""
    out, start = [], 0
    while start < len(text):
        end = text.find("\n", start + CHUNK)
        end = len(text) if end < 0 else end + 1
        out.append(text[start:end])
        start = end
    return out


def _first_line(e: BaseException, limit: int = 160) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _short(text: str) -> str:
    return ascii(text if len(text) <= 20 else text[:20] + "…")


# --- making one ---------------------------------------------------------------

def saved_in(folder: str | Path | None) -> Path | None:
    """The tokenizer a run folder keeps, when it holds a checkpoint and one."""
    if folder is None:
        return None
    f = Path(folder)
    if not (f / "latest.pt").exists() and not any(f.glob("ckpt-step*.pt")):
        return None  # not a run that can be resumed: a new run's --out
    for name in (HF_FILE, TIKTOKEN_FILE):
        if (f / name).is_file():
            return f / name
    return None


def make_tokenizer(spec: str, train_text: str | None, saved: Path | None = None) -> Tokenizer:
    """The tokenizer ``spec`` names (not ``bytes``): the run folder's copy
    ``saved`` when resuming, else trained on ``train_text`` (``bpe:N``),
    loaded (``gpt2``) or read from the path given."""
    if saved is not None:
        return from_file(saved, spec)
    if spec.startswith("bpe:"):
        if train_text is None:
            raise UserError(f"--tokenizer {spec} trains on text, and this data is token ids already; "
                            "pass the tokenizer.json those ids were made with")
        return train_bpe(train_text, int(spec[4:]), spec)
    if spec == "gpt2":
        return gpt2()
    return from_file(Path(spec), spec)


def train_bpe(text: str | Iterable[str], vocab: int, spec: str) -> HFTokenizer:
    """A byte-level BPE trained on ``text`` (the training split: nothing of
    the validation text shapes the vocabulary), a string or its pieces."""
    _need("tokenizers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[ENDOFTEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_pieces(text) if isinstance(text, str) else text, trainer=trainer)
    data = tok.to_str().encode("utf-8")
    return HFTokenizer(tok, spec, data)


GPT2_LOAD_S = 30.0  # tiktoken's first load downloads with no timeout of its own


def gpt2() -> TiktokenTokenizer:
    import threading

    tiktoken = _need("tiktoken")
    got: list[Any] = []

    def load() -> None:
        try:
            got.append(tiktoken.get_encoding("gpt2"))
        except Exception as e:  # no network, a proxy, a bad cache: whatever the download raised
            got.append(e)

    # A firewall that drops packets would hold the download for minutes: wait a while, then say so.
    loader = threading.Thread(target=load, name="tiktoken-gpt2", daemon=True)
    loader.start()
    loader.join(GPT2_LOAD_S)
    why = (_first_line(got[0], 100) if got and isinstance(got[0], BaseException)
           else None if got else f"no answer within {GPT2_LOAD_S:.0f}s")
    if why is not None:
        raise UserError(f"tiktoken could not load gpt2 (no network?): {why}; "
                        "run once where it can download (it caches in TIKTOKEN_CACHE_DIR), "
                        "or pass --tokenizer PATH to a tokenizer.json")
    return TiktokenTokenizer(got[0], "gpt2")


def from_file(path: Path, spec: str) -> Tokenizer:
    from ..files import read_if_regular, regular_file_size

    regular_file_size(path, "--tokenizer", "tokenizer file", "a tokenizer.json (Hugging Face tokenizers)")
    data = read_if_regular(path, MAX_FILE)
    if data is None:
        raise UserError(f"tokenizer file {path} is larger than {MAX_FILE >> 20} MB or no longer a regular file; "
                        "pass a tokenizer.json")
    if path.suffix == ".tiktoken":
        return _tiktoken_file(path, data, spec)
    _need("tokenizers")
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:
        raise UserError(f"tokenizer file {path} is not a Hugging Face tokenizer.json ({_first_line(e)}); "
                        "pass the tokenizer.json saved by tokenizers or transformers") from None
    hf = HFTokenizer(tok, spec, data)
    if hf.vocab_size < 2:
        raise UserError(f"tokenizer file {path} has a vocabulary of {hf.vocab_size}; pass a trained tokenizer.json")
    return hf


def _tiktoken_file(path: Path, data: bytes, spec: str) -> TiktokenTokenizer:
    tiktoken = _need("tiktoken")
    ranks: dict[bytes, int] = {}
    try:
        for n, line in enumerate(data.splitlines(), 1):
            if line.strip():
                tok, rank = line.split()
                ranks[base64.b64decode(tok, validate=True)] = int(rank)
    except (ValueError, binascii.Error):
        raise UserError(f"tokenizer file {path} line {n} is not 'BASE64 RANK'; "
                        "pass a .tiktoken file of ranks or a tokenizer.json") from None
    if sorted(ranks.values()) != list(range(len(ranks))) or any(bytes([b]) not in ranks for b in range(256)):
        raise UserError(f"tokenizer file {path} does not rank every byte with ranks 0..N-1; "
                        "pass a .tiktoken file of ranks or a tokenizer.json")
    try:
        enc = tiktoken.Encoding(name=path.stem, pat_str=_gpt2_pattern(), mergeable_ranks=ranks,
                                special_tokens={ENDOFTEXT: len(ranks)})
    except Exception as e:
        raise UserError(f"tokenizer file {path} cannot be used ({_first_line(e)}); pass a tokenizer.json") from None
    return TiktokenTokenizer(enc, spec)


def _gpt2_pattern() -> str:
    """tiktoken's own GPT-2 split pattern, so that a gpt2 run resumed from its
    folder's copy splits text exactly as ``get_encoding("gpt2")`` did."""
    try:
        from tiktoken_ext.openai_public import r50k_pat_str
    except ImportError:
        return GPT2_PATTERN
    return r50k_pat_str


# --- in the run folder ----------------------------------------------------------

def keep_in(folder: str | Path | None, tokenizer: Any) -> dict[str, Any] | None:
    """Write ``tokenizer`` into the run folder (whole or not at all) and say
    what a reader of ``run_start`` needs: its setting, file and vocabulary.
    None for bytes and ids, which need no file."""
    if not isinstance(tokenizer, (HFTokenizer, TiktokenTokenizer)):
        return None
    about: dict[str, Any] = {"name": tokenizer.spec, "vocab_size": tokenizer.vocab_size,
                             "file": tokenizer.file_name}
    if folder is not None:
        from ..files import replaced

        data = tokenizer.data
        path = Path(folder) / tokenizer.file_name
        if read_kept(path) != data:
            with replaced(path, binary=True) as f:
                f.write(data)
    return about


def same_file_tokenizer(kept_spec: Any, given_spec: Any, folder: str | Path) -> bool:
    """Whether ``given_spec``, a path, names the tokenizer the run folder keeps
    under ``kept_spec`` (another path): the same file by another name
    (``./tok.json``, an absolute path, a copy) is the same tokenizer."""
    if not (isinstance(kept_spec, str) and isinstance(given_spec, str) and is_path(kept_spec) and is_path(given_spec)):
        return False
    saved = saved_in(folder)
    kept = read_kept(saved) if saved is not None else None
    if kept is None:
        return False
    try:
        return from_file(Path(given_spec), given_spec).data == kept
    except UserError:
        return False  # not a tokenizer: the refusal names the difference


def read_kept(path: Path) -> bytes | None:
    from ..files import read_if_regular

    return read_if_regular(path, MAX_FILE)

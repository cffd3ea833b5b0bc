"""nanoGPT's files, as its users have them.

- A data folder made by nanoGPT's ``prepare.py``: ``train.bin`` (uint16 token
  ids), ``val.bin`` (the validation split, when there) and ``meta.pkl`` (a
  char-level vocabulary: ``vocab_size``, ``itos``, ``stoi``).  ``--data``
  may name the folder or its ``train.bin``.
- ``meta.pkl`` is a pickle, and a pickle can run any code when loaded: it is
  read with an unpickler that builds nothing but plain dicts, lists, tuples,
  strings, numbers, booleans and None; any other object (a class, a function,
  ``os.system``) is refused in one line, never called.
- A checkpoint ``ckpt.pt`` of nanoGPT's ``train.py`` (``--init-from``): its
  ``model`` state dict (nanoGPT's names, which ``model.py`` shares; a compiled
  model's ``_orig_mod.`` prefixes stripped) and ``model_args``, loaded with
  ``weights_only``.

torch is imported only where a checkpoint is read.
"""
from __future__ import annotations

import io
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..control.commands import surrogate_problem
from ..errors import UserError
from ..files import read_if_regular

TRAIN, VAL, META = "train.bin", "val.bin", "meta.pkl"
MAX_META = 64 << 20  # a char vocabulary is a few KB; GPT-2's whole vocabulary as a dict ~2 MB
MAX_VOCAB = 1 << 24
PLAIN = (dict, list, tuple, str, int, float, bool, type(None))


@dataclass
class DataFolder:
    """The files of a nanoGPT data folder (``val`` and ``meta`` None when not there)."""

    train: Path
    val: Path | None
    meta: Path | None


def data_folder(path: Path) -> DataFolder | None:
    """The nanoGPT data folder ``path`` names (a folder holding ``train.bin``,
    or that ``train.bin`` itself); None for anything else."""
    if path.is_dir() and (path / TRAIN).is_file():
        folder = path
    elif path.name == TRAIN and path.is_file():
        folder = path.parent
    else:
        return None
    val, meta = folder / VAL, folder / META
    return DataFolder(folder / TRAIN, val if val.is_file() else None, meta if meta.is_file() else None)


# --- meta.pkl -------------------------------------------------------------------

class _PlainUnpickler(pickle.Unpickler):
    """Builds plain values only: every way a pickle names a class or a
    function (GLOBAL, STACK_GLOBAL, INST, the extension registry) comes here,
    and is refused before anything is imported or called."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"it names {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("it holds a persistent reference")


def read_meta(path: Path) -> dict[str, Any]:
    """``meta.pkl`` as a dict of plain values; ``UserError`` (one line) for
    anything else, nothing in it executed."""
    raw = read_if_regular(path, MAX_META)
    if raw is None:
        raise UserError(f"{path} is not a regular file of at most {MAX_META >> 20} MB; "
                        "remove it, or pass the folder's train.bin with --vocab-size")
    try:
        got = _PlainUnpickler(io.BytesIO(raw)).load()
    except Exception as e:  # UnpicklingError, EOFError, ValueError, MemoryError...: untrusted bytes
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise UserError(f"{path} is not a plain pickle of a vocabulary ({why}): it is refused unread, "
                        "since a pickle can run code; remove it or make it with nanoGPT's prepare.py") from None
    bad = _not_plain(got)
    if bad is not None or type(got) is not dict:
        kind = bad or type(got).__name__
        raise UserError(f"{path} holds a {kind}, not plain dicts, lists, strings and numbers; "
                        "remove it or make it with nanoGPT's prepare.py")
    return got


def _not_plain(value: Any) -> str | None:
    """The type name of the first value that is not plain, or None (shared and
    self-referencing values are visited once)."""
    seen: set[int] = set()
    todo = [value]
    while todo:
        v = todo.pop()
        if type(v) not in PLAIN:
            return type(v).__name__
        if type(v) in (dict, list, tuple) and id(v) not in seen:
            seen.add(id(v))
            if type(v) is dict:
                todo.extend(v.keys())
                todo.extend(v.values())
            else:
                todo.extend(v)
    return None


class CharTokenizer:
    """nanoGPT's char-level vocabulary (``meta.pkl``): a token is a character.
    The same methods as ``data.ByteTokenizer``."""

    def __init__(self, itos: dict[int, str], vocab_size: int):
        self.itos = itos
        self.stoi = {s: i for i, s in itos.items()}
        self.vocab_size = vocab_size

    def check(self, text: str) -> str | None:
        """Why ``text`` cannot be a prompt (None when it can)."""
        if not isinstance(text, str) or not text:
            return "the prompt is empty; give at least one character"
        why = surrogate_problem(text, bytes_ok=False)
        if why is not None:
            return why
        missing = sorted({c for c in text if c not in self.stoi})
        if missing:
            shown = "".join(missing[:10])
            return (f"the prompt has characters this vocabulary (meta.pkl) lacks: {ascii(shown)}; "
                    "use characters of the training text")
        return None

    def encode(self, text: str) -> list[int]:
        why = self.check(text)
        if why is not None:
            raise ValueError(why)
        return [self.stoi[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.itos.get(int(i), "\ufffd") for i in ids)

    def byte_lengths(self) -> list[int]:
        """The UTF-8 bytes of each token id (bits per byte)."""
        return [len(self.itos.get(i, "").encode("utf-8", "surrogatepass")) for i in range(self.vocab_size)]


def meta_tokenizer(path: Path) -> tuple[int, CharTokenizer | None]:
    """(vocab_size, its char tokenizer) from ``meta.pkl``; the tokenizer is
    None when the file holds a vocabulary size but no ``itos``."""
    meta = read_meta(path)
    vocab = meta.get("vocab_size")
    itos = meta.get("itos")
    if type(itos) is list:
        itos = dict(enumerate(itos))
    if itos is not None and (type(itos) is not dict or not all(
            type(k) is int and 0 <= k < MAX_VOCAB and type(s) is str for k, s in itos.items())):
        raise UserError(f"{path}: its itos is not a map from token ids to strings; "
                        "remove it or make it with nanoGPT's prepare.py")
    if vocab is None and itos:
        vocab = max(itos) + 1
    if type(vocab) is not int or not 0 < vocab <= MAX_VOCAB or (itos and max(itos) >= vocab):
        raise UserError(f"{path}: vocab_size {vocab!r} is not a vocabulary size above its ids "
                        f"(1..{MAX_VOCAB}); remove it or pass --vocab-size")
    return vocab, CharTokenizer(itos, vocab) if itos else None


# --- ckpt.pt ----------------------------------------------------------------------

#: model_args keys, as nanoGPT names them, and the flag that sets each here.
SHAPE_ARGS = (("n_layer", "--n-layer"), ("n_head", "--n-head"), ("n_embd", "--n-embd"),
              ("block_size", "--context-length"), ("bias", "--bias"), ("vocab_size", "--vocab-size"))
COMPILED = "_orig_mod."  # torch.compile's prefix on every key of a compiled model's state dict


def init_from(path: str | Path, model: Any, ours: dict[str, Any]) -> None:
    """Load the weights of nanoGPT's checkpoint at ``path`` into ``model``.
    ``ours`` holds this run's values of ``SHAPE_ARGS`` (nanoGPT's names);
    a checkpoint of another shape, or one that is not nanoGPT's, is one line."""
    import torch

    from ..files import regular_file_size

    path = Path(path)
    regular_file_size(path, "--init-from", "checkpoint", "nanoGPT's ckpt.pt")
    try:
        with warnings.catch_warnings():  # torch's word on a pickle protocol is no line for a person
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or one holding objects weights_only refuses
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        if isinstance(e, pickle.UnpicklingError) or why.startswith("Weights only load failed"):
            why = "it holds objects other than tensors and plain values, refused unread"
        raise UserError(f"--init-from {path} cannot be read as a checkpoint ({why}); "
                        "pass nanoGPT's ckpt.pt (saved by its train.py)") from None
    if type(ckpt) is not dict or not isinstance(ckpt.get("model"), dict) or type(ckpt.get("model_args")) is not dict:
        raise UserError(f"--init-from {path} has no 'model' state dict and 'model_args'; "
                        "pass nanoGPT's ckpt.pt (saved by its train.py)")
    args = ckpt["model_args"]
    differ = [(flag, args.get(key), ours[key]) for key, flag in SHAPE_ARGS
              if key in args and args.get(key) != ours[key]]
    if differ:
        theirs = ", ".join(f"{flag} {_flag_value(v)}" for flag, v, _ in differ)
        mine = ", ".join(f"{flag} {_flag_value(v)}" for flag, _, v in differ)
        fix = " ".join(_flag_arg(flag, v) for flag, v, _ in differ)
        raise UserError(f"--init-from {path} is a model of {theirs}, and this run's is {mine}; pass {fix}")
    state = {(k[len(COMPILED):] if k.startswith(COMPILED) else k): v for k, v in ckpt["model"].items()}
    own = model.state_dict()
    # nanoGPT keeps a causal mask buffer (attn.bias) when it has no flash attention: not a weight.
    state = {k: v for k, v in state.items() if k in own or not k.endswith(".attn.bias")}
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and (not torch.is_tensor(state[k]) or state[k].shape != own[k].shape)]
    if missing or extra or wrong:
        what = (f"lacks {missing[0]}" if missing else f"has {extra[0]}, which this model lacks" if extra
                else f"holds {wrong[0]} of shape {tuple(getattr(state[wrong[0]], 'shape', ()))}, "
                     f"not {tuple(own[wrong[0]].shape)}")
        raise UserError(f"--init-from {path} {what}; pass a checkpoint of nanoGPT's GPT with these settings")
    with torch.no_grad():
        model.load_state_dict(state, strict=True)


def _flag_value(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _flag_arg(flag: str, v: Any) -> str:
    if flag == "--bias":
        return "--bias" if v else "--no-bias"
    return f"{flag} {v}"

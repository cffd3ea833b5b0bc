"""--tokenizer: bytes (unchanged), bpe:N trained on the training split only,
gpt2 (tiktoken, offline one line), a tokenizer.json path, a .bin of ids
decoded as text, and the run folder's copy used on resume."""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading

import numpy as np
import pytest
import torch

from tui_trainer import cli
from tui_trainer.text import tokenizer as text_codec
from tui_trainer.config import UserError, make_config
from tui_trainer.train.data import load_corpus
from tui_trainer.logs import ReadCounts, effective_records, read_records
from tui_trainer.run.log_writer import LOG_NAME

pytest.importorskip("tokenizers")
from texttools import TINY, prose  # noqa: E402


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "prose.txt"
    p.write_text(prose(1500))
    return p


def train(out, *extra, steps=8, every=4):
    return cli.main(["train", "--headless", "--out", str(out), "--steps", str(steps), "--eval-every", str(every),
                     *TINY, *extra])


def records(run_dir, kind=None):
    stats = ReadCounts()
    recs = effective_records(read_records(run_dir / LOG_NAME, stats))
    assert stats.bad == 0
    return [r for r in recs if kind is None or r["type"] == kind]


def losses(run_dir):
    return {r["step"]: r["train_loss"] for r in records(run_dir, "train")}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def readable(text: str) -> bool:
    """Text of the training alphabet, not a row of token ids."""
    return not re.fullmatch(r"[\d ]*", text) and any(c.isalpha() for c in text)


# --- bytes: the default, unchanged ------------------------------------------------

def test_default_is_bytes_and_unchanged(tmp_path):
    """No --tokenizer and an explicit --tokenizer bytes train the very same
    run, bit for bit (the embedded corpus: the demo's data), and run_start
    names no tokenizer file."""
    assert train(tmp_path / "plain", steps=4, every=4) == 0
    assert train(tmp_path / "bytes", "--tokenizer", "bytes", steps=4, every=4) == 0
    a, b = losses(tmp_path / "plain"), losses(tmp_path / "bytes")
    assert a == b and len(a) == 4
    start = records(tmp_path / "plain", "run_start")[0]
    assert start["config"]["tokenizer"] == "bytes" and start.get("tokenizer") is None
    assert not (tmp_path / "plain" / text_codec.HF_FILE).exists()


# --- bpe:N ----------------------------------------------------------------------

def test_bpe_learns_from_the_training_split_only(tmp_path):
    """The validation tail repeats a word the training text never has: a BPE
    trained on all the text merges it, the one --tokenizer bpe:N trains does not."""
    secret = "zqxjv"
    body = prose(900)
    tail = (secret + " ") * 2000  # well over 10% of the bytes: all of the validation split
    data = tmp_path / "d.txt"
    data.write_text(body + tail[: len(body) // 9])
    cfg = make_config({"data": str(data), "tokenizer": "bpe:400", "context_length": 16, "out": str(tmp_path / "r")})
    corpus = load_corpus(cfg)
    vocab = corpus.tokenizer.tok.get_vocab()
    assert not any("zq" in t or "xj" in t for t in vocab)  # not one merge of the secret word
    assert secret in corpus.tokenizer.decode([int(i) for i in corpus.val[:200]])  # it is the validation text
    # the construction shows it: the same trainer given all the text does merge it
    everything = text_codec.train_bpe(data.read_text(), 400, "bpe:400").tok.get_vocab()
    assert any(secret in t for t in everything)


def test_bpe_run_samples_text_and_resumes_bitwise_with_its_own_tokenizer(tmp_path, text_file, monkeypatch):
    full = tmp_path / "full"
    assert train(full, "--data", str(text_file), "--tokenizer", "bpe:300", steps=8, every=4) == 0
    kept = full / text_codec.HF_FILE
    assert kept.is_file()
    start = records(full, "run_start")[0]
    assert start["tokenizer"] == {"name": "bpe:300", "vocab_size": 300, "file": "tokenizer.json"}
    samples = records(full, "sample")
    assert samples and all(readable(s["text"]) for s in samples)
    assert all(any(c.isalpha() for c in s["prompt"]) for s in samples)  # the prompt is text from the data
    # Resume from the step-4 checkpoint of a copy: the folder's tokenizer is
    # read back (training a BPE again is not even possible here) and the
    # steps after 4 are the uninterrupted run's, bit for bit.
    split = tmp_path / "split"
    shutil.copytree(full, split)
    monkeypatch.setattr(text_codec, "train_bpe", lambda *a: pytest.fail("resume trained a new BPE"))
    assert cli.main(["train", "--headless", "--resume", str(split / "ckpt-step00000004.pt")]) == 0
    want, got = losses(full), losses(split)
    assert got == want and sorted(got) == list(range(1, 9))
    assert records(split, "run_start")[-1]["resumed"] is True


def test_another_tokenizer_on_resume_is_refused(tmp_path, text_file, capsys):
    run = tmp_path / "r"
    assert train(run, "--data", str(text_file), "--tokenizer", "bpe:300", steps=2, every=2) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    for other in ("bytes", "bpe:320", "gpt2"):
        assert cli.main(["train", "--headless", "--resume", str(run), "--steps", "4", "--tokenizer", other]) != 0
        line = one_error_line(capsys)
        assert "tokenizer ('bpe:300' in the checkpoint" in line and "drop --tokenizer" in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # the run folder is left as it was


# --- a tokenizer.json path, and a .bin of ids ---------------------------------------

@pytest.fixture(scope="module")
def tok_json(tmp_path_factory, text_file):
    p = tmp_path_factory.mktemp("tok") / "my-tokenizer.json"
    p.write_bytes(text_codec.train_bpe(text_file.read_text(), 320, "bpe:320").data)
    return p


def test_tokenizer_json_path_is_copied_and_used_on_resume(tmp_path, text_file, tok_json):
    given = tmp_path / "given.json"
    shutil.copy(tok_json, given)
    run = tmp_path / "r"
    assert train(run, "--data", str(text_file), "--tokenizer", str(given), steps=4, every=2) == 0
    assert (run / text_codec.HF_FILE).read_bytes() == given.read_bytes()
    vocab = text_codec.from_file(tok_json, "x").vocab_size
    assert records(run, "run_start")[0]["tokenizer"]["vocab_size"] == vocab < 320  # all merges of a small text
    given.unlink()  # the run keeps its own copy: a resume does not need the original
    assert cli.main(["train", "--headless", "--resume", str(run), "--steps", "6"]) == 0
    assert sorted(losses(run)) == list(range(1, 7))
    assert all(readable(s["text"]) for s in records(run, "sample"))


def test_bin_of_ids_decodes_with_its_tokenizer(tmp_path, text_file, tok_json, capsys):
    tok = text_codec.from_file(tok_json, str(tok_json))
    ids = np.asarray(tok.encode_text(text_file.read_text()), dtype=np.uint16)
    data = tmp_path / "corpus.bin"
    ids.tofile(data)
    run = tmp_path / "r"
    assert train(run, "--data", str(data), "--tokenizer", str(tok_json), "--sample-prompt", "river ",
                 steps=2, every=2) == 0
    samples = records(run, "sample")
    assert samples and samples[0]["prompt"] == "river " and all(readable(s["text"]) for s in samples)
    # Without the tokenizer the same file is ids, as before.
    assert train(tmp_path / "ids", "--data", str(data), steps=2, every=2) == 0
    assert re.fullmatch(r"[\d ]+", records(tmp_path / "ids", "sample")[0]["text"])
    # An id the tokenizer does not have: one line, before any folder is made.
    capsys.readouterr()
    bad = tmp_path / "bad.bin"
    np.concatenate([ids, np.asarray([60000], dtype=np.uint16)]).tofile(bad)
    assert train(tmp_path / "no", "--data", str(bad), "--tokenizer", str(tok_json)) != 0
    line = one_error_line(capsys)
    assert "token id 60000" in line and f"at or beyond the {tok.vocab_size} ids" in line
    assert not (tmp_path / "no").exists()


def test_bpe_on_a_bin_of_ids_is_refused(tmp_path, capsys):
    data = tmp_path / "c.bin"
    np.arange(4000, dtype=np.uint16).tofile(data)
    assert train(tmp_path / "r", "--data", str(data), "--tokenizer", "bpe:300") != 0
    assert "token ids already" in one_error_line(capsys)


# --- gpt2 --------------------------------------------------------------------------

def test_gpt2_offline_is_one_line(tmp_path, text_file, monkeypatch, capsys):
    """No cached file and no way to download it: one line, no folder."""
    pytest.importorskip("tiktoken")
    empty = tmp_path / "cache"
    empty.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(empty))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # the discard port: refused at once, no waiting on a network
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert train(tmp_path / "r", "--data", str(text_file), "--tokenizer", "gpt2") != 0
    line = one_error_line(capsys)
    assert line.startswith("error: tiktoken could not load gpt2 (no network?): ") and "; " in line
    assert not (tmp_path / "r").exists()


def _gpt2_cached() -> bool:
    import hashlib
    import tempfile

    base = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
    folder = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") or \
        os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return all(os.path.exists(os.path.join(folder, hashlib.sha1((base + f).encode()).hexdigest()))
               for f in ("vocab.bpe", "encoder.json"))


@pytest.mark.skipif(not _gpt2_cached(), reason="tiktoken's gpt2 file is not cached here, and only a download "
                    "(no network in tests) can fetch it")
def test_gpt2_run_decodes_text(tmp_path, text_file):  # pragma: no cover - needs the cached file
    run = tmp_path / "r"
    assert train(run, "--data", str(text_file), "--tokenizer", "gpt2", steps=2, every=2) == 0
    assert records(run, "run_start")[0]["tokenizer"]["vocab_size"] == 50257
    assert (run / text_codec.TIKTOKEN_FILE).is_file()
    assert all(readable(s["text"]) for s in records(run, "sample"))


def test_a_gpt2_run_resumes_offline_from_its_folder(tmp_path, text_file, monkeypatch, capsys):
    """A stand-in for GPT-2's encoding (its file is not here): the run keeps
    its ranks, and a resume with tiktoken offline reads that copy."""
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken_ext.openai_public import r50k_pat_str

    ranks = {bytes([b]): b for b in range(256)}
    for i, w in enumerate([b"al", b"alpha", b" alpha", b"ri", b"river"]):
        ranks[w] = 256 + i
    enc = tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                            special_tokens={text_codec.ENDOFTEXT: len(ranks)})
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: enc)
    run = tmp_path / "r"
    assert train(run, "--data", str(text_file), "--tokenizer", "gpt2", steps=4, every=2) == 0
    assert records(run, "run_start")[0]["tokenizer"] == {"name": "gpt2", "vocab_size": 262,
                                                         "file": "tokenizer.tiktoken"}
    assert all(readable(s["text"]) for s in records(run, "sample"))

    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    split = tmp_path / "split"
    shutil.copytree(run, split)
    assert cli.main(["train", "--headless", "--resume", str(split / "ckpt-step00000002.pt")]) == 0
    assert losses(split) == losses(run)
    capsys.readouterr()
    assert train(tmp_path / "new", "--data", str(text_file), "--tokenizer", "gpt2") != 0  # a new run needs the file
    assert "could not load gpt2 (no network?): ConnectionError: no network; " in one_error_line(capsys)


def test_a_tiktoken_file_of_ranks(tmp_path, text_file):
    """The form a gpt2 run keeps: base64 token and rank per line."""
    lines = [f"{__import__('base64').b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    lines += [f"{__import__('base64').b64encode(w.encode()).decode()} {256 + i}"
              for i, w in enumerate([" a", "al", "alpha", " alpha"])]
    path = tmp_path / "small.tiktoken"
    path.write_text("\n".join(lines) + "\n")
    tok = text_codec.from_file(path, str(path))
    assert tok.vocab_size == 261 and tok.decode(tok.encode("alpha beta")) == "alpha beta"
    run = tmp_path / "r"
    assert train(run, "--data", str(text_file), "--tokenizer", str(path), steps=2, every=2) == 0
    assert (run / text_codec.TIKTOKEN_FILE).read_bytes().splitlines() == path.read_bytes().splitlines()


def test_a_bin_of_ids_decodes_through_a_tiktoken_file(tmp_path, text_file):
    """GPT-2 ids offline: a .bin made by an encoding, with that encoding's ranks
    as a .tiktoken file (the copy a gpt2 run keeps), samples and prompts as text."""
    pytest.importorskip("tiktoken")
    import base64

    merged = [" a", "al", "alpha", " alpha", "ga", "gamma", " gamma", "er", "river", " river"]
    ranks = [bytes([b]) for b in range(256)] + [w.encode() for w in merged]
    path = tmp_path / "ranks.tiktoken"
    path.write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % r for r, t in enumerate(ranks)))
    tok = text_codec.from_file(path, str(path))
    ids = np.asarray(tok.encode_text(text_file.read_text()), dtype=np.uint16)
    assert ids.max() >= 256  # merged tokens, not bytes alone
    data = tmp_path / "corpus.bin"
    ids.tofile(data)
    run = tmp_path / "r"
    assert train(run, "--data", str(data), "--tokenizer", str(path), "--sample-prompt", "river ",
                 steps=2, every=2) == 0
    assert records(run, "run_start")[0]["tokenizer"]["file"] == text_codec.TIKTOKEN_FILE
    samples = records(run, "sample")
    assert samples and samples[0]["prompt"] == "river " and all(readable(s["text"]) for s in samples)


# --- the contract: prompts, settings, a missing package -------------------------------

def test_prompts_are_checked_by_the_tokenizer(tok_json):
    tok = text_codec.from_file(tok_json, str(tok_json))
    assert tok.check("river ") is None and tok.decode(tok.encode("river stone")) == "river stone"
    for bad in ("", "a\ud800b"):
        why = tok.check(bad)
        assert why and "\n" not in why
        with pytest.raises(ValueError):
            tok.encode(bad)
    assert tok.decode([5, 10**6, 6]).count("\ufffd") == 1  # an id no tokenizer has: a mark, not a crash


def test_live_sample_requests_go_through_the_tokenizer(tmp_path, text_file):
    """attach --sample, g and the socket: the prompt is checked on arrival by
    the run's tokenizer, and the sample is text."""
    from trainer_with_run import trainer_with_run

    cfg = make_config({"data": str(text_file), "tokenizer": "bpe:300", "out": str(tmp_path / "r"), "n_layer": 1,
                       "n_embd": 32, "n_head": 2, "context_length": 16, "batch_size": 4, "eval_batches": 1,
                       "steps": 2})
    (tmp_path / "r").mkdir()
    t, run = trainer_with_run(cfg, tmp_path / "r", [])
    assert run.prompt_refusal("river ") is None
    why = run.prompt_refusal("river \ud800")
    assert why and "surrogate" in why and "\n" not in why
    text = t._requested_sample("river ", 10, None, None)
    assert text.startswith("river ") and readable(text)


def test_settings_and_toml(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('tokenizer = "bpe:512"\ndata = "notes.txt"\n')  # without --data it is refused (bytes)
    args = cli.build_parser().parse_args(["train", "--config", str(toml)])
    assert cli.config_from_args(args).tokenizer == "bpe:512"
    assert make_config({}).tokenizer == "bytes"
    for bad in ("bpe:12", "bpe:x", "bpe:", "words", ""):
        with pytest.raises(UserError, match="--tokenizer"):
            make_config({"tokenizer": bad})


def test_a_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import fails as if not installed
    with pytest.raises(UserError, match=re.escape("pip install 'tui-trainer[text]'")):
        text_codec.make_tokenizer("bpe:300", "some text", None)


def test_an_old_checkpoint_without_the_setting_resumes_as_bytes():
    from tui_trainer.run.checkpoint_schema import ADDED_LATER

    assert "tokenizer" in ADDED_LATER
    assert json.loads(json.dumps(make_config({}).to_dict()))["tokenizer"] == "bytes"


def test_the_same_tokenizer_file_by_another_name_resumes(tmp_path, text_file, tok_json, capsys, monkeypatch):
    """A resume that names the run's tokenizer.json by another path (``./x``, an
    absolute path, a copy) is the same tokenizer, not a change; another file is
    still refused in one line."""
    run = tmp_path / "r"
    given = tmp_path / "given.json"
    shutil.copy(tok_json, given)
    monkeypatch.chdir(tmp_path)
    assert train(run, "--data", str(text_file), "--tokenizer", "given.json", steps=2, every=2) == 0
    copy = tmp_path / "copy" / "tok.json"
    copy.parent.mkdir()
    shutil.copy(given, copy)
    for other, steps in (("./given.json", 4), (str(given.resolve()), 6), (str(copy), 8)):
        assert cli.main(["train", "--headless", "--resume", str(run), "--steps", str(steps),
                         "--tokenizer", other]) == 0, other
    assert records(run, "run_start")[-1]["config"]["tokenizer"] == "given.json"
    capsys.readouterr()
    other_tok = tmp_path / "other.json"
    other_tok.write_bytes(text_codec.train_bpe("a b c d e f " * 50, 270, "bpe:270").data)
    assert cli.main(["train", "--headless", "--resume", str(run), "--steps", "10",
                     "--tokenizer", str(other_tok)]) != 0
    assert "tokenizer ('given.json' in the checkpoint" in one_error_line(capsys)


def test_gpt2_behind_a_silent_firewall_is_one_line(tmp_path, text_file, monkeypatch, capsys):
    """A download that never answers (packets dropped) is not waited on for
    minutes: after ``GPT2_LOAD_S`` it is one line, and no folder is made."""
    tiktoken = pytest.importorskip("tiktoken")
    never = threading.Event()
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: never.wait())
    monkeypatch.setattr(text_codec, "GPT2_LOAD_S", 0.2)
    try:
        assert train(tmp_path / "r", "--data", str(text_file), "--tokenizer", "gpt2") != 0
    finally:
        never.set()
    line = one_error_line(capsys)
    assert line.startswith("error: tiktoken could not load gpt2 (no network?): no answer within") and "; " in line
    assert not (tmp_path / "r").exists()

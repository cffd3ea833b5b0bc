"""Corpora of many documents (--data a folder, a glob, .jsonl, .parquet),
tokenized as a stream into a cached memmap (token_cache)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from tui_trainer import cli
from tui_trainer.text import corpora as corpus_sources, tokenizer as text_codec, token_cache
from tui_trainer.config import UserError, make_config
from tui_trainer.train.data import load_corpus
from tui_trainer.logs import ReadCounts, effective_records, read_records
from tui_trainer.run.log_writer import LOG_NAME

pytest.importorskip("tokenizers")
from texttools import TINY, prose  # noqa: E402


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "texts"
    (d / "sub").mkdir(parents=True)
    # names whose sorted order is not their creation order
    for i, name in enumerate(["b.txt", "a.txt", "sub/c.md", ".hidden.txt"]):
        (d / name).write_text(prose(200, seed=i))
    return d


def cfg(data, **kw):
    values = dict(data=str(data), context_length=16, batch_size=4, n_layer=1, n_head=2, n_embd=32)
    values.update(kw)
    return make_config(values)


def ids(corpus):
    return np.concatenate([np.asarray(corpus.train), np.asarray(corpus.val)])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


# --- folders and globs ----------------------------------------------------------------

def test_a_folder_is_its_files_in_sorted_order_joined_by_a_blank_line(folder):
    docs = corpus_sources.documents(str(folder), "bytes")
    assert [f.relative_to(folder).as_posix() for f in docs.files] == ["a.txt", "b.txt", "sub/c.md"]
    corpus = load_corpus(cfg(folder))
    want = b"\n\n".join((folder / n).read_bytes() for n in ["a.txt", "b.txt", "sub/c.md"])
    assert ids(corpus).tobytes() == want
    assert corpus.vocab_size == 256 and corpus.source == str(folder)


def test_a_glob_is_the_files_it_matches_sorted(folder, capsys):
    pattern = str(folder / "**" / "*.*")
    docs = corpus_sources.documents(pattern, "bytes")
    assert [f.name for f in docs.files] == ["a.txt", "b.txt", "c.md"]
    corpus = load_corpus(cfg(pattern))
    assert ids(corpus).tobytes() == ids(load_corpus(cfg(folder))).tobytes()
    with pytest.raises(UserError, match="matches no files"):
        load_corpus(cfg(str(folder / "*.nothing")))


def test_token_files_in_a_folder_and_an_empty_folder_are_one_line(folder, tmp_path):
    (folder / "shard.bin").write_bytes(b"\0\1" * 100)
    with pytest.raises(UserError, match="shard.bin, a .bin of token ids, as text; pass the .bin itself"):
        load_corpus(cfg(folder))
    (tmp_path / "empty" / ".git").mkdir(parents=True)
    (tmp_path / "empty" / ".git" / "x.txt").write_text(prose(200))  # hidden: left out
    with pytest.raises(UserError, match="is a directory with no files in it"):
        load_corpus(cfg(tmp_path / "empty"))


def test_the_fingerprint_follows_every_file(folder):
    before = corpus_sources.documents(str(folder), "bytes")
    same = corpus_sources.documents(str(folder), "bytes")
    assert (before.fingerprint, before.cache_key) == (same.fingerprint, same.cache_key)
    f = folder / "b.txt"
    text = f.read_text()
    f.write_text(text[:100] + ("x" if text[100] != "x" else "y") + text[101:])  # same size, one byte
    after = corpus_sources.documents(str(folder), "bytes")
    assert after.fingerprint != before.fingerprint and after.cache_key != before.cache_key
    f.write_text(text)  # the same bytes again, a newer mtime: the same data for resume, a fresh cache
    os.utime(f, ns=(1, 1))
    again = corpus_sources.documents(str(folder), "bytes")
    assert again.fingerprint == before.fingerprint and again.cache_key != before.cache_key
    (folder / "a.txt").rename(folder / "z.txt")  # a name is part of it
    assert corpus_sources.documents(str(folder), "bytes").fingerprint != before.fingerprint


def test_a_folder_through_a_bpe_joins_documents_with_endoftext(folder):
    corpus = load_corpus(cfg(folder, tokenizer="bpe:300"))
    eot = corpus.tokenizer.tok.token_to_id(text_codec.ENDOFTEXT)
    assert int((ids(corpus) == eot).sum()) == 2  # three documents
    assert "<|endoftext|>" in corpus.tokenizer.decode([int(i) for i in ids(corpus)])


def test_a_tiktoken_file_joins_documents_with_its_endoftext(folder, tmp_path):
    import base64

    pytest.importorskip("tiktoken")
    path = tmp_path / "small.tiktoken"
    path.write_text("".join(f"{base64.b64encode(bytes([b])).decode()} {b}\n" for b in range(256)))
    corpus = load_corpus(cfg(folder, tokenizer=str(path)))
    assert corpus.vocab_size == 257 and int((ids(corpus) == 256).sum()) == 2  # <|endoftext|> is id 256


# --- one text file: the same ids as before streaming ---------------------------------------

def test_one_file_streamed_in_small_pieces_gives_the_ids_of_the_whole_text(tmp_path, monkeypatch):
    """The stream cuts pieces exactly as text_codec._pieces cuts the whole
    text, so a run tokenized before the cache existed resumes on the same ids
    (multi-byte characters across the blocks and the split included)."""
    text = "".join(f"{w} é→{i % 7}\n" if i % 3 else f"{w}{'ü' * 40} " for i, w in
                   enumerate(prose(60).split()))
    p = tmp_path / "t.txt"
    p.write_text(text)
    for mod in (text_codec, corpus_sources):
        monkeypatch.setattr(mod, "CHUNK", 37)
    monkeypatch.setattr(corpus_sources, "MAX_PIECE", 1 << 20)
    monkeypatch.setattr(corpus_sources, "BLOCK", 101)
    corpus = load_corpus(cfg(p, tokenizer="bpe:300", val_fraction=0.23))
    raw = p.read_bytes()
    cut = len(raw) - int(len(raw) * 0.23)
    while (raw[cut] & 0xC0) == 0x80:
        cut += 1
    tok = corpus.tokenizer
    assert list(corpus.train) == tok.encode_text(raw[:cut].decode())
    assert list(corpus.val) == tok.encode_text(raw[cut:].decode())


# --- jsonl and parquet -------------------------------------------------------------------

def write_jsonl(path, docs, extra_lines=()):
    with open(path, "w") as f:
        for d in docs:
            f.write(json.dumps({"id": 1, "body": d}) + "\n")
        for line in extra_lines:
            f.write(line + "\n")


def test_jsonl_with_a_text_field_and_its_bad_lines_counted(tmp_path, capsys):
    docs = [prose(20, seed=i) for i in range(6)]
    p = tmp_path / "d.jsonl"
    write_jsonl(p, docs, ["not json", "[1, 2]", '{"body": 7}', "", "[" * 100_000 + "]" * 100_000])
    said = []
    corpus = load_corpus(cfg(p, text_field="body"), say=said.append)
    assert ids(corpus).tobytes() == "\n\n".join(docs).encode()
    assert any("4 without text skipped (first: line 7 is not JSON)" in s for s in said), said
    again = []
    load_corpus(cfg(p, text_field="body"), say=again.append)  # from the cache: the count is kept
    assert any("4" in s and "skipped" in s for s in again), again


def test_jsonl_without_the_field_is_one_line(tmp_path, capsys):
    p = tmp_path / "d.jsonl"
    write_jsonl(p, [prose(20)])
    assert cli.main(["train", "--headless", "--out", str(tmp_path / "run"), "--data", str(p), *TINY]) != 0
    line = one_error_line(capsys)
    assert "no field 'text' (its fields: id, body); pass --text-field NAME" in line
    assert not (tmp_path / "run").exists()


def test_parquet_column(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow (the [parquet] extra) is not installed")
    import pyarrow.parquet as pq

    docs = [prose(20, seed=i) for i in range(5)]
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"body": docs + [None], "n": list(range(6))}), p)
    j = tmp_path / "d.jsonl"
    write_jsonl(j, docs)
    corpus = load_corpus(cfg(p, text_field="body", tokenizer="bpe:300"))
    assert list(ids(corpus)) == list(ids(load_corpus(cfg(j, text_field="body", tokenizer="bpe:300"))))
    with pytest.raises(UserError, match="no column 'text' .*its columns: body, n"):
        load_corpus(cfg(p))


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    p = tmp_path / "d.parquet"
    p.write_bytes(b"PAR1 not really")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(UserError, match=r"needs the Python package 'pyarrow'.*tui-trainer\[parquet\]"):
        load_corpus(cfg(p))


# --- the cache -------------------------------------------------------------------------------

def test_the_second_run_reads_the_cache(folder, monkeypatch):
    said, said_again = [], []
    first = load_corpus(cfg(folder, tokenizer="bpe:300"), say=said.append)
    # the loading screen's line: a bar, MB done of the total, MB/s and the time left
    assert any(s.startswith(f"tokenizing {folder} ") and "% 0/0 MB" in s and "s left" in s for s in said), said
    monkeypatch.setattr(token_cache, "_encode_to", lambda *a: pytest.fail("tokenized again"))
    monkeypatch.setattr(token_cache, "train_bpe", lambda *a: pytest.fail("trained the BPE again"))
    second = load_corpus(cfg(folder, tokenizer="bpe:300"), say=said_again.append)
    assert not any("tokenizing" in s or "learning" in s for s in said_again), said_again
    assert list(ids(second)) == list(ids(first))
    assert second.tokenizer.data == first.tokenizer.data


def test_headless_progress_lines_on_stderr(folder, monkeypatch, capsys):
    class Clock:  # two seconds pass between any two looks at the clock
        now = 0.0

        def monotonic(self):
            self.now += 2.0
            return self.now

    monkeypatch.setattr(token_cache, "time", Clock())
    load_corpus(cfg(folder, tokenizer="bpe:300"))
    err = capsys.readouterr().err.splitlines()
    assert any(ln.startswith(f"tokenizing {folder} ") and "MB/s" in ln and "s left" in ln for ln in err), err
    assert any(ln.startswith("learning a bpe:300 tokenizer") for ln in err), err
    assert any("tokens in" in ln and "kept in" in ln and str(token_cache.cache_dir()) in ln for ln in err), err


def cache_files(kind=".ids"):
    return sorted(p for p in token_cache.cache_dir().iterdir() if p.name.endswith(kind))


@pytest.mark.parametrize("damage", ["truncate", "header", "beyond-vocab", "fifo"])
def test_a_damaged_cache_file_is_made_again(folder, damage):
    want = list(ids(load_corpus(cfg(folder, tokenizer="bpe:300"))))
    [path] = cache_files()
    if damage == "truncate":
        os.truncate(path, path.stat().st_size - 3)
    elif damage == "header":
        with open(path, "r+b") as f:
            f.write(b"NOTMINE!")
    elif damage == "beyond-vocab":
        with open(path, "r+b") as f:
            f.seek(token_cache.HEADER_SIZE)
            f.write(np.array([65000], dtype=np.uint16).tobytes())
    else:
        path.unlink()
        os.mkfifo(path)
    assert list(ids(load_corpus(cfg(folder, tokenizer="bpe:300")))) == want
    assert path.is_file() and not path.is_fifo()


def test_a_run_killed_mid_write_leaves_no_cache_and_the_next_run_makes_it(folder, tmp_path):
    """kill -9 while the ids are being written: the real name never holds a
    half file, and the next run cleans the temporary one and writes it whole."""
    cache = token_cache.cache_dir()
    script = textwrap.dedent(f"""
        import os, sys, time
        from tui_trainer import token_cache
        from tui_trainer.config import make_config
        from tui_trainer.train.data import load_corpus
        real = token_cache._encode_to
        def stuck(f, *a):
            f.write(b"x" * 100); f.flush()
            open({str(tmp_path / 'writing')!r}, "w").close()
            while True:
                time.sleep(1)
        token_cache._encode_to = stuck
        load_corpus(make_config(dict(data={str(folder)!r}, tokenizer="bpe:300", context_length=16)))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "writing").exists():
            assert child.poll() is None and time.monotonic() < deadline, "the child never began writing"
            time.sleep(0.05)
        child.kill()
    finally:
        child.kill()
        child.wait()
    assert cache_files() == [] and list(cache.glob(".*.tmp"))
    corpus = load_corpus(cfg(folder, tokenizer="bpe:300"))
    assert len(cache_files()) == 1 and not list(cache.glob(".*.tmp"))
    assert len(ids(corpus)) > 100


# --- a run on a folder resumes bitwise ------------------------------------------------------

def test_a_run_on_a_folder_resumes_bitwise(folder, tmp_path):
    full = tmp_path / "full"
    args = ["--data", str(folder), "--tokenizer", "bpe:300", *TINY]
    assert cli.main(["train", "--headless", "--out", str(full), "--steps", "8", "--eval-every", "4", *args]) == 0
    split = tmp_path / "split"
    shutil.copytree(full, split)
    assert cli.main(["train", "--headless", "--resume", str(split / "ckpt-step00000004.pt")]) == 0

    def losses(run):
        stats = ReadCounts()
        recs = effective_records(read_records(run / LOG_NAME, stats))
        return {r["step"]: r["train_loss"] for r in recs if r["type"] == "train"}

    assert losses(split) == losses(full) and sorted(losses(full)) == list(range(1, 9))

"""nanoGPT's files as its users have them: a data folder (train.bin, val.bin,
a char meta.pkl), its checkpoint (--init-from) and its printed training log."""
from __future__ import annotations

import copyreg
import io
import math
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tui_trainer import cli
from tui_trainer.config import UserError, make_config
from tui_trainer.train.data import load_corpus
from tui_trainer.train.lesson import calc_loss_batch
from tui_trainer.logs import ReadCounts, effective_records, load_series, read_records
from tui_trainer.train.model import GPT, GPTConfig
from tui_trainer.text.nanogpt import CharTokenizer, read_meta
from tui_trainer.train.parts import build_parts
from tui_trainer.run.log_writer import LOG_NAME

TINY = dict(n_layer=1, n_head=2, n_embd=32, context_length=16, batch_size=4, eval_batches=2, bias=False,
            sample_tokens=12, warmup_steps=2, threads=1)
FLAGS = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--context-length", "16", "--batch-size", "4",
         "--eval-batches", "2", "--no-bias", "--sample-tokens", "12", "--warmup-steps", "2", "--threads", "1"]
TRAIN_TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 40
VAL_TEXT = "MENENIUS:\nWhy, masters, my good friends, mine honest neighbours,\nWill you undo yourselves?\n\n" * 10


@pytest.fixture
def shakespeare(tmp_path) -> Path:
    """A folder as nanoGPT's data/shakespeare_char/prepare.py makes it."""
    folder = tmp_path / "shakespeare_char"
    folder.mkdir()
    chars = sorted(set(TRAIN_TEXT + VAL_TEXT))
    stoi = {c: i for i, c in enumerate(chars)}
    itos = {i: c for i, c in enumerate(chars)}
    np.array([stoi[c] for c in TRAIN_TEXT], dtype=np.uint16).tofile(folder / "train.bin")
    np.array([stoi[c] for c in VAL_TEXT], dtype=np.uint16).tofile(folder / "val.bin")
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": itos, "stoi": stoi}, f)
    return folder


def cfg_for(tmp_path, data, **more):
    return make_config(dict(TINY, data=str(data), out=str(tmp_path / "run"), steps=4, eval_every=2, **more))


def records(run_dir, kind):
    stats = ReadCounts()
    recs = effective_records(read_records(run_dir / LOG_NAME, stats))
    return [r for r in recs if r["type"] == kind]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    return err


def test_a_data_folder_validates_on_val_bin_and_decodes_with_meta(tmp_path, shakespeare):
    for data in (shakespeare, shakespeare / "train.bin"):  # the folder, or its train.bin as users pass it
        corpus = load_corpus(cfg_for(tmp_path, data))
        assert isinstance(corpus.tokenizer, CharTokenizer)
        assert corpus.vocab_size == len(set(TRAIN_TEXT + VAL_TEXT))
        assert corpus.tokenizer.decode([int(t) for t in corpus.val]) == VAL_TEXT  # val.bin, whole
        assert corpus.tokenizer.decode([int(t) for t in corpus.train]) == TRAIN_TEXT
    with pytest.raises(UserError, match=r"a vocabulary of \d+ \(meta.pkl\), outside --vocab-size 10"):
        load_corpus(cfg_for(tmp_path, shakespeare, vocab_size=10))
    # Without val.bin: the last 10% of train.bin, as before.
    (shakespeare / "val.bin").unlink()
    corpus = load_corpus(cfg_for(tmp_path, shakespeare))
    assert len(corpus.val) == int(len(TRAIN_TEXT) * 0.1)


def test_a_run_on_the_folder_samples_text_from_the_start_of_a_line(tmp_path, shakespeare, capsys):
    run = tmp_path / "r"
    assert cli.main(["train", "--headless", "--data", str(shakespeare), "--out", str(run), "--steps", "4",
                     "--eval-every", "2", *FLAGS]) == 0
    start = records(run, "run_start")[0]
    prompt = start["config"]["sample_prompt"]
    assert VAL_TEXT.startswith(prompt) or ("\n" + prompt) in VAL_TEXT  # a line's start, not mid-word
    samples = records(run, "sample")
    assert samples and all(s["text"].startswith(prompt) and not re.fullmatch(r"[\d ]+", s["text"]) for s in samples)
    evals = records(run, "eval")
    assert all(e["val_bpb"] == pytest.approx(e["val_loss"] / math.log(2)) for e in evals)  # a char is a byte here
    assert "sample" in capsys.readouterr().out


class Anything:
    pass


def _reduce_pickle() -> bytes:
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch PWNED",))
    return pickle.dumps({"vocab_size": 3, "itos": Boom()})


@pytest.mark.parametrize("payload", [
    _reduce_pickle(),
    pickle.dumps({"vocab_size": 3, "itos": Anything()}),
    pickle.dumps({"vocab_size": 3, "stoi": {"a", "b"}}),  # a set: plain-ish, yet not what a vocabulary holds
    b"\x80\x02cposix\nsystem\nq\x00X\x0b\x00\x00\x00touch PWNEDq\x01\x85q\x02Rq\x03.",  # hand-made GLOBAL + REDUCE
    b"not a pickle at all",
])
def test_a_meta_pkl_holding_any_other_object_is_refused_unexecuted(tmp_path, shakespeare, payload, capsys,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    (shakespeare / "meta.pkl").write_bytes(payload)
    with pytest.raises(UserError) as e:
        read_meta(shakespeare / "meta.pkl")
    assert "\n" not in str(e.value)
    assert cli.main(["train", "--headless", "--data", str(shakespeare), "--out", str(tmp_path / "r"),
                     "--steps", "2", *FLAGS]) != 0
    line = one_error_line(capsys)
    assert "meta.pkl" in line
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "r").exists()


def test_an_extension_code_is_refused_too(tmp_path):
    copyreg.add_extension("os", "system", 0x7ABC)
    try:
        payload = pickle.dumps(os.system, protocol=2)
    finally:
        copyreg.remove_extension("os", "system", 0x7ABC)
    (tmp_path / "meta.pkl").write_bytes(payload)
    with pytest.raises(UserError):
        read_meta(tmp_path / "meta.pkl")
    # Plain values of every allowed kind read.
    plain = {"vocab_size": 2, "itos": [None, "a"], "t": (1, 2.5, True), "nested": [[{"k": -1}]]}
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps(plain))
    assert read_meta(tmp_path / "ok.pkl") == plain


def nanogpt_checkpoint(path: Path, vocab: int, seed: int = 3) -> GPT:
    """A ckpt.pt as nanoGPT's train.py writes it, from a tiny model (compiled-model key names)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, context_length=16, n_layer=1, n_head=2, n_embd=32, bias=False))
    model_args = dict(n_layer=1, n_head=2, n_embd=32, block_size=16, bias=False, vocab_size=vocab, dropout=0.0)
    state = {"_orig_mod." + k: v for k, v in model.state_dict().items()}
    torch.save({"model": state, "optimizer": {}, "model_args": model_args, "iter_num": 250,
                "best_val_loss": 1.5, "config": {"dataset": "shakespeare_char"}}, path)
    return model


def test_init_from_starts_from_the_checkpoints_weights(tmp_path, shakespeare):
    vocab = len(set(TRAIN_TEXT + VAL_TEXT))
    ckpt = tmp_path / "out" / "ckpt.pt"
    ckpt.parent.mkdir()
    theirs = nanogpt_checkpoint(ckpt, vocab)
    cfg = cfg_for(tmp_path, shakespeare, init_from=str(ckpt), log_every=1)
    parts = build_parts(cfg)
    for k, v in theirs.state_dict().items():
        assert torch.equal(parts.model.state_dict()[k], v), k
    x, y = parts.sampler.next()  # the first batch the run draws (the sampler is seeded)
    with torch.no_grad():
        expected = calc_loss_batch(theirs.eval(), x, y).item()
    run = tmp_path / "r"
    assert cli.main(["train", "--headless", "--data", str(shakespeare), "--out", str(run), "--steps", "2",
                     "--eval-every", "2", "--log-every", "1", "--init-from", str(ckpt), *FLAGS]) == 0
    first = records(run, "train")[0]
    assert first["step"] == 1 and first["train_loss"] == pytest.approx(expected, rel=1e-5)
    assert records(run, "run_start")[0]["config"]["init_from"] == str(ckpt)
    # A resume continues from its own checkpoint, with the nanoGPT file gone.
    ckpt.unlink()
    assert cli.main(["train", "--headless", "--resume", str(run), "--steps", "4"]) == 0


def test_init_from_of_another_shape_is_one_line(tmp_path, shakespeare, capsys):
    vocab = len(set(TRAIN_TEXT + VAL_TEXT))
    ckpt = tmp_path / "ckpt.pt"
    nanogpt_checkpoint(ckpt, vocab)
    flags = [f if f != "32" else "64" for f in FLAGS]  # --n-embd 64
    assert cli.main(["train", "--headless", "--data", str(shakespeare), "--out", str(tmp_path / "r"),
                     "--init-from", str(ckpt), *flags]) != 0
    line = one_error_line(capsys)
    assert "--n-embd 32" in line and "--n-embd 64" in line
    assert not (tmp_path / "r").exists()
    torch.save({"model": {"lm_head.weight": torch.zeros(2)}, "model_args": {}}, ckpt)
    assert cli.main(["train", "--headless", "--data", str(shakespeare), "--out", str(tmp_path / "r"),
                     "--init-from", str(ckpt), *FLAGS]) != 0
    assert "--init-from" in one_error_line(capsys)
    buf = io.BytesIO()
    pickle.dump(Anything(), buf)
    ckpt.write_bytes(buf.getvalue())
    assert cli.main(["train", "--headless", "--data", str(shakespeare), "--out", str(tmp_path / "r"),
                     "--init-from", str(ckpt), *FLAGS]) != 0
    assert "cannot be read" in one_error_line(capsys)


NANOGPT_LOG = """\
Overriding config with config/train_shakespeare_char.py:
tokens per iteration will be: 16,384
found vocab_size = 65 (inside data/shakespeare_char/meta.pkl)
step 0: train loss 4.2874, val loss 4.2823
iter 0: loss 4.2649, time 29143.38ms, mfu -100.00%
iter 10: loss 3.2441, time 30.12ms, mfu 10.28%
iter 20: loss 2.7804, time 30.40ms, mfu 10.27%
step 250: train loss 1.9663, val loss 2.0652
saving checkpoint to out-shakespeare-char
iter 250: loss 2.0361, time 4021.58ms, mfu 10.18%
"""


def test_view_and_export_read_nanogpts_printed_log(tmp_path, capsys):
    log = tmp_path / "train.log"
    log.write_text(NANOGPT_LOG)
    series, counts = load_series(log)
    assert counts.bad == 0
    assert [(e.step, e.train, e.val) for e in series.evals] == [(0, 4.2874, 4.2823), (250, 1.9663, 2.0652)]
    assert series.step == 250
    out = tmp_path / "out.csv"
    assert cli.main(["export", str(log), "-o", str(out), "--records"]) == 0
    rows = out.read_text().splitlines()
    assert rows[0].split(",")[:4] == ["step", "nanogpt", "train_loss", "val_loss"]
    assert "10,train,3.2441" in out.read_text() and "250,eval,1.9663,2.0652" in out.read_text()
    capsys.readouterr()
    assert cli.main(["view", "--snap", str(log)]) == 0
    assert "best val 2.0652 @ 250" in capsys.readouterr().out

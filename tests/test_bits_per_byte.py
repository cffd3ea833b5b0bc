"""Validation bits per byte: nats over the val tokens ÷ ln 2 ÷ the UTF-8 bytes
they decode to, on every eval; ``bytes`` gives val ÷ ln 2; a .bin of ids
without a tokenizer has none; older logs without the field still read."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tui_trainer import cli
from tui_trainer.text.bits_per_byte import bits_per_byte, byte_lengths, bytes_per_token, eval_targets
from tui_trainer.logs import ReadCounts, effective_records, read_records
from tui_trainer.records import Eval, from_dict
from tui_trainer.run.log_writer import LOG_NAME
from tui_trainer.runs import scan
from tui_trainer.runs.rows import as_json, table

TINY = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--context-length", "16", "--batch-size", "4",
        "--eval-batches", "1", "--sample-tokens", "8", "--warmup-steps", "2", "--threads", "1"]


def train(out, *extra, steps=4, every=2):
    return cli.main(["train", "--headless", "--out", str(out), "--steps", str(steps), "--eval-every", str(every),
                     *TINY, *extra])


def evals(run_dir):
    stats = ReadCounts()
    recs = effective_records(read_records(run_dir / LOG_NAME, stats))
    return [r for r in recs if r["type"] == "eval"]


class ThreeTokens:
    """A tokenizer of three tokens: 'a' (1 byte), 'é' (2 bytes), '日' (3 bytes)."""

    vocab_size = 3
    pieces = ["a", "é", "日"]

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)

    def byte_lengths(self):
        return [len(p.encode()) for p in self.pieces]


def test_bits_per_byte_by_hand():
    val = np.array([0, 1, 2, 2, 0, 1, 1, 0, 2], dtype=np.uint16)
    # Context 4, two windows: the targets are val[1:9] = é 日 日 a é é a 日.
    targets = eval_targets(val, 4, rows=8)
    assert targets.tolist() == [1, 2, 2, 0, 1, 1, 0, 2]
    text_bytes = len(ThreeTokens().decode(targets.tolist()).encode("utf-8"))
    assert text_bytes == 2 + 3 + 3 + 1 + 2 + 2 + 1 + 3 == 17
    per_token = bytes_per_token(ThreeTokens(), targets)
    assert per_token == 17 / 8
    val_loss = 1.25  # nats per token
    total_nats = val_loss * 8
    assert bits_per_byte(val_loss, per_token) == pytest.approx(total_nats / math.log(2) / 17, rel=1e-12)
    # One window only: its targets alone are counted.
    assert eval_targets(val, 4, rows=1).tolist() == [1, 2, 2, 0]
    assert bits_per_byte(val_loss, None) is None and bits_per_byte(math.nan, 2.0) is None


def test_byte_level_bpe_counts_each_tokens_bytes():
    tokenizers = pytest.importorskip("tokenizers")
    from tui_trainer.text.tokenizer import train_bpe

    text = "le café est près du marché; 日本語のテキスト, naïve façade\n" * 40
    tok = train_bpe(text, 300, "bpe:300")
    lengths = byte_lengths(tok)
    probe = "un café à côté, 日本\n"
    ids = tok.encode(probe)
    assert int(np.asarray(lengths)[ids].sum()) == len(probe.encode("utf-8"))
    assert tokenizers  # the library the tokenizer comes from


def test_bytes_run_reports_val_over_ln2_and_ls_shows_it(tmp_path, capsys):
    run = tmp_path / "runs" / "b"
    assert train(run) == 0
    out = capsys.readouterr().out
    got = evals(run)
    assert len(got) == 2
    for e in got:
        assert e["val_bpb"] == pytest.approx(e["val_loss"] / math.log(2), rel=1e-12)
    assert f"bpb {got[-1]['val_bpb']:.4f}" in out  # the headless eval line
    (summary,) = scan(tmp_path / "runs")
    best = min(got, key=lambda e: e["val_loss"])
    assert as_json(summary, [])["best_bpb"] == pytest.approx(best["val_bpb"])
    head, row = table([summary], [])
    assert "bpb" in head.split() and f"{best['val_bpb']:.4f}" in row.split()
    csv = tmp_path / "b.csv"
    assert cli.main(["export", str(run), "-o", str(csv), "--records"]) == 0
    lines = csv.read_text().splitlines()
    col = lines[0].split(",").index("val_bpb")
    assert [float(ln.split(",")[col]) for ln in lines[1:] if ln.startswith("eval,")] == [e["val_bpb"] for e in got]


def test_ids_without_a_tokenizer_have_none_and_old_logs_read(tmp_path):
    ids = tmp_path / "ids.bin"
    np.random.default_rng(0).integers(0, 50, 4000).astype(np.uint16).tofile(ids)
    run = tmp_path / "runs" / "ids"
    assert train(run, "--data", str(ids)) == 0
    assert [e["val_bpb"] for e in evals(run)] == [None, None]
    # An older eval line, without the field, still reads (None), and the runs table says "-".
    old = {"type": "eval", "step": 5, "time": 1.7e9, "val_loss": 2.5, "train_loss": 2.4, "elapsed_s": 1.0}
    rec = from_dict(old)
    assert isinstance(rec, Eval) and rec.val_bpb is None
    log = run / LOG_NAME
    kept = [ln for ln in log.read_text().splitlines() if '"type":"eval"' not in ln]
    log.write_text("\n".join(kept + [json.dumps(old)]) + "\n")
    (summary,) = scan(tmp_path / "runs")
    assert summary.best_val == 2.5 and as_json(summary, [])["best_bpb"] is None
    assert table([summary], [])[1].split()[5] == "-"


async def test_the_eval_log_shows_bpb_once_a_run_has_it():
    from dataclasses import replace

    from uitools import FixedSource, fixed_records

    from tui_trainer.ui.app import DashboardApp
    from tui_trainer.ui.eval_log import EvalLog

    recs = [replace(r, val_bpb=r.val_loss / math.log(2)) if isinstance(r, Eval) else r for r in fixed_records()]
    app = DashboardApp(FixedSource(recs))
    async with app.run_test(size=(120, 40)) as pilot:  # the full layout: its eval pane has room for the time too
        await pilot.pause()
        log = app.query_one(EvalLog)
        assert [str(c.label) for c in log.columns.values()] == ["step", "train", "val", "bpb", "time"]
        last = [e for e in recs if isinstance(e, Eval)][-1]
        assert log.get_row_at(log.row_count - 1)[3].plain == f"{last.val_bpb:.4f}"
        await pilot.press("q")


def test_a_bpe_runs_bpb_is_the_hand_count_over_its_own_validation_text(tmp_path):
    """End to end: the val_bpb a bpe:N run records is its val loss ÷ ln 2 ÷ the
    UTF-8 bytes per token of the validation text's first eval windows, counted
    here from the run folder's tokenizer.json and the last 10% of the file."""
    tokenizers = pytest.importorskip("tokenizers")
    rng = np.random.default_rng(3)
    words = "the river stone café naïve 日本 garden étude window morning".split()
    text = "\n".join(" ".join(rng.choice(words, 9)) for _ in range(1200)) + "\n"
    data = tmp_path / "prose.txt"
    data.write_text(text, encoding="utf-8")
    run = tmp_path / "r"
    assert train(run, "--data", str(data), "--tokenizer", "bpe:300") == 0
    raw = data.read_bytes()
    cut = len(raw) - int(len(raw) * 0.1)
    while raw[cut] & 0xC0 == 0x80:  # the split moves off a UTF-8 continuation byte
        cut += 1
    tok = tokenizers.Tokenizer.from_file(str(run / "tokenizer.json"))
    ids = tok.encode(raw[cut:].decode("utf-8"), add_special_tokens=False).ids
    # A byte-level BPE writes each byte of a token as one character: a token's
    # bytes are its string's length (decoding a run of tokens instead would turn
    # a character cut at either end into a 3-byte replacement mark).
    assert sum(len(tok.id_to_token(i)) for i in ids) == len(raw) - cut  # the rule, checked on the whole split
    targets = ids[1:1 * 4 * 16 + 1]  # --eval-batches 1 x --batch-size 4 windows of 16, shifted by one
    n_bytes = sum(len(tok.id_to_token(i)) for i in targets)
    assert n_bytes > len(targets)  # word pieces: more than a byte a token
    got = evals(run)
    assert len(got) == 2
    for e in got:
        assert e["val_bpb"] == pytest.approx(e["val_loss"] * len(targets) / math.log(2) / n_bytes, rel=1e-9)

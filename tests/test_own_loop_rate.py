"""An own loop's rate and ETA (issue 23): steps/s always, tokens/s and MFU
when it gives ``tokens`` or ``init`` a batch shape and ``model``; the status
line and the console line show them."""
from __future__ import annotations

import io
import math

import torch

import tui_trainer
from tui_trainer.run.console import ConsoleSink
from tui_trainer.logs import read_records
from tui_trainer.logs.formats.ours import typed_record


def _run(folder, steps: int = 12, tokens: bool = False, **init_kw) -> ConsoleSink:
    model = torch.nn.Linear(8, 8)
    run = tui_trainer.init(folder, total_steps=100, quiet=True, signals=False, model=model, **init_kw)
    x = torch.randn(4, 8)
    for step in range(1, steps + 1):
        model(x).sum().backward()
        extra = {"tokens": 32 * step} if tokens else {}
        run.log(step, train_loss=1.0 / step, lr=1e-3, **extra)
    run.finish()
    sink = ConsoleSink(log_every=1, stream=io.StringIO())
    for rec in read_records(folder / "losses.jsonl"):
        if rec.get("type") != "run_end":
            sink.emit(typed_record(rec))
    return sink


def test_steps_per_second_and_eta_without_tokens(tmp_path):
    sink = _run(tmp_path / "r")
    sps, tps = sink.series.rates()
    assert sps > 0 and math.isnan(tps)
    assert sink.series.eta_s() == sink.series.eta_s() and sink.series.eta_s() > 0
    last = sink.stream.getvalue().splitlines()[-1]
    assert "steps/s" in last and "tok/s" not in last and "ETA" in last


def test_tokens_per_second_from_logged_tokens(tmp_path):
    sink = _run(tmp_path / "r", tokens=True)
    _, tps = sink.series.rates()
    assert tps > 0
    last = sink.stream.getvalue().splitlines()[-1]
    assert "tok/s" in last and "steps/s" not in last and "- tok/s" not in last


def test_batch_shape_counts_tokens_and_gives_mfu(tmp_path, monkeypatch):
    monkeypatch.setattr("tui_trainer.train.hardware.peak_flops", lambda device, dtype="fp32", tf32=True: 1e15)
    sink = _run(tmp_path / "r", batch_shape=(4, 16))
    recs = read_records(tmp_path / "r" / "losses.jsonl")
    start = recs[0]
    assert start["tokens_per_step"] == 64 and start["flops_per_token"] == 6.0 * (8 * 8 + 8)
    assert start["peak_flops"] == 1e15
    train = [r for r in recs if r["type"] == "train"]
    assert [r["tokens"] for r in train] == [64 * r["step"] for r in train]
    _, tps = sink.series.rates()
    assert tps > 0 and sink.series.mfu() > 0
    assert "MFU" in sink.stream.getvalue().splitlines()[-1]


def test_tokens_per_step_overrides_batch_shape(tmp_path):
    _run(tmp_path / "r", steps=2, tokens_per_step=1000)
    recs = read_records(tmp_path / "r" / "losses.jsonl")
    assert recs[0]["tokens_per_step"] == 1000 and recs[0]["flops_per_token"] == 6.0 * (8 * 8 + 8)
    assert [r["tokens"] for r in recs if r["type"] == "train"] == [1000, 2000]


def _status(series, monkeypatch) -> str:
    from textual.geometry import Size

    from tui_trainer.ui.status_line import StatusLine

    shown: list[str] = []
    monkeypatch.setattr(StatusLine, "size", property(lambda self: Size(200, 4)))
    monkeypatch.setattr(StatusLine, "update", lambda self, text, **kw: shown.append(text.plain))
    StatusLine().show([series])
    return shown[-1]


def test_the_status_line_shows_steps_per_second_without_tokens(tmp_path, monkeypatch):
    line = _status(_run(tmp_path / "a").series, monkeypatch)
    assert "steps/s" in line and "- tok/s" not in line and "ETA -" not in line
    line = _status(_run(tmp_path / "b", tokens=True).series, monkeypatch)
    assert "tok/s" in line and "steps/s" not in line and "- tok/s" not in line

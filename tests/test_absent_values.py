"""A value never given is absent, not NaN (issue 23, item 4).

An own loop's eval that reports only val (and every Hugging Face eval) has
no train loss: it is written null without a ``nonfinite`` flag, read back as
None, and shown as ``–`` in the eval table and the toast, ``-`` in headless
lines to a file, an empty cell in the CSV; a real NaN is still flagged and
shown as ``nan``.
"""
from __future__ import annotations

import csv
import io
import json
import math
from types import SimpleNamespace

import pytest

import tui_trainer
from tui_trainer import cli
from tui_trainer.run.console import ConsoleSink
from tui_trainer.fmt import ABSENT
from tui_trainer.logs import load_series
from tui_trainer.logs.formats.ours import typed_record
from tui_trainer.records import from_dict
from tui_trainer.ui.viewer import FileSource, viewer_app
from tui_trainer.ui.eval_log import EvalLog
from uitools import until


def evals(folder) -> list[dict]:
    lines = (folder / "losses.jsonl").read_text().splitlines()
    return [d for d in map(json.loads, lines) if d["type"] == "eval"]


@pytest.fixture
def run_folder(tmp_path):
    """Through ``tui_trainer.init``: an eval with val only, then one whose train loss is NaN."""
    folder = tmp_path / "run"
    with tui_trainer.init(folder, quiet=True) as run:
        run.log(1, train_loss=2.0, lr=1e-3)
        run.log_eval(1, val_loss=0.0145)
        run.log(2, train_loss=1.5, lr=1e-3)
        run.log_eval(2, val_loss=0.5, train_loss=math.nan)
    return folder


def test_absent_is_written_null_unflagged_and_read_back_as_none(run_folder):
    given, nan = evals(run_folder)
    assert given["train_loss"] is None and "train_loss" not in given.get("nonfinite", [])
    assert nan["train_loss"] is None and "train_loss" in nan["nonfinite"]
    for read in (from_dict, typed_record):  # both readers of our records
        assert read(given).train_loss is None and math.isnan(read(nan).train_loss)
    series, counts = load_series(run_folder)
    assert counts.bad == 0 and series.evals[0].train is None and math.isnan(series.evals[1].train)


@pytest.mark.parametrize("terminal", [False, True])
def test_headless_lines_say_absent_and_nan_apart(run_folder, terminal):
    out = io.StringIO()
    out.isatty = lambda: terminal  # type: ignore[method-assign]
    sink = ConsoleSink(stream=out)
    for d in evals(run_folder):
        sink.emit(from_dict(d))
    first, second = out.getvalue().splitlines()
    assert f"train {ABSENT if terminal else '-'} | val 0.0145" in first and "nan" not in first
    assert "train nan | val 0.5000" in second


def test_csv_cell_of_an_absent_value_is_empty(run_folder, tmp_path, capsys):
    assert cli.main(["export", str(run_folder), "-o", str(tmp_path / "r.csv"), "--records"]) == 0
    rows = [r for r in csv.DictReader(open(tmp_path / "r.csv", newline="")) if r.get("type") == "eval"]
    assert [r["train_loss"] for r in rows] == ["", "nan"]


async def test_eval_table_and_toast_show_a_dash_for_absent(run_folder):
    src = FileSource([run_folder])
    src.prepare()
    app = viewer_app(src)
    async with app.run_test(size=(100, 30)) as pilot:
        log = app.query_one(EvalLog)
        await until(pilot, lambda: log.row_count == 2, "the eval rows")
        cells = [[c.plain for c in log.get_row_at(i)] for i in range(2)]
        assert cells[0][1].strip() == ABSENT and cells[1][1].strip() == "nan"
        app._answer(from_dict({**evals(run_folder)[0], "forced": True}))  # the toast a forced eval gets
        await until(pilot, lambda: app._notifications, "the toast")
        assert any(f"val 0.0145, train {ABSENT}" in str(n.message) for n in app._notifications)
        await pilot.press("q")
    src.close()


def test_hugging_face_eval_rows_have_no_train_loss(tmp_path):
    pytest.importorskip("transformers", reason="the [hf] extra")
    from tui_trainer.loops.huggingface import TuiTrainerCallback

    folder = tmp_path / "hf"
    with tui_trainer.init(folder, quiet=True) as run:
        callback = TuiTrainerCallback(run=run)
        state, control = SimpleNamespace(global_step=3), SimpleNamespace()
        callback.on_evaluate(None, state, control, metrics={"eval_loss": 1.25, "eval_runtime": 0.5})
    (ev,) = evals(folder)
    assert ev["val_loss"] == 1.25 and ev["train_loss"] is None and "nonfinite" not in ev
    series, _ = load_series(folder)
    assert series.evals[0].train is None

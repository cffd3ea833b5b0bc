"""export's curves CSV (one row per step, per-run train/val/lr/tokens/time),
``--records`` with JSON booleans, and the figures' markers and title (issue 23)."""
from __future__ import annotations

import csv
import json

import pytest
from runmaker import RunStart, append, append_train, write_run

from tui_trainer import cli
from tui_trainer.cli import export as export_mod
from tui_trainer.records import Change, Eval, TrainStep


def export(capsys, *args):
    code = cli.main(["export", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_default_csv_is_the_curves(tmp_path, capsys):
    run = write_run(tmp_path / "a", steps=20, eval_every=10)
    code, out, _ = export(capsys, run, "-o", tmp_path / "a.csv")
    assert code == 0 and "wrote 20 steps" in out and "--records" in out
    rows = read_csv(tmp_path / "a.csv")
    assert list(rows[0]) == ["step", "train_loss", "val_loss", "lr", "tokens", "elapsed_s"]
    assert [int(r["step"]) for r in rows] == list(range(1, 21))
    assert rows[9]["val_loss"] != "" and float(rows[9]["val_loss"]) == pytest.approx(float(rows[9]["train_loss"]) + 0.1)
    assert rows[0]["val_loss"] == ""  # no eval at step 1: empty, not nan
    assert rows[4]["tokens"] == "320" and float(rows[4]["elapsed_s"]) == 2.5 and float(rows[4]["lr"]) == 1e-3


def test_several_runs_side_by_side_by_step(tmp_path, capsys):
    a = write_run(tmp_path / "a", steps=10, eval_every=5)
    b = write_run(tmp_path / "b", steps=4, eval_every=5, end=None)
    code, _, _ = export(capsys, a, b, "-o", tmp_path / "ab.csv")
    rows = read_csv(tmp_path / "ab.csv")
    assert code == 0 and list(rows[0]) == ["step"] + [f"{r}.{c}" for r in "ab" for c in export_mod.CURVE_COLUMNS]
    assert len(rows) == 10 and rows[3]["b.train_loss"] != "" and rows[4]["b.train_loss"] == ""
    assert rows[4]["a.val_loss"] != "" and rows[4]["b.val_loss"] == ""


def test_curves_keep_nan_apart_from_absent_and_drop_superseded_steps(tmp_path, capsys):
    run = write_run(tmp_path / "r", steps=6, eval_every=100, end=None)
    append(run, TrainStep(step=7, train_loss=5.0, lr=1e-3, tokens_per_sec=1.0, grad_norm=1.0, elapsed_s=1.0),
           RunStart(step=5, run_name="r", config={}, n_params=1, device="cpu", total_steps=8, resumed=True))
    append_train(run, 6, 8)
    append(run, TrainStep(step=9, train_loss=float("inf"), lr=1e-3, tokens_per_sec=1.0, grad_norm=1.0,
                          elapsed_s=1.0),
           Eval(step=9, val_loss=2.0, train_loss=None, elapsed_s=5.0))
    code, _, _ = export(capsys, run, "-o", tmp_path / "r.csv")
    rows = read_csv(tmp_path / "r.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 10))
    assert rows[6]["train_loss"] == "1.0"  # the resumed session's step 7, not the superseded 5.0
    assert rows[8]["train_loss"] == "nan" and rows[8]["val_loss"] == "2.0" and rows[8]["elapsed_s"] == "1.0"


def test_records_write_json_booleans(tmp_path, capsys):
    run = write_run(tmp_path / "r", steps=3, eval_every=100, end=None)
    append(run, Eval(step=3, val_loss=2.0, train_loss=None, elapsed_s=2.0, forced=True))
    code, _, _ = export(capsys, run, "-o", tmp_path / "r.csv", "--records")
    rows = read_csv(tmp_path / "r.csv")
    assert code == 0 and rows[0]["type"] == "run_start" and rows[0]["resumed"] == "false"
    assert [r["forced"] for r in rows if r["type"] == "eval"] == ["true"]
    assert "True" not in (tmp_path / "r.csv").read_text() and "False" not in (tmp_path / "r.csv").read_text()


def test_records_is_for_a_csv(tmp_path, capsys):
    run = write_run(tmp_path / "r", steps=3)
    code, _, err = export(capsys, run, "-o", tmp_path / "r.png", "--records")
    assert code == 2 and "--records" in err and len(err.strip().splitlines()) == 1


def _marked_run(tmp_path):
    run = write_run(tmp_path / "run-20261201-153012-a-long-name", steps=10, eval_every=5, end=None)
    append(run, Change(step=4, key="lr_scale", old=1.0, new=0.5, source="user"),
           RunStart(step=5, run_name="run-20261201-153012-a-long-name", config={}, n_params=1, device="cpu",
                    total_steps=20, resumed=True))
    append_train(run, 6, 12)
    with open(run / "losses.jsonl", "a") as f:  # a record type this version does not know
        f.write(json.dumps({"type": "fork", "step": 8, "time": 1.7e9, "from": "x"}) + "\n")
        f.write(json.dumps({"type": "something_new", "step": 9, "time": 1.7e9}) + "\n")
    return run


def test_figure_marks_changes_resumes_and_forks(tmp_path):
    marks = export_mod.figure_marks(_marked_run(tmp_path) / "losses.jsonl")
    assert [(s, k) for s, k, _ in marks] == [(4, "change"), (5, "resume"), (8, "fork")]
    assert marks[0][2] == "lr_scale 1→0.5"


def test_svg_has_the_markers_and_the_full_names(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run = _marked_run(tmp_path)
    other = write_run(tmp_path / "run-20261201-153012-b-long-name", steps=10, eval_every=5)
    code, _, _ = export(capsys, run, other, "-o", tmp_path / "c.svg")
    text = (tmp_path / "c.svg").read_text()
    assert code == 0
    for label in ("run-20261201-153012-a-long-name", "run-20261201-153012-b-long-name", "resumed", "fork",
                  "lr_scale 1→0.5"):
        assert f"<!-- {label}" in text or label in text, label

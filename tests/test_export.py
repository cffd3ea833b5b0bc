"""tui-trainer export: CSV columns and rows, a PNG that is a PNG, an SVG that parses."""
from __future__ import annotations

import builtins
import csv
import xml.etree.ElementTree as ET

import pytest
from runmaker import RunStart, append, append_train, write_run

from tui_trainer import cli
from tui_trainer.records import TrainStep


def export(capsys, *args):
    code = cli.main(["export", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_one_row_per_record(tmp_path, capsys):
    run = write_run(tmp_path / "a", steps=20, eval_every=10)  # run_start, 20 train, 2 evals, 2 samples, run_end
    code, out, _ = export(capsys, run, "-o", tmp_path / "a.csv")
    assert code == 0 and "wrote 26 records" in out
    rows = read_csv(tmp_path / "a.csv")
    assert len(rows) == 26
    header = list(rows[0])
    assert header[:3] == ["type", "step", "time"] and "run" not in header
    assert {"train_loss", "lr", "val_loss", "tokens", "text", "status"} <= set(header)
    assert "config.max_lr" in header and header.index("config.max_lr") > header.index("train_loss")
    assert [r["type"] for r in rows].count("train") == 20
    evals = [r for r in rows if r["type"] == "eval"]
    assert [int(r["step"]) for r in evals] == [10, 20] and float(evals[0]["val_loss"]) == pytest.approx(3.1)
    assert rows[0]["config.max_lr"] == "0.001" and rows[1]["config.max_lr"] == ""


def test_csv_of_several_runs_has_a_run_column(tmp_path, capsys):
    a = write_run(tmp_path / "a", steps=10, eval_every=5, samples=False)
    b = write_run(tmp_path / "b", steps=4, eval_every=5, end=None)
    code, _, _ = export(capsys, a, b / "losses.jsonl", "-o", tmp_path / "ab.csv")
    rows = read_csv(tmp_path / "ab.csv")
    assert code == 0 and list(rows[0])[0] == "run"
    assert sum(r["run"] == "a" for r in rows) == 1 + 10 + 2 + 1 and sum(r["run"] == "b" for r in rows) == 1 + 4


def test_csv_nan_and_resumes(tmp_path, capsys):
    run = write_run(tmp_path / "r", steps=6, eval_every=100, end=None)
    append(run, TrainStep(step=7, train_loss=float("nan"), lr=1e-3, tokens_per_sec=1.0, grad_norm=1.0,
                          elapsed_s=1.0),
           RunStart(step=5, run_name="r", config={}, n_params=1, device="cpu", total_steps=8, resumed=True))
    append_train(run, 6, 8)
    append(run, TrainStep(step=9, train_loss=float("inf"), lr=1e-3, tokens_per_sec=1.0, grad_norm=1.0,
                          elapsed_s=1.0))
    code, _, _ = export(capsys, run, "-o", tmp_path / "r.csv")
    rows = read_csv(tmp_path / "r.csv")
    train = [r for r in rows if r["type"] == "train"]
    # The first session's steps 6 and 7 are superseded by the resume at 5.
    assert [int(r["step"]) for r in train] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert train[-1]["train_loss"] == "nan" and "nonfinite" not in rows[0]


def test_csv_to_stdout(tmp_path, capsys):
    run = write_run(tmp_path / "a", steps=3, eval_every=100)
    code, out, err = export(capsys, run, "-o", "-")
    assert code == 0 and out.splitlines()[0].startswith("type,step,time") and len(out.splitlines()) == 1 + 5
    assert "wrote 5 records" in err


def test_png_is_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    runs = [write_run(tmp_path / f"run-20261201-15301{i}", steps=30, eval_every=10) for i in range(3)]
    code, out, _ = export(capsys, *runs, "-o", tmp_path / "curves.png")
    assert code == 0 and "3 runs" in out
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_svg_parses(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run = write_run(tmp_path / "a", steps=30, eval_every=10)
    code, _, _ = export(capsys, run, "-o", tmp_path / "curves.svg")
    root = ET.parse(tmp_path / "curves.svg").getroot()
    assert code == 0 and root.tag.endswith("svg")


def test_without_matplotlib_one_line(tmp_path, capsys, monkeypatch):
    real = builtins.__import__

    def no_mpl(name, *a, **kw):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    run = write_run(tmp_path / "a", steps=3)
    code, _, err = export(capsys, run, "-o", tmp_path / "x.png")
    assert code == 2 and err.strip().count("\n") == 0
    assert "matplotlib" in err and "tui-trainer[plot]" in err and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("args, expect", [
    (["missing", "-o", "x.csv"], "does not exist"),
    (["RUN", "-o", "x.txt"], "export writes .csv, .png, .svg"),
])
def test_bad_arguments_one_line(tmp_path, capsys, args, expect):
    run = write_run(tmp_path / "a", steps=3)
    args = [str(run) if a == "RUN" else str(tmp_path / a) if a == "missing" else a for a in args]
    code, _, err = export(capsys, *args)
    assert code == 2 and expect in err and len(err.strip().splitlines()) == 1

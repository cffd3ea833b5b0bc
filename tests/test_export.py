"""tui-trainer export: CSV columns and rows, a PNG that is a PNG, an SVG that parses."""
from __future__ import annotations

import builtins
import csv
import errno
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from runmaker import RunStart, append, append_train, write_run

from tui_trainer import cli
from tui_trainer.cli import export as export_mod
from tui_trainer.logs import tail
from tui_trainer.records import TrainStep

ENV = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]) + os.pathsep
           + os.environ.get("PYTHONPATH", ""))


def export(capsys, *args):
    code = cli.main(["export", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_one_row_per_record(tmp_path, capsys):
    run = write_run(tmp_path / "a", steps=20, eval_every=10)  # run_start, 20 train, 2 evals, 2 samples, run_end
    code, out, _ = export(capsys, run, "-o", tmp_path / "a.csv", "--records")
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
    code, _, _ = export(capsys, a, b / "losses.jsonl", "-o", tmp_path / "ab.csv", "--records")
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
    code, _, _ = export(capsys, run, "-o", tmp_path / "r.csv", "--records")
    rows = read_csv(tmp_path / "r.csv")
    train = [r for r in rows if r["type"] == "train"]
    # The first session's steps 6 and 7 are superseded by the resume at 5.
    assert [int(r["step"]) for r in train] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert train[-1]["train_loss"] == "nan" and "nonfinite" not in rows[0]


def test_csv_to_stdout(tmp_path, capsys):
    run = write_run(tmp_path / "a", steps=3, eval_every=100)
    code, out, err = export(capsys, run, "-o", "-", "--records")
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


# --- the file export writes: never an input, whole or not at all ---------------------------------------

ALIASES = ["same", "dot", "absolute", "symlink", "hardlink", "folder"]


@pytest.mark.parametrize("fmt", ["csv", "png", "svg"])
@pytest.mark.parametrize("alias", ALIASES)
def test_export_refuses_its_own_input_under_every_alias(tmp_path, monkeypatch, capsys, fmt, alias):
    """The output is the input under another name: refused in one line, the input byte for byte as it was."""
    monkeypatch.chdir(tmp_path)
    run = write_run(tmp_path / "r", steps=5, eval_every=5)
    log = tmp_path / f"log.{fmt}"  # a log named like the output (cp losses.jsonl same.csv)
    log.write_bytes((run / "losses.jsonl").read_bytes())
    given, out = {
        "same": (f"log.{fmt}", f"log.{fmt}"),
        "dot": (f"log.{fmt}", f"./log.{fmt}"),
        "absolute": (f"log.{fmt}", str(log)),
        "symlink": (f"log.{fmt}", f"link.{fmt}"),
        "hardlink": (f"log.{fmt}", f"hard.{fmt}"),
        "folder": ("r", f"r.{fmt}"),  # the run folder given; the output a link to its losses.jsonl
    }[alias]
    if alias == "symlink":
        (tmp_path / out).symlink_to(log.name)
    elif alias == "hardlink":
        os.link(log, tmp_path / out)
    elif alias == "folder":
        os.link(run / "losses.jsonl", tmp_path / out)
    source = run / "losses.jsonl" if alias == "folder" else log
    before = source.read_bytes()
    code, out_text, err = export(capsys, given, "-o", out)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "is the input" in err and "pass another file name" in err and not out_text
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


@pytest.mark.parametrize("alias", ["same", "folder", "hardlink"])
def test_export_to_stdout_refuses_stdout_redirected_into_its_input(tmp_path, alias):
    """``export LOG -o - >> LOG`` (or >> a link to it) would read what it writes."""
    run = write_run(tmp_path / "r", steps=5, eval_every=5)
    log = run / "losses.jsonl"
    before = log.read_bytes()
    if alias == "hardlink":
        os.link(log, tmp_path / "h.csv")
    with open(tmp_path / "h.csv" if alias == "hardlink" else log, "ab") as stdout:
        p = subprocess.run([sys.executable, "-m", "tui_trainer", "export", str(run if alias == "folder" else log),
                            "-o", "-"], stdout=stdout, stderr=subprocess.PIPE, env=ENV, timeout=60)
    assert p.returncode == 2 and p.stderr.decode().startswith("error: -o - writes to standard output, which is")
    assert log.read_bytes() == before


def test_export_to_a_closed_stdout_is_one_line(tmp_path):
    run = write_run(tmp_path / "r", steps=3)
    p = subprocess.run(["sh", "-c", '"$0" -m tui_trainer export "$1" -o - >&-', sys.executable, str(run)],
                       capture_output=True, env=ENV, timeout=60)
    err = p.stderr.decode()
    assert p.returncode != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: -o - writes to standard output, which is closed")


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, capsys, monkeypatch):
    run = write_run(tmp_path / "r", steps=5)
    target = tmp_path / "old.csv"
    target.write_text("precious\n")
    target.chmod(0o640)
    real = export_mod._effective

    def disk_full(log, cut):
        it = real(log, cut)
        yield next(it)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_mod, "_effective", disk_full)
    code, _, err = export(capsys, run, "-o", target)
    assert code == 1 and "No space left" in err
    assert target.read_text() == "precious\n" and sorted(p.name for p in tmp_path.iterdir()) == ["old.csv", "r"]
    monkeypatch.setattr(export_mod, "_effective", real)
    code, out, _ = export(capsys, run, "-o", target, "--records")  # and a good write replaces it, keeping its mode
    assert code == 0 and read_csv(target)[0]["type"] == "run_start" and (target.stat().st_mode & 0o777) == 0o640


def test_an_output_through_a_link_writes_the_linked_file(tmp_path, capsys):
    run = write_run(tmp_path / "r", steps=3)
    (tmp_path / "old.csv").write_text("old\n")
    (tmp_path / "link.csv").symlink_to("old.csv")
    code, _, _ = export(capsys, run, "-o", tmp_path / "link.csv", "--records")
    assert code == 0 and (tmp_path / "link.csv").is_symlink() and read_csv(tmp_path / "old.csv")[0]["step"] == "0"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write any file")
def test_a_read_only_output_is_not_replaced(tmp_path, capsys):
    run = write_run(tmp_path / "r", steps=3)
    (tmp_path / "ro.csv").write_text("keep\n")
    (tmp_path / "ro.csv").chmod(0o444)
    code, _, err = export(capsys, run, "-o", tmp_path / "ro.csv")
    assert code == 2 and "permission denied" in err and (tmp_path / "ro.csv").read_text() == "keep\n"


def test_a_symlink_loop_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.symlink("b", "a")
    os.symlink("a", "b")
    for args in (["export", "a", "-o", "x.csv"], ["view", "a"], ["view", "a", "--follow"],
                 ["export", "a/losses.jsonl", "-o", "x.csv"]):
        code = cli.main(args)
        err = capsys.readouterr().err
        assert code == 2 and "symbolic link loop" in err and "does not exist" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("fmt", ["csv", "png"])
def test_a_log_with_no_readable_record_is_an_error_not_an_empty_table(tmp_path, capsys, monkeypatch, fmt):
    """A one-line log past the line cap (a 1 GB line; here the cap is made 64 KB so a few MB do) reads
    no record: say so in one line and exit non-zero, never ``wrote 0 records``."""
    if fmt == "png":
        pytest.importorskip("matplotlib")
    monkeypatch.setattr(tail, "MAX_LINE", 64 << 10)
    log = tmp_path / "big.jsonl"
    with open(log, "w") as f:
        f.write('{"type": "train", "step": 1, "pad": "')
        f.write("a" * (tail.CHUNK + (1 << 20)))
        f.write('"}\n')
    code, out, err = export(capsys, log, "-o", tmp_path / f"big.{fmt}")
    assert code == 2 and "no record in" in err and "could be read" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / f"big.{fmt}").exists()
    (tmp_path / "empty.jsonl").write_text("")
    code, _, err = export(capsys, tmp_path / "empty.jsonl", "-o", tmp_path / f"e.{fmt}")
    assert code == 2 and "is empty" in err


def test_export_into_a_pipe_its_reader_closed_leaves_quietly(tmp_path):
    """`export RUN -o - | head -1`: the reader leaves early; export ends as a
    tool a closed pipe stopped (141), with nothing on stderr (it said
    `error: Broken pipe; check that path, its permissions and free space`)."""
    run = write_run(tmp_path / "a", steps=3000, eval_every=100)  # far more than a pipe's buffer
    p = subprocess.Popen([sys.executable, "-m", "tui_trainer", "export", str(run), "-o", "-", "--records"], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline().startswith(b"type,step,time")
    p.stdout.close()  # as head does after its line
    err = p.stderr.read()
    assert p.wait(timeout=60) == 141
    assert err == b""

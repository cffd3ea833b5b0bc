"""runs.py: a folder of runs summarised from heads, tails and eval lines; labels; the settings diff."""
from __future__ import annotations

import math
import os

import pytest
from runmaker import (
    Change,
    Eval,
    RunEnd,
    RunStart,
    append,
    append_train,
    live,
    write_run,
)

from tui_trainer.runs import Scanner, scan, settings_diff, short_labels
from tui_trainer.runs import scanner as scan_module


def by_folder(summaries):
    return {s.folder: s for s in summaries}


def test_statuses_from_the_lock_and_the_log(tmp_path):
    write_run(tmp_path / "done", 20)
    write_run(tmp_path / "crash", 20, end=None)
    write_run(tmp_path / "div", 20, end="diverged")
    write_run(tmp_path / "stop", 20, end="stopped")
    going = write_run(tmp_path / "going", 20, end=None)
    held = write_run(tmp_path / "held", 20, end=None, pause=True)
    locks = [live(going), live(held)]
    try:
        got = {k: s.status for k, s in by_folder(scan(tmp_path)).items()}
    finally:
        for lk in locks:
            lk.release()
    assert got == {"done": "finished", "crash": "crashed", "div": "diverged", "stop": "stopped",
                   "going": "running", "held": "paused"}
    # The lock is gone: the same logs now read as crashed, never guessed running.
    assert by_folder(scan(tmp_path))["going"].status == "crashed"


def test_a_resumed_session_after_a_run_end_is_not_ended(tmp_path):
    run = write_run(tmp_path / "r", 10, end="stopped")
    append(run, RunStart(step=10, run_name="r", config={"steps": 30}, n_params=1, device="cpu",
                         total_steps=30, resumed=True))
    append_train(run, 11, 12)
    s = scan(tmp_path)[0]
    assert s.status == "crashed" and s.step == 12 and s.total_steps == 30


def test_figures_of_a_run(tmp_path):
    write_run(tmp_path / "a", 100, eval_every=10, start_time=1.7e9,
              loss=lambda s: 3.0 if s != 60 else 1.0)  # the best eval is at step 60
    s = scan(tmp_path)[0]
    assert (s.step, s.total_steps, s.tokens, s.elapsed_s) == (100, 100, 6400, 50.0)
    assert s.best_val == pytest.approx(1.1) and s.best_step == 60 and s.evals_read
    assert s.train_loss == 3.0 and s.started == 1.7e9 and s.config["max_lr"] == 1e-3
    assert s.run_name == "a" and s.label == "a" and s.ok and not s.foreign


def test_best_val_leaves_out_what_a_resume_superseded(tmp_path):
    run = write_run(tmp_path / "r", 20, eval_every=10, end=None, loss=lambda s: 3.0)
    append(run, Eval(step=25, val_loss=0.5, train_loss=0.5, elapsed_s=1.0),  # trained after the checkpoint, then lost
           RunStart(step=20, run_name="r", config={}, n_params=1, device="cpu", total_steps=40, resumed=True),
           Eval(step=25, val_loss=2.0, train_loss=2.0, elapsed_s=1.0))
    s = scan(tmp_path)[0]
    assert s.best_val == 2.0 and s.best_step == 25


def test_a_change_of_steps_sets_the_total(tmp_path):
    run = write_run(tmp_path / "r", 20, end=None)
    append(run, Change(step=20, key="steps", old=20, new=500))
    append_train(run, 21, 22)
    assert scan(tmp_path)[0].total_steps == 500


def test_folders_that_are_not_runs_say_why(tmp_path, monkeypatch):
    write_run(tmp_path / "ok", 5)
    (tmp_path / "no-log").mkdir()
    (tmp_path / "binary").mkdir()
    (tmp_path / "binary" / "losses.jsonl").write_bytes(b"\0\1\2" * 100)
    write_run(tmp_path / "denied", 5)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "a-file").write_text("x")
    real = os.open

    def deny(path, *a, **kw):  # tests run as root, where chmod does not stop a read
        if "denied" in os.fsdecode(path) and os.fsdecode(path).endswith("losses.jsonl"):
            raise PermissionError(13, "Permission denied", path)
        return real(path, *a, **kw)

    monkeypatch.setattr(os, "open", deny)
    got = by_folder(scan(tmp_path))
    assert set(got) == {"ok", "no-log", "binary", "denied"}
    assert got["ok"].ok and got["no-log"].problem == "no losses.jsonl"
    assert got["binary"].problem == "losses.jsonl is a binary file"
    assert got["denied"].problem == "cannot read: permission denied" and not got["denied"].ok


def test_a_name_that_is_not_utf8_is_listed(tmp_path):
    raw = os.fsencode(tmp_path) + b"/lr-\xff"
    write_run(os.fsdecode(raw), 5)
    s = scan(tmp_path)[0]
    assert s.ok and s.status == "finished" and s.folder == "lr-\\xff"
    assert s.folder.encode("utf-8")  # printable, encodable


def test_empty_and_foreign_logs(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "losses.jsonl").write_text("")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "losses.jsonl").write_text(
        '{"loss": 2.5, "learning_rate": 1e-4, "step": 10}\n{"eval_loss": 2.2, "step": 10}\n'
        '{"loss": 2.0, "learning_rate": 1e-4, "step": 20}\n{"eval_loss": 1.9, "step": 20}\n'
        '{"train_runtime": 12.0, "train_loss": 2.2, "step": 20}\n')
    got = by_folder(scan(tmp_path))
    assert got["empty"].status == "empty" and got["empty"].ok
    hf = got["hf"]
    assert hf.status == "log" and hf.foreign and hf.step == 20 and hf.train_loss == 2.0
    assert hf.best_val == 1.9 and hf.best_step == 20


def test_rescan_reads_only_what_changed(tmp_path, monkeypatch):
    a = write_run(tmp_path / "a", 30, end=None)
    write_run(tmp_path / "b", 30)
    scanner = Scanner(tmp_path)
    assert [s.folder for s in scanner.scan()] == ["a", "b"]
    reads = []
    real = scan_module._read
    monkeypatch.setattr(scan_module, "_read", lambda e, *a: (reads.append(e.summary.folder), real(e, *a)))
    scanner.scan()
    assert reads == []  # nothing changed: nothing read
    searched = scanner._entries[b"a"].scanned
    append(a, Eval(step=31, val_loss=0.25, train_loss=0.3, elapsed_s=1.0))
    append_train(a, 31, 32)
    write_run(tmp_path / "c", 5)  # a new folder appears
    got = by_folder(scanner.scan())
    assert sorted(reads) == ["a", "c"] and set(got) == {"a", "b", "c"}
    assert got["a"].step == 32 and got["a"].best_val == 0.25 and got["a"].best_step == 31
    assert scanner._entries[b"a"].scanned > searched  # searched on from where it stopped
    append(a, RunEnd(step=32, status="finished", elapsed_s=16.0))
    assert by_folder(scanner.scan())["a"].status == "finished"


def test_a_quick_scan_leaves_evals_for_later(tmp_path):
    write_run(tmp_path / "a", 30)
    scanner = Scanner(tmp_path)
    quick = scanner.scan(evals=False)[0]
    assert not quick.evals_read and math.isnan(quick.best_val) and quick.status == "finished"
    full = scanner.scan()[0]
    assert full.evals_read and full.best_val == pytest.approx(2.1)


def test_a_truncated_log_is_searched_again(tmp_path):
    a = write_run(tmp_path / "a", 30)
    scanner = Scanner(tmp_path)
    assert scanner.scan()[0].best_val == pytest.approx(2.1)
    (a / "losses.jsonl").unlink()
    write_run(a, 10, loss=lambda s: 9.0)
    assert scanner.scan()[0].best_val == pytest.approx(9.1)


def test_the_tail_only_is_read_for_the_listing(tmp_path, monkeypatch):
    write_run(tmp_path / "big", 3000, eval_every=100)
    size = (tmp_path / "big" / "losses.jsonl").stat().st_size
    read = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: (read.append(n), real(fd, n, off))[1])
    s = Scanner(tmp_path).scan(evals=False)[0]
    assert s.step == 3000 and s.status == "finished"
    assert sum(read) < size / 2


@pytest.mark.parametrize("names, expect", [
    (["run-20261201-153012", "run-20261201-160233"], ["153012", "160233"]),
    (["run-20261201-153012", "run-20261202-153012"], ["20261201", "20261202"]),
    (["gpt-lr3e-4-bs32", "gpt-lr1e-3-bs32"], ["lr3e-4", "lr1e-3"]),
    (["run-3", "run-4"], ["run-3", "run-4"]),
    (["run-20261201-153012", "run-20261201-153012-2"], ["153012", "153012-2"]),
    (["same", "same"], ["same", "same#2"]),
    (["only-one-long-name-here"], ["…g-name-here"]),
])
def test_labels_are_short_and_distinct(names, expect):
    assert short_labels(names) == expect


def test_labels_use_the_name_given_at_train_time(tmp_path):
    write_run(tmp_path / "run-20261201-153012", 5, name="baseline")
    write_run(tmp_path / "run-20261201-160233", 5, name="wide")
    assert sorted(s.label for s in scan(tmp_path)) == ["baseline", "wide"]


def test_settings_diff_lists_only_what_differs(tmp_path):
    write_run(tmp_path / "a", 5, config=dict(max_lr=1e-3, dropout=0.0))
    write_run(tmp_path / "b", 5, config=dict(max_lr=3e-3, dropout=0.0))
    write_run(tmp_path / "c", 5, config=dict(max_lr=3e-3, dropout=0.0, extra_key=1))
    diff = settings_diff(scan(tmp_path))
    assert diff == {"max_lr": [1e-3, 3e-3, 3e-3], "extra_key": [None, None, 1]}

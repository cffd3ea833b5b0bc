"""The CLI end to end: a short run, and every bad input named in the issue."""
import json
import os

import pytest

from tui_trainer import cli

TINY_FLAGS = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--context-length", "16",
              "--batch-size", "8", "--eval-batches", "2", "--sample-tokens", "8", "--log-every", "10"]


def run_cli(args, capsys):
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def strict(line):
    def reject(name):
        raise ValueError(name)

    return json.loads(line, parse_constant=reject)


def test_short_headless_run_writes_strict_jsonl_and_loss_falls(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(["train", "--headless", "--steps", "80", "--eval-every", "40", "--warmup-steps", "10",
                              "--max-lr", "3e-3", "--out", str(out_dir), *TINY_FLAGS], capsys)
    assert code == 0, err
    lines = (out_dir / "losses.jsonl").read_text().splitlines()
    recs = [strict(l) for l in lines]  # every line parses with a strict parser
    assert recs[0]["type"] == "run_start" and recs[-1]["type"] == "run_end"
    assert recs[-1]["status"] == "finished"
    train = [r for r in recs if r["type"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 81))
    for r in train:
        assert {"step", "train_loss", "lr", "tokens_per_sec", "grad_norm", "elapsed_s"} <= r.keys()
    first = sum(r["train_loss"] for r in train[:10]) / 10
    last = sum(r["train_loss"] for r in train[-10:]) / 10
    assert last < first - 0.5
    evals = [r for r in recs if r["type"] == "eval"]
    assert [e["step"] for e in evals] == [40, 80]
    assert all(e["val_loss"] > 0 and e["train_loss"] > 0 for e in evals)
    samples = [r for r in recs if r["type"] == "sample"]
    assert len(samples) == 2 and all(s["text"].startswith("def ") for s in samples)
    assert (out_dir / "latest.pt").exists()
    # the headless printer: plain lines, no carriage returns
    assert "\r" not in out
    assert "step     80/80 | loss" in out and "eval     80 | train" in out and "sample   80 | def " in out


def test_config_file_keys_and_flags_override(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('steps = 5\neval-every = 5\nwarmup_steps = 1\nsample_prompt = "x"\n')
    out_dir = tmp_path / "run"
    code, out, err = run_cli(["train", "--headless", "--config", str(cfg), "--steps", "6", "--out", str(out_dir),
                              *TINY_FLAGS], capsys)
    assert code == 0, err
    start = strict((out_dir / "losses.jsonl").read_text().splitlines()[0])
    assert start["config"]["steps"] == 6 and start["config"]["eval_every"] == 5
    assert start["config"]["sample_prompt"] == "x"


def test_fresh_run_folders_are_created_under_outputs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        code, _, err = run_cli(["train", "--headless", "--steps", "2", "--eval-every", "2", "--warmup-steps", "0",
                                "--name", "same", *TINY_FLAGS], capsys)
        assert code == 0, err
    assert sorted(os.listdir(tmp_path / "outputs")) == ["same", "same-2"]


def test_text_file_data_trains_on_its_bytes(tmp_path, capsys):
    data = tmp_path / "poem.txt"
    data.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    out_dir = tmp_path / "run"
    code, _, err = run_cli(["train", "--headless", "--data", str(data), "--steps", "30", "--eval-every", "30",
                            "--warmup-steps", "2", "--sample-prompt", "the ", "--out", str(out_dir), *TINY_FLAGS], capsys)
    assert code == 0, err
    sample = [strict(l) for l in (out_dir / "losses.jsonl").read_text().splitlines() if '"sample"' in l][-1]
    assert set(sample["text"]) <= set(data.read_text())


def test_bin_token_file_is_memory_mapped(tmp_path, capsys):
    import numpy as np

    data = tmp_path / "tokens.bin"
    (np.arange(4000) % 700).astype(np.uint16).tofile(data)
    out_dir = tmp_path / "run"
    code, _, err = run_cli(["train", "--headless", "--data", str(data), "--vocab-size", "1000", "--steps", "4",
                            "--eval-every", "4", "--warmup-steps", "1", "--sample-prompt", "5 6", "--out", str(out_dir),
                            *TINY_FLAGS], capsys)
    assert code == 0, err
    start = strict((out_dir / "losses.jsonl").read_text().splitlines()[0])
    assert start["config"]["vocab_size"] == 1000
    sample = [strict(l) for l in (out_dir / "losses.jsonl").read_text().splitlines() if '"sample"' in l][-1]
    assert all(0 <= int(t) < 1000 for t in sample["text"].split())


def _bad_cases(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    short = tmp_path / "short.txt"
    short.write_text("x" * 16)  # one context window, not one plus one
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("steps = = 3\n")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("stepz = 3\n")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "losses.jsonl").write_text('{"type":"run_start","step":0}\n')
    (tmp_path / "no-files").mkdir()  # a folder of text files is data (corpus_sources); one with none is not
    return {
        "missing data": (["--data", str(tmp_path / "nope.txt")], "not found"),
        "empty data": (["--data", str(empty)], "empty"),
        "directory as data": (["--data", str(tmp_path / "no-files")], "directory with no files"),
        "too short": (["--data", str(short)], "context window"),
        "zero steps": (["--steps", "0"], "--steps"),
        "negative steps": (["--steps", "-3"], "--steps"),
        "warmup > steps": (["--steps", "10", "--warmup-steps", "20"], "warmup"),
        "min_lr > max_lr": (["--max-lr", "1e-3", "--min-lr", "1e-2"], "min-lr"),
        "heads not dividing width": (["--n-head", "3"], "n-head"),
        "unknown config key": (["--config", str(unknown)], "unknown config key"),
        "malformed toml": (["--config", str(bad_toml)], "not valid TOML"),
        "existing run as --out": (["--out", str(existing)], "already holds a run"),
        "not a number": (["--steps", "ten"], "invalid int"),
    }


BAD_CASES = ["missing data", "empty data", "directory as data", "too short", "zero steps", "negative steps",
             "warmup > steps", "min_lr > max_lr", "heads not dividing width", "unknown config key",
             "malformed toml", "existing run as --out", "not a number"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_error_and_writes_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, needle = _bad_cases(tmp_path)[case]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    existing_log = (tmp_path / "existing" / "losses.jsonl").read_bytes()
    out_args = [] if "--out" in args else ["--out", str(tmp_path / "new-run")]
    code, out, err = run_cli(["train", "--headless", *TINY_FLAGS, *args, *out_args], capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0]
    assert "Traceback" not in err
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before  # nothing written: no run folder, no outputs/
    assert (tmp_path / "existing" / "losses.jsonl").read_bytes() == existing_log


def test_resume_from_is_the_lessons_name_for_resume(tmp_path, capsys):
    out_dir = tmp_path / "run"
    base = ["train", "--headless", "--eval-every", "5", "--warmup-steps", "1", *TINY_FLAGS]
    code, _, err = run_cli([*base, "--steps", "5", "--out", str(out_dir)], capsys)
    assert code == 0, err
    code, out, err = run_cli([*base, "--steps", "8", "--resume-from", str(out_dir)], capsys)
    assert code == 0, err
    recs = [strict(l) for l in (out_dir / "losses.jsonl").read_text().splitlines()]
    starts = [r for r in recs if r["type"] == "run_start"]
    assert len(starts) == 2 and starts[1]["resumed"] and starts[1]["step"] == 5
    assert [r["step"] for r in recs if r["type"] == "train"] == list(range(1, 9))


def test_best_checkpoint_is_kept_when_seen_not_only_on_checkpoint_steps(tmp_path, capsys):
    import torch

    out_dir = tmp_path / "run"
    code, _, err = run_cli(["train", "--headless", "--steps", "30", "--eval-every", "10", "--checkpoint-every", "1000",
                            "--warmup-steps", "2", "--out", str(out_dir), *TINY_FLAGS], capsys)
    assert code == 0, err
    recs = [strict(l) for l in (out_dir / "losses.jsonl").read_text().splitlines()]
    evals = {r["step"]: r["val_loss"] for r in recs if r["type"] == "eval"}
    best_step = min(evals, key=evals.get)
    saved = [(r["step"], r["reason"]) for r in recs if r["type"] == "checkpoint"]
    assert ("best" in {why for _, why in saved}) or best_step == 30
    state = torch.load(out_dir / "best.pt", weights_only=True)
    assert state["step"] == best_step
    assert state["best_val"] == evals[best_step]


@pytest.mark.parametrize("stdin_tty, stdout_tty, background, headless, noted, live", [
    (False, True, False, False, "standard input is not a terminal", False),  # < /dev/null in a terminal
    (True, True, True, False, "started in the background (&)", False),  # cmd &: the shell stops a dashboard
    (True, True, False, False, "", True),    # both ends a terminal: the dashboard
    (False, True, False, True, "", False),   # --headless: asked for, nothing to say
    (True, True, True, True, "", False),
    (True, False, False, False, "", False),  # > file: no screen to say it on
])
def test_train_with_no_keyboard_says_why_there_is_no_dashboard(stdin_tty, stdout_tty, background, headless, noted,
                                                              live, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(cli, "train_headless", lambda args: ran.append("headless") or 0)
    monkeypatch.setattr(cli, "train_live", lambda args: ran.append("live") or 0)
    monkeypatch.setattr(cli.sys.stdin, "isatty", lambda: stdin_tty)
    monkeypatch.setattr(cli.sys.stdout, "isatty", lambda: stdout_tty)
    monkeypatch.setattr(cli, "_in_background", lambda: background)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args = cli.build_parser().parse_args(["train", "--steps", "3"] + (["--headless"] if headless else []))
    assert cli.cmd_train(args) == 0
    assert ran == ["live" if live else "headless"]
    err = capsys.readouterr().err
    assert (noted and noted in err and "so no dashboard" in err and err.count("\n") == 1) or (not noted and not err), err


def test_in_background_asks_the_terminal_whose_job_has_it(monkeypatch):
    monkeypatch.setattr(cli.sys.stdin, "fileno", lambda: 0)
    monkeypatch.setattr(os, "getpgrp", lambda: 100)
    monkeypatch.setattr(os, "tcgetpgrp", lambda fd: 100)
    assert cli._in_background() is False
    monkeypatch.setattr(os, "tcgetpgrp", lambda fd: 200)
    assert cli._in_background() is True

    def no_terminal(fd):
        raise OSError(25, "Inappropriate ioctl for device")

    monkeypatch.setattr(os, "tcgetpgrp", no_terminal)
    assert cli._in_background() is False

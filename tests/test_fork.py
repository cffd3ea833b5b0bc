"""train --fork RUN[@STEP]: a new run from another run's checkpoint."""
from __future__ import annotations

import csv
import json
import hashlib
import pytest
import torch

from tui_trainer.run import checkpoint as ckpt
from tui_trainer import cli
from tui_trainer.logs import ReadCounts, effective_records, read_records
from tui_trainer.run.folder import LOCK_NAME
from tui_trainer.run.log_writer import LOG_NAME

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--context-length", "8", "--batch-size", "2",
        "--eval-batches", "1", "--sample-tokens", "4", "--threads", "1", "--warmup-steps", "2",
        "--dropout", "0.1"]  # dropout: the torch RNG must continue exactly too
STEPS = 12


def train(*args):
    return cli.main(["train", "--headless", *args])


def records(run_dir):
    stats = ReadCounts()
    recs = effective_records(read_records(run_dir / LOG_NAME, stats))
    assert stats.bad == 0
    return recs


def losses(run_dir):
    return {r["step"]: r["train_loss"] for r in records(run_dir) if r["type"] == "train"}


def run_start(run_dir):
    return next(r for r in records(run_dir) if r["type"] == "run_start")


def folder_bytes(folder):
    """Every file's bytes (the lock's contents aside: a reader may not write it, but it is no data)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and p.name != LOCK_NAME}


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    out = tmp_path_factory.mktemp("fork") / "parent"
    n = torch.get_num_threads()
    try:
        assert train("--out", str(out), "--steps", str(STEPS), "--eval-every", "4", "--keep", "5", *TINY) == 0
    finally:
        torch.set_num_threads(n)
    return out


def weights(path):
    return ckpt.load_checkpoint(path)["model"]


def test_fork_without_changes_is_the_parents_continuation(parent, tmp_path):
    before = folder_bytes(parent)
    fork = tmp_path / "fork"
    assert train("--fork", f"{parent}@4", "--out", str(fork)) == 0
    mine, theirs = losses(fork), losses(parent)
    assert sorted(mine) == list(range(5, STEPS + 1))  # only its own steps
    assert mine == {s: theirs[s] for s in mine}  # bitwise: the same floats
    a, b = weights(fork / ckpt.LATEST), weights(parent / ckpt.LATEST)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert folder_bytes(parent) == before  # the parent is only read
    start = run_start(fork)
    p = start["parent"]
    assert p["folder"] == str(parent.resolve()) and p["name"] == "parent" and p["step"] == 4
    assert p["changes"] == {} and p["fingerprint"] == ckpt.load_checkpoint(parent / ckpt.LATEST)["data_fingerprint"]
    assert (fork / p["checkpoint"]).is_file() and start["step"] == 4


def test_fork_with_a_new_max_lr_runs_and_records_it(parent, tmp_path, capsys):
    fork = tmp_path / "half"
    assert train("--fork", f"{parent}@8", "--out", str(fork), "--max-lr", "5e-3") == 0
    said = capsys.readouterr().out
    assert f"forked from parent@8 ({parent.resolve()}) | max_lr 0.01 -> 0.005" in said and "fork half |" in said
    p = run_start(fork)["parent"]
    assert p["step"] == 8 and p["changes"] == {"max_lr": [1e-2, 5e-3]}
    lr = {r["step"]: r["lr"] for r in records(fork) if r["type"] == "train"}
    theirs = {r["step"]: r["lr"] for r in records(parent) if r["type"] == "train"}
    assert sorted(lr) == list(range(9, STEPS + 1))
    assert all(abs(lr[s] - theirs[s] / 2) <= 1e-12 for s in lr)  # min_lr follows (10% of max_lr)


def test_no_checkpoint_at_step_lists_the_steps_that_have_one(parent, tmp_path, capsys):
    out = tmp_path / "x"
    assert train("--fork", f"{parent}@5", "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no checkpoint at step 5" in err and "4, 8, 12" in err
    assert not out.exists()


@pytest.mark.parametrize("flags, word", [(["--n-layer", "2"], "n_layer"), (["--tokenizer", "bpe:300"], "tokenizer"),
                                         (["--seed", "1"], "seed")])
def test_a_change_of_shape_or_tokenizer_is_refused(parent, tmp_path, capsys, flags, word):
    before = folder_bytes(parent)
    out = tmp_path / "x"
    assert train("--fork", str(parent), "--out", str(out), *flags) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot fork") and word in err and err.count("\n") == 0
    assert not out.exists() and folder_bytes(parent) == before


def test_an_out_that_holds_a_run_is_refused(parent, capsys):
    before = folder_bytes(parent)
    assert train("--fork", str(parent), "--out", str(parent)) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert folder_bytes(parent) == before


def test_fork_survives_the_parents_checkpoint_going_and_forks_again(parent, tmp_path):
    src = tmp_path / "src"
    assert train("--out", str(src), "--steps", "8", "--eval-every", "4", "--keep", "5", *TINY) == 0
    fork = tmp_path / "f1"
    assert train("--fork", f"{src}@4", "--out", str(fork), "--steps", "6", "--checkpoint-every", "100") == 0
    for p in src.glob("*.pt"):  # the parent prunes (or deletes) what the fork came from
        p.unlink()
    inherited = fork / run_start(fork)["parent"]["checkpoint"]
    assert inherited.is_file() and ckpt.load_checkpoint(inherited)["step"] == 4
    # the fork resumes, and a fork of the fork (at its first step and at its latest) works
    assert train("--resume", str(fork), "--steps", "7") == 0
    assert ckpt.load_checkpoint(fork / ckpt.LATEST)["step"] == 7
    again = tmp_path / "f2"
    assert train("--fork", f"{fork}@4", "--out", str(again), "--steps", "5") == 0
    p = run_start(again)["parent"]
    assert p["folder"] == str(fork.resolve()) and p["step"] == 4 and sorted(losses(again)) == [5]
    latest = tmp_path / "f3"
    assert train("--fork", str(fork), "--out", str(latest), "--steps", "9") == 0
    assert run_start(latest)["parent"]["step"] == 7 and sorted(losses(latest)) == [8, 9]


def test_default_folder_is_next_to_the_parent(parent, tmp_path):
    src = tmp_path / "base"
    assert train("--out", str(src), "--steps", "4", "--eval-every", "4", *TINY) == 0
    assert train("--fork", str(src), "--steps", "5") == 0
    assert train("--fork", str(src), "--steps", "5") == 0
    assert (tmp_path / "base-fork4").is_dir() and (tmp_path / "base-fork4-2").is_dir()
    assert run_start(tmp_path / "base-fork4-2")["run_name"] == "base-fork4-2"


def test_old_logs_without_parent_still_read():
    from tui_trainer.records import RunStart, from_dict

    old = {"type": "run_start", "step": 0, "time": 1.0, "run_name": "r", "config": {}, "n_params": 1,
           "device": "cpu", "total_steps": 3}
    r = from_dict(old)
    assert isinstance(r, RunStart) and r.parent is None
    assert from_dict({**old, "parent": {"folder": "x", "step": 2}}).parent == {"folder": "x", "step": 2}


def family(tmp_path):
    """base (8 steps), a fork of it at 4, and a fork of that fork at 6: real runs."""
    base, f1, f2 = tmp_path / "base", tmp_path / "half", tmp_path / "quarter"
    assert train("--out", str(base), "--steps", "8", "--eval-every", "2", "--keep", "5", *TINY) == 0
    assert train("--fork", f"{base}@4", "--out", str(f1), "--max-lr", "5e-3", "--eval-every", "2") == 0
    assert train("--fork", f"{f1}@6", "--out", str(f2), "--max-lr", "2.5e-3") == 0
    return base, f1, f2


def test_lineage_in_the_table_the_viewer_and_the_export(tmp_path, capsys):
    from tui_trainer.cli.export import export
    from tui_trainer.runs import scan
    from tui_trainer.runs.rows import as_json
    from tui_trainer.ui.viewer import FileSource

    base, f1, f2 = family(tmp_path)
    capsys.readouterr()
    assert cli.main(["ls", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("half ← base@4 ") for line in lines)
    assert any(line.startswith("quarter ← half@6 ") for line in lines)
    rows = {s.folder: s for s in scan(tmp_path)}
    assert as_json(rows["half"], [])["fork_step"] == 4 and as_json(rows["base"], [])["parent"] is None
    assert rows["base"].family < rows["half"].family < rows["quarter"].family  # a family sorts together

    src = FileSource([f2])
    src.prepare()
    try:
        own, *prefixes = src.runs
        assert [p.name for p in prefixes] == ["base@4", "half@6"] and all(p.faint for p in prefixes)
        assert [p.step for p in prefixes] == [4, 6] and not own.faint and own.step == 8
        assert not own.message
        assert [(m.step, m.kind) for m in own.markers] == [(6, "fork")]  # the fork point
    finally:
        src.close()

    out = tmp_path / "all.csv"
    export([base, f2], str(out), records=True)
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert "parent" in rows[0] and "fork_step" in rows[0]
    assert {r["fork_step"] for r in rows if r["run"] == "quarter"} == {"6"}
    assert {r["parent"] for r in rows if r["run"] == "quarter"} == {str(f1.resolve())}
    assert {r["fork_step"] for r in rows if r["run"] == "base"} == {""}


def test_a_missing_parent_leaves_the_fork_viewable_with_a_note(tmp_path):
    from tui_trainer.ui.viewer import FileSource

    base, f1, f2 = family(tmp_path)
    base.rename(tmp_path / "moved")
    src = FileSource([f1])
    src.prepare()
    try:
        assert len(src.runs) == 1 and src.runs[0].step == 8
        assert "parent base" in src.runs[0].message and "is missing" in src.runs[0].message
    finally:
        src.close()
    src = FileSource([f2])  # its grandparent gone: the parent's prefix still shows
    src.prepare()
    try:
        assert [p.name for p in src.runs[1:]] == ["half@6"] and "missing" in src.runs[0].message
    finally:
        src.close()


# --- :fork from the dashboard and from attach ----------------------------------

def test_typed_fork_is_a_checkpoint_with_the_forks_settings():
    from tui_trainer.ui.command_line import parse

    assert parse("fork max_lr=5e-3 name=half") == (
        {"cmd": "checkpoint", "fork": {"max_lr": "5e-3", "name": "half"}}, None)
    assert parse("fork --grad-clip=0.5")[0] == {"cmd": "checkpoint", "fork": {"grad_clip": "0.5"}}
    assert parse("fork") == ({"cmd": "checkpoint", "fork": {}}, None)
    for typed, word in (("fork n_layer=2", "n_layer"), ("fork max_lr=abc", "not a number"),
                        ("fork max_lr", "KEY=VALUE"), ("fork max_lr=-1", "max-lr"),
                        ("fork schedule=sideways", "continue, restart")):
        req, why = parse(typed)
        assert req is None and word in why and "\n" not in why


def test_the_fork_point_outlives_pruning_and_its_command_runs(parent, tmp_path):
    import shlex
    import shutil

    from tui_trainer.run.fork import fork_command, keep_fork_point

    run = tmp_path / "run"
    shutil.copytree(parent, run)  # a run to write into: the module's parent stays untouched
    saved = ckpt.step_path(run, 8)
    kept = keep_fork_point(None, str(saved), 8)
    assert kept == run / "forked-step00000008.pt" and kept.samefile(saved)
    assert keep_fork_point(run, "elsewhere/" + saved.name, 8) == kept  # a path relative to the run's cwd
    ckpt.prune(run, 0)  # --keep prunes the step file ...
    assert not saved.exists() and kept.is_file()
    command = fork_command(run, 8, {"max_lr": "5e-3", "name": "half", "compile": "false"})
    assert command == f"tui-trainer train --fork {run}@8 --max-lr 5e-3 --name half --no-compile"
    assert cli.main([*shlex.split(command)[1:], "--headless"]) == 0  # ... and the fork still starts from it
    p = run_start(tmp_path / "half")["parent"]
    assert p["step"] == 8 and p["changes"] == {"max_lr": [1e-2, 5e-3]}


async def test_fork_typed_when_attached_saves_and_says_the_command(tmp_path):
    from test_attach import append, attached, drained, write_log
    from test_typed_steering import served_fake, spy
    from tui_trainer.control.commands import Command
    from tui_trainer.control.channel import serve_trainer
    from tui_trainer.records import Checkpoint
    from uitools import until

    run_dir = tmp_path / "run"
    write_log(run_dir)
    t = served_fake()
    with serve_trainer(t, run_dir):
        app, src, steer = attached(run_dir)
        said = spy(app)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.runs[0].step == 30, "the log")
            await pilot.press("colon", *"fork max_lr=5e-3", "enter")
            await until(pilot, lambda: not t.commands.empty(), "the checkpoint request")
            assert [getattr(o, "command", o) for o in drained(t.commands)] == [Command.CHECKPOINT]
            step_file = ckpt.step_path(run_dir, 31)
            step_file.write_bytes(b"a checkpoint")
            append(run_dir, Checkpoint(step=31, path=str(step_file), reason="manual"))
            want = f"tui-trainer train --fork {run_dir}@31 --max-lr 5e-3"
            await until(pilot, lambda: any(want in m for m in said), "the command")
            assert any("not started" in m for m in said)
            assert (run_dir / "forked-step00000031.pt").samefile(step_file)
            assert app.typed.fork_commands == [want] and t.commands.empty()  # nothing else was sent
            await pilot.press("q")


def test_fork_with_grad_accum_is_the_parents_continuation_too(tmp_path):
    src, fork = tmp_path / "accum", tmp_path / "accum-fork"
    assert train("--out", str(src), "--steps", "8", "--eval-every", "4", "--grad-accum", "2", *TINY) == 0
    assert train("--fork", f"{src}@4", "--out", str(fork)) == 0
    mine, theirs = losses(fork), losses(src)
    assert sorted(mine) == [5, 6, 7, 8] and mine == {s: theirs[s] for s in mine}


@pytest.mark.parametrize("target", ["nowhere", "nowhere@3"])
def test_a_missing_parent_is_one_line_and_leaves_no_folder(tmp_path, capsys, target):
    out = tmp_path / "x"
    assert train("--fork", str(tmp_path / target), "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --fork") and "not found" in err and "\n" not in err and not out.exists()


@pytest.mark.parametrize("parent", ["x", 5, [], {"folder": 5, "step": 1}, {"folder": "p", "step": -1},
                                    {"folder": "p", "step": True}, {"folder": "\x1b[31mp", "step": 2, "name": 7}])
def test_a_hostile_parent_field_reads_as_no_fork_or_plain_text(tmp_path, parent):
    from tui_trainer.runs import scan
    from tui_trainer.runs.rows import table
    from tui_trainer.ui.viewer import FileSource

    run = tmp_path / "r"
    run.mkdir()
    start = {"type": "run_start", "step": 0, "time": 1.0, "run_name": "r", "config": {}, "n_params": 1,
             "device": "cpu", "total_steps": 3, "parent": parent}
    train_line = {"type": "train", "step": 1, "time": 2.0, "train_loss": 1.0, "lr": 0.1, "tokens_per_sec": 1.0,
                  "grad_norm": 1.0, "elapsed_s": 1.0}
    (run / LOG_NAME).write_text(json.dumps(start) + "\n" + json.dumps(train_line) + "\n")
    (s,) = scan(tmp_path)
    assert all(c.isprintable() for line in table([s], []) for c in line)
    src = FileSource([run])
    src.prepare()
    try:
        assert src.runs[0].step == 1 and all(r.faint for r in src.runs[1:])
    finally:
        src.close()


def test_a_refusal_after_the_folder_was_made_leaves_none(parent, tmp_path, capsys):
    before = folder_bytes(parent)
    other = tmp_path / "other.txt"
    other.write_text("some other text to train on\n" * 200)
    out = tmp_path / "x"
    assert train("--fork", str(parent), "--out", str(out), "--data", str(other), "--steps", "20") == 2
    err = capsys.readouterr().err.strip()
    assert "the data differs" in err and "\n" not in err
    assert not out.exists() and folder_bytes(parent) == before


def test_a_new_weight_decay_reaches_the_optimizer(parent, tmp_path):
    fork = tmp_path / "wd"
    assert train("--fork", f"{parent}@8", "--out", str(fork), "--weight-decay", "0.05") == 0
    groups = ckpt.load_checkpoint(fork / ckpt.LATEST)["optimizer"]["param_groups"]
    assert groups[0]["weight_decay"] == 0.05 and run_start(fork)["parent"]["changes"] == {"weight_decay": [0.1, 0.05]}


def test_fork_and_resume_together_are_refused(parent, tmp_path, capsys):
    assert train("--fork", str(parent), "--resume", str(parent), "--out", str(tmp_path / "x")) == 2
    err = capsys.readouterr().err.strip()
    assert "--fork and --resume cannot be used together" in err and not (tmp_path / "x").exists()


def test_a_run_folder_whose_name_ends_in_at_a_number_forks_by_its_name(parent, tmp_path):
    """A folder literally named ``r@4`` (no run ``r`` beside it) is a run, not
    step 4 of a missing ``r``; ``r@4@8`` is its step 8."""
    import shutil

    odd = tmp_path / "r@4"
    shutil.copytree(parent, odd, ignore=shutil.ignore_patterns(LOCK_NAME))
    assert train("--fork", str(odd), "--out", str(tmp_path / "a"), "--steps", str(STEPS + 2), *TINY) == 0
    assert run_start(tmp_path / "a")["step"] == STEPS  # from its latest
    assert train("--fork", f"{odd}@8", "--out", str(tmp_path / "b"), "--steps", "10", *TINY) == 0
    assert run_start(tmp_path / "b")["step"] == 8

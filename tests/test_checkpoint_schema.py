"""A checkpoint read back is checked field by field before any of it is used
(issue 20, items 11, 14 and 17).

The generator takes one real checkpoint (a tiny run, made once for the
module) and mutates one field at a time: deleted, or replaced by text, a
list, None, NaN, a huge integer or a negative number.  Each mutation that
makes the file wrong gives, on ``train --resume``, exactly one ``error:`` line
and exit status 1, no traceback, and leaves every file in the run folder as
it was.
"""
from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tui_trainer.run import checkpoint as ckpt
from tui_trainer import cli
from tui_trainer.run.checkpoint_schema import ADDED_LATER, OPTIONAL_KEYS
from tui_trainer.config import FIELDS, RESUMABLE_CHANGES, field_types
from tui_trainer.run.resume import how_to_go_on, launcher_words, resume_command

REPO = Path(__file__).resolve().parent.parent
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--context-length", "8", "--batch-size", "2",
        "--eval-batches", "1", "--sample-tokens", "4", "--threads", "1"]
_DELETE = object()
MUTATIONS = {"delete": _DELETE, "text": "abc", "list": [1, 2], "none": None, "nan": math.nan,
             "huge": 10**40, "negative": -5}


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("schema") / "run"
    n = torch.get_num_threads()
    try:
        assert cli.main(["train", "--headless", "--steps", "4", "--eval-every", "2", "--out", str(d), *TINY]) == 0
    finally:
        torch.set_num_threads(n)
    return d


@pytest.fixture(scope="module")
def real_state(real_run):
    return torch.load(real_run / ckpt.LATEST, weights_only=True)


def allowed(path: tuple[str, ...], kind: str, original) -> bool:
    """Mutations that leave a valid checkpoint (the schema lets them pass by design)."""
    value = MUTATIONS[kind]
    if kind != "delete" and type(value) is type(original) and value == original:
        return True
    if len(path) == 1:
        key = path[0]
        if kind == "delete" and key in OPTIONAL_KEYS:
            return True
        if kind == "none" and key in ("live", "scaler", "data_fingerprint", "vocab_size", "last_val"):
            return True
        return kind == "text" and key == "data_fingerprint"
    if path[0] == "config":
        if kind == "delete" and (path[1] in RESUMABLE_CHANGES or path[1] in ADDED_LATER):
            return True  # a setting newer than the file: its default (test_an_older_config_resumes)
        ft = field_types()[path[1]]
        return (kind == "none" and ft.optional) or (kind == "text" and ft.base is str and ft.choices is None) \
            or (kind == "negative" and path[1] == "seed")
    if path[0] == "live":  # lr_scale, pause_at and changed are each optional
        return kind == "delete" or (kind == "none" and path[1] == "changed")
    return False


def all_cases(state) -> list[tuple[tuple[str, ...], str]]:
    fields = [(k,) for k in state] + [("config", k) for k in FIELDS] + [("live", k) for k in state["live"]]
    return [(f, kind) for f in fields for kind in MUTATIONS if not allowed(f, kind, _at(state, f))]


def _at(state, path):
    for k in path:
        state = state[k]
    return state


def mutated(state, path, kind):
    import copy

    s = copy.copy(state)
    parent = s
    for k in path[:-1]:
        parent[k] = copy.copy(parent[k])
        parent = parent[k]
    if MUTATIONS[kind] is _DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = MUTATIONS[kind]
    return s


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, but the lock's (it holds the pid of whoever held it last)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


def write_latest(folder: Path, state) -> None:
    latest = folder / ckpt.LATEST
    latest.unlink()  # a hard link of the step file: never write through it
    torch.save(state, latest)


def resume_fails_cleanly(folder: Path, capsys, *more: str) -> str:
    before = snapshot(folder)
    n = torch.get_num_threads()
    try:
        rc = cli.main(["train", "--headless", "--resume", str(folder), "--steps", "8", *more])
    finally:
        torch.set_num_threads(n)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("error: "), (rc, err, out[-500:])
    assert "Traceback" not in err + out and "step    " not in out  # not one step trained
    assert snapshot(folder) == before
    return lines[0]


def test_every_field_mutated_is_one_line_exit_1_and_nothing_changes(real_run, real_state, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(real_run, folder)
    cases = all_cases(real_state)
    rng = random.Random(20)
    # every field once (a kind drawn for it), then more drawn at random: bounded, seeded
    by_field: dict[tuple[str, ...], list[str]] = {}
    for f, kind in cases:
        by_field.setdefault(f, []).append(kind)
    chosen = [(f, rng.choice(kinds)) for f, kinds in by_field.items()]
    chosen += rng.sample([c for c in cases if c not in chosen], 12)
    for path, kind in chosen:
        write_latest(folder, mutated(real_state, path, kind))
        line = resume_fails_cleanly(folder, capsys)
        name = ".".join(path)
        if path[0] != "format":
            named = f"field '{name}" in line or f"lacks {name}" in line  # lacks: load_checkpoint's own word
            assert named or "does not fit" in line or "rejects" in line, (name, kind, line)


@pytest.mark.parametrize("path, value, words", [
    (("config",), [1, 2], "field 'config' is a list"),
    (("step",), "abc", "field 'step' is 'abc', expected an integer"),
    (("tokens",), "x", "field 'tokens' is 'x', expected an integer"),
    (("step",), 10**15, "below 1e12"),  # item 17: no --steps could continue it
    (("step",), -5, "field 'step' is -5"),  # item 17: was "step -5 of 70"
    (("live", "lr_scale"), math.nan, "field 'live.lr_scale' is nan"),  # item 7
    (("live", "lr_scale"), 1e9, "at most 1000"),
    (("live", "changed"), {"weight_decay": 1e300}, "field 'live.changed.weight_decay'"),
    (("config", "weight_decay"), 1e300, "field 'config.weight_decay' is 1e+300, expected a number"),
    (("rng", "python"), "x", "field 'rng.python'"),
    (("sampler", "generator"), torch.zeros(3), "field 'sampler.generator'"),
    (("model", "lm_head.weight"), torch.full((2, 2), math.nan), "finite weights"),
])
def test_crafted_fields_name_the_field_and_the_sound_checkpoint(real_run, real_state, tmp_path, capsys,
                                                                 path, value, words):
    folder = tmp_path / "run"
    shutil.copytree(real_run, folder)
    s = mutated(real_state, path, "text")
    _set(s, path, value)
    write_latest(folder, s)
    line = resume_fails_cleanly(folder, capsys)
    assert words in line, line
    assert f"pass --resume {folder / 'ckpt-step00000004.pt'}" in line  # a sound one, which exists


def _set(state, path, value):
    for k in path[:-1]:
        state = state[k]
    state[path[-1]] = value


def test_optimizer_moments_of_the_wrong_shape_are_refused_before_training(real_run, real_state, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(real_run, folder)
    s = mutated(real_state, ("optimizer",), "text")
    s["optimizer"] = {"state": {k: dict(v) for k, v in real_state["optimizer"]["state"].items()},
                      "param_groups": real_state["optimizer"]["param_groups"]}
    s["optimizer"]["state"][0]["exp_avg"] = torch.zeros(3)
    write_latest(folder, s)
    assert "does not fit this run" in resume_fails_cleanly(folder, capsys)


def test_no_sound_checkpoint_left_says_start_again(real_run, real_state, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(real_run, folder)
    for _, p in ckpt.list_step_checkpoints(folder):
        p.unlink()
    write_latest(folder, mutated(real_state, ("step",), "text"))
    line = resume_fails_cleanly(folder, capsys)
    assert "--resume" not in line.split(";")[-1] and "start a new run" in line, line


def test_tokens_as_text_in_a_real_process(real_run, real_state, tmp_path):
    """The item-11 case that used to fail after training started, as a user runs it."""
    folder = tmp_path / "run"
    shutil.copytree(real_run, folder)
    write_latest(folder, mutated(real_state, ("tokens",), "text"))
    before = snapshot(folder)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "tui_trainer", "train", "--headless", "--resume", str(folder),
                        "--steps", "8"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and p.stderr.startswith("error: "), p.stderr
    assert "field 'tokens' is 'abc'" in p.stderr and "Traceback" not in p.stderr
    assert p.stdout == "" and snapshot(folder) == before


# --- item 14: how to go on, after a failure --------------------------------------

def test_resume_hint_names_only_a_checkpoint_that_exists(tmp_path):
    assert resume_command(tmp_path, environ={}) is None
    torch.save({}, ckpt.step_path(tmp_path, 3))
    assert resume_command(tmp_path, environ={}).endswith(f"--resume {ckpt.step_path(tmp_path, 3)}")
    (tmp_path / ckpt.LATEST).write_bytes(b"")
    assert resume_command(tmp_path, environ={}) == f"tui-trainer train --resume {tmp_path}"

    from types import SimpleNamespace

    failed = SimpleNamespace(status="failed", step=7)
    assert how_to_go_on(failed, tmp_path / "nothing-saved") == [
        "resume: no checkpoint was saved, so there is nothing to resume; start the run again "
        "(the same command, with a new --out)"]


def test_resume_hint_under_torchrun_is_the_command_it_was_started_with(tmp_path):
    (tmp_path / ckpt.LATEST).write_bytes(b"")
    agent = ["/usr/bin/python3", "/usr/local/bin/torchrun", "--standalone", "--nproc_per_node=4", "-m",
             "tui_trainer", "train", "--headless", "--out", "x"]
    words = launcher_words(agent, "/repo/tui_trainer/__main__.py")
    assert words == ["torchrun", "--standalone", "--nproc_per_node=4", "-m", "tui_trainer"]
    env = {"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4"}
    assert resume_command(tmp_path, environ=env, launcher=words) == \
        f"torchrun --standalone --nproc_per_node=4 -m tui_trainer train --headless --resume {tmp_path}"
    py = ["python", "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node", "8", "/bin/tui-trainer",
          "train"]
    assert launcher_words(py, "/bin/tui-trainer") == py[:-1]
    # with no agent to read, the world size still makes it a torchrun command
    assert resume_command(tmp_path, environ=env, launcher=None).startswith(
        "torchrun --standalone --nproc_per_node=4 -m tui_trainer")


def test_a_save_stopped_by_the_file_size_limit_says_so(tmp_path):
    """ulimit -f: Python ignores SIGXFSZ, the write fails with EFBIG and torch
    reported it as "[enforce fail at inline_container.cc:672]"."""
    code = ("import resource, sys, torch\n"
            "from tui_trainer import checkpoint as ckpt\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, resource.RLIM_INFINITY))\n"
            "try:\n"
            "    ckpt.atomic_save({'w': torch.zeros(100_000)}, sys.argv[1])\n"
            "except OSError as e:\n"
            "    print(type(e).__name__ + ': ' + str(e))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    target = tmp_path / "ckpt-step00000001.pt"
    p = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.stdout.startswith(f"CheckpointWriteError: file size limit reached writing checkpoint {target} "
                               "(ulimit -f allows 50000 bytes)"), (p.stdout, p.stderr)
    assert "inline_container" not in p.stdout and list(tmp_path.iterdir()) == []  # no torn or temporary file


def test_a_checkpoint_whose_steps_fell_below_the_warmup_resumes_with_a_longer_steps(real_run, real_state,
                                                                                     tmp_path, capsys):
    """Item 6: such a checkpoint (a live steps= below the warmup, before that
    was refused) is not lost: the hint names the --steps that mends it, and
    that resume trains."""
    folder = tmp_path / "run"
    shutil.copytree(real_run, folder)
    s = mutated(real_state, ("config",), "text")
    s["config"] = {**real_state["config"], "warmup_steps": 6}
    write_latest(folder, s)
    n = torch.get_num_threads()
    try:
        assert cli.main(["train", "--headless", "--resume", str(folder)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "pass --steps N with N at least 6" in err, err
        assert cli.main(["train", "--headless", "--resume", str(folder), "--steps", "8"]) == 0
    finally:
        torch.set_num_threads(n)
    assert "run finished at step 8" in capsys.readouterr().out


def test_what_a_gpu_run_writes_passes(real_state):
    """CUDA RNG states and a grad scaler's state (fp16) are fields a CPU run
    leaves empty; what a GPU run writes there must pass."""
    from tui_trainer.run.checkpoint_schema import check_trainer_state

    s = dict(real_state, scaler=torch.amp.GradScaler("cpu", enabled=True).state_dict(), world_size=8,
             rng=dict(real_state["rng"], cuda=[torch.get_rng_state(), torch.get_rng_state()]),
             live={"lr_scale": 0.5, "pause_at": 9, "changed": {"lr_scale": 0.5, "steps": 90, "weight_decay": 0.0}})
    check_trainer_state(s)


def test_an_older_config_resumes_and_a_shape_setting_it_lacks_is_refused(real_run, real_state, tmp_path, capsys):
    """A checkpoint written before a setting existed lacks it: a setting a
    resume may change takes its default (an upgrade never strands a run);
    one that shapes the model must be there (its default is not what trained)."""
    folder = tmp_path / "run"
    shutil.copytree(real_run, folder)
    old = mutated(real_state, ("config", "sample_tokens"), "delete")
    old = mutated(old, ("config", "keep"), "delete")
    write_latest(folder, old)
    n = torch.get_num_threads()
    try:
        assert cli.main(["train", "--headless", "--resume", str(folder), "--steps", "6"]) == 0
    finally:
        torch.set_num_threads(n)
    capsys.readouterr()
    again = tmp_path / "again"
    shutil.copytree(real_run, again)
    write_latest(again, mutated(real_state, ("config", "n_embd"), "delete"))
    assert "field 'config.n_embd' is missing" in resume_fails_cleanly(again, capsys)

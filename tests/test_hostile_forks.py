"""Forks and hostile input: a ``--fork`` target in any text (``run.fork.split_target``);
a fork's lineage read from hostile logs (``logs/lineage.py``): whatever a
log's ``run_start.parent`` holds (wrong types, a NUL or control characters in
the folder, a fork of itself, a loop of forks), ``view``'s and ``--snap``'s
lineage never raises and each note is one line without control characters once made safe."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tui_trainer import cli
from tui_trainer.cli.snapshot import lineage
from tui_trainer.logs.lineage import prefixes
from tui_trainer.run.fork import split_target
from tui_trainer.run.log_writer import LOG_NAME
from tui_trainer.terminal import printable

TRAIN = {"type": "train", "step": 1, "train_loss": 4.0, "lr": 1e-3, "tokens_per_sec": 100.0, "elapsed_s": 0.1,
         "tokens": 16, "time": 1.0}


def write_run(folder: Path, parent: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    start = {"type": "run_start", "step": 0, "time": 1.0, "run_name": folder.name, "config": {}, "parent": parent}
    (folder / LOG_NAME).write_text(json.dumps(start) + "\n" + json.dumps(TRAIN) + "\n")
    return folder / LOG_NAME


junk = st.one_of(st.none(), st.booleans(), st.integers(-2, 10**30), st.floats(), st.text(max_size=8),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
folders = st.one_of(st.sampled_from(["self", "a", "b", "gone"]), st.text(max_size=12), junk)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=st.fixed_dictionaries({"folder": folders, "name": st.one_of(st.text(max_size=12), junk),
                                "step": st.one_of(st.integers(-3, 10**30), junk)}),
       b_parent=st.sampled_from(["a", "b", "self"]))
def test_hostile_parent_never_raises(tmp_path_factory, a, b_parent):
    root = tmp_path_factory.mktemp("h")
    named = {"self": root / "a", "a": root / "a", "b": root / "b", "gone": root / "gone"}
    if isinstance(a["folder"], str) and a["folder"] in named:
        a["folder"] = str(named[a["folder"]])  # a fork of itself, of b (whose parent may be a: a loop), of a gone run
    log = write_run(root / "a", a)
    write_run(root / "b", {"folder": str(named[b_parent]), "name": b_parent, "step": 1})
    (series,), (note,) = prefixes([log])
    assert len(series) <= 2 and all(s.faint for s in series)
    parents, faint, notes = lineage([str(root / "a"), str(root / "b")])
    for text in (note, *notes, *parents):
        safe = printable(text, newlines=False)
        assert not any(ord(c) < 32 or 0x7f <= ord(c) < 0xa0 for c in safe), safe


def test_a_nul_in_the_parents_folder_is_a_missing_parent(tmp_path):
    log = write_run(tmp_path / "a", {"folder": "/tmp/\x00bad", "name": "p", "step": 1})
    (series,), (note,) = prefixes([log])
    assert series == [] and note.startswith("parent p (") and "is missing" in note


@settings(max_examples=60, deadline=None)
@given(head=st.text(min_size=1, max_size=8), tail=st.text(max_size=6))
def test_any_fork_target_splits_without_raising(head, tail):
    where, step = split_target(f"{head}@{tail}")
    if tail.isascii() and tail.isdigit():
        assert (where, step) == (Path(head), int(tail))
    else:
        assert step is None and where == Path(f"{head}@{tail}")


@pytest.mark.parametrize("tail", ["²", "١٢", "𝟗"])  # digits to str.isdigit, not all of them to int
def test_a_fork_step_in_other_digits_is_one_error_line(tmp_path, capsys, tail):
    out = tmp_path / "fork"
    assert cli.main(["train", "--headless", "--fork", f"{tmp_path / 'base'}@{tail}", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --fork ") and "not found" in err[0], err
    assert not out.exists()

"""A fork's lineage where runs are shown side by side: siblings overlaid in
the viewer, the status line, the curves CSV, ``view --snap``, the runs
table grouped by family; and every refusal of ``train --fork`` (generated)."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from test_fork import TINY, folder_bytes, train
from tui_trainer import cli
from tui_trainer.run.log_writer import LOG_NAME


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """base (8 steps, checkpoints at 2, 4, 6, 8); half and clip, its forks at 4 and 6; quarter, half's fork at 6."""
    root = tmp_path_factory.mktemp("family")
    base, half, clip, quarter = (root / n for n in ("base", "half", "clip", "quarter"))
    n = torch.get_num_threads()
    try:
        assert train("--out", str(base), "--steps", "8", "--eval-every", "2", "--keep", "5", *TINY) == 0
        assert train("--fork", f"{base}@4", "--out", str(half), "--max-lr", "5e-3", "--eval-every", "2") == 0
        assert train("--fork", f"{base}@6", "--out", str(clip), "--grad-clip", "0.5") == 0
        assert train("--fork", f"{half}@6", "--out", str(quarter), "--max-lr", "2.5e-3") == 0
    finally:
        torch.set_num_threads(n)
    return root


def test_siblings_share_one_parent_curve_up_to_the_latest_fork_point(family):
    from tui_trainer.ui.viewer import FileSource

    src = FileSource([family / "half", family / "clip"])
    src.prepare()
    try:
        half, clip, *rest = src.runs
        assert [(p.name, p.step, p.faint) for p in rest] == [("base@6", 6, True)]  # read and drawn once
        assert [(m.step, m.kind) for m in half.markers] == [(4, "fork")]  # each marks its own fork point
        assert [(m.step, m.kind) for m in clip.markers] == [(6, "fork")]
        assert half.step == clip.step == 8 and not half.faint and not clip.faint
    finally:
        src.close()
    src = FileSource([family / "quarter", family / "clip"])  # cousins: base once, half once
    src.prepare()
    try:
        assert sorted((p.name, p.step) for p in src.runs[2:]) == [("base@6", 6), ("half@6", 6)]
    finally:
        src.close()


def test_the_status_line_leaves_a_forks_ancestors_out(family, monkeypatch):
    from textual.geometry import Size

    from tui_trainer.ui.status_line import StatusLine
    from tui_trainer.ui.viewer import FileSource

    shown = []
    monkeypatch.setattr(StatusLine, "size", property(lambda self: Size(120, 4)))
    monkeypatch.setattr(StatusLine, "update", lambda self, text, **kw: shown.append(text.plain))
    src = FileSource([family / "quarter"])
    src.prepare()
    try:
        assert len(src.runs) == 3  # quarter, then base@4 and half@6 (faint)
        StatusLine().show(src.runs)
    finally:
        src.close()
    (text,) = shown
    assert text.splitlines() == [text] and text.startswith(" FINISHED  quarter")
    assert "@" not in text and "RUNNING" not in text  # a cut parent is no run that is running


def test_the_curves_csv_carries_parent_and_fork_step(family, tmp_path):
    from tui_trainer.cli.export import export

    out = tmp_path / "curves.csv"
    export([family / "half", family / "base"], str(out))
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert {"half.parent", "half.fork_step", "base.parent", "base.fork_step"} <= set(rows[0])
    mine = [r for r in rows if r["half.train_loss"]]
    assert [int(r["step"]) for r in mine] == [5, 6, 7, 8]
    assert {(r["half.parent"], r["half.fork_step"]) for r in mine} == {(str((family / "base").resolve()), "4")}
    assert all(not r["half.parent"] for r in rows if not r["half.train_loss"] and not r["half.val_loss"])
    assert {r["base.parent"] for r in rows} == {""}  # base is no fork
    export([family / "quarter"], str(out))
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert {(r["parent"], r["fork_step"]) for r in rows} == {(str((family / "half").resolve()), "6")}
    export([family / "base"], str(out))  # no fork: the columns as before
    assert out.read_text().splitlines()[0] == "step,train_loss,val_loss,lr,tokens,elapsed_s"


def test_snap_shows_the_lineage(family, tmp_path):
    from tui_trainer.cli.snapshot import snapshot

    text = snapshot([str(family / "quarter")], (80, 30), ascii_only=True)
    lines = text.splitlines()
    assert any(line.startswith("* quarter ← half@6  finished") for line in lines)
    assert ". base@4  parent, up to step 4" in lines and ". half@6  parent, up to step 6" in lines
    assert lines[-1] == "o val loss  : fork point"
    plot = lines[1:lines.index("learning rate")]
    assert sum(":" in line for line in plot) >= len(plot) - 3  # a column at each fork point, top to bottom
    assert all(c.isprintable() and ord(c) < 128 for line in plot for c in line)

    orphan = tmp_path / "orphan"  # a fork whose parent was moved away
    orphan.mkdir()
    head, rest = (family / "half" / LOG_NAME).read_text().split("\n", 1)
    start = json.loads(head)
    start["parent"]["folder"] = str(tmp_path / "gone")
    (orphan / LOG_NAME).write_text(json.dumps(start) + "\n" + rest)
    lines = snapshot([str(orphan)], (80, 30), ascii_only=True).splitlines()
    assert any(line.startswith("* half ← base@4") for line in lines)
    note = lines[[i for i, line in enumerate(lines) if line.startswith("note: ")][-1]:]
    assert note[0].startswith("note: parent base (") and all(len(line) <= 80 for line in note)
    assert "is missing: its curve up to step 4 is not shown" in " ".join(line.strip() for line in note)
    assert not any("parent, up to" in line for line in lines)


async def test_the_runs_table_groups_a_family(family):
    from test_runs_browser import browser_app, column, table_ready

    app = browser_app(family)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await table_ready(app, pilot, 4)
        await pilot.press("f")
        await pilot.pause()
        assert screen.sort_key == "run" and not screen.reverse
        assert column(screen, "run") == ["base", "clip ← base@6", "half ← base@4", "quarter ← half@6"]
        await pilot.press("r")  # reversed: still a family's order, from its end
        await pilot.pause()
        assert column(screen, "run")[0] == "quarter ← half@6"
        await pilot.press("q")


# --- every refusal is one line and leaves no folder -------------------------------

REFUSALS = ("missing parent", "missing step", "shape", "tokenizer", "seed", "out holds a run",
            "out is a file", "with resume")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(REFUSALS), step=st.integers(0, 40).filter(lambda s: s not in (2, 4, 6, 8)),
       extra=st.lists(st.sampled_from([["--max-lr", "5e-3"], ["--grad-clip", "0.5"], ["--steps", "12"],
                                        ["--name", "again"], ["--weight-decay", "0.05"], ["--eval-every", "3"]]),
                      max_size=3, unique_by=lambda f: f[0]),
       out_given=st.booleans())
def test_every_refusal_is_one_line_and_leaves_no_folder(family, capsys, kind, step, extra, out_given):
    base = family / "base"
    before = {p.name: folder_bytes(p) for p in family.iterdir() if p.is_dir()}
    listing = sorted(p.name for p in family.iterdir())
    target, out = str(base), family / "new"
    flags: list[str] = []
    if kind == "missing parent":
        target = str(family / "nowhere") + (f"@{step}" if step % 2 else "")
    elif kind == "missing step":
        target = f"{base}@{step}"
    elif kind == "shape":
        flags = [["--n-layer", "2"], ["--n-embd", "32"], ["--context-length", "16"]][step % 3]
    elif kind == "tokenizer":
        flags = ["--tokenizer", "bpe:300"]
    elif kind == "seed":
        flags = ["--seed", str(step + 1)]
    elif kind == "out holds a run":
        out = family / ("half", "base", "quarter")[step % 3]
    elif kind == "out is a file":
        out = family / "half" / LOG_NAME
    elif kind == "with resume":
        flags = ["--resume", str(base)]
    capsys.readouterr()
    given_out = ["--out", str(out)] if out_given or kind.startswith("out") else []
    assert train("--fork", target, *given_out, *flags, *[w for f in extra for w in f]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and ";" in err, err
    word = {"missing parent": "not found", "missing step": "steps with one: 2, 4, 6, 8", "shape": "cannot fork",
            "tokenizer": "tokenizer",
            "seed": "seed", "out holds a run": "already holds a run", "out is a file": "not a folder",
            "with resume": "cannot be used together"}[kind]
    assert word in err, err
    assert sorted(p.name for p in family.iterdir()) == listing  # no folder made, none left half-made
    assert {p.name: folder_bytes(p) for p in family.iterdir() if p.is_dir()} == before  # nothing written


@pytest.mark.parametrize("start_step", [0, 10**30, 10**400, -5])
def test_snap_of_a_hostile_fork_log_prints_plain_text(tmp_path, start_step):
    from tui_trainer.cli.snapshot import snapshot

    run = tmp_path / "r"
    run.mkdir()
    start = {"type": "run_start", "step": start_step, "time": 1.0, "run_name": "r", "config": {}, "n_params": 1,
             "device": "cpu", "total_steps": 3,
             "parent": {"folder": str(tmp_path / "\x1b[31mgone"), "step": 3, "name": "\x1b]0;x\x07n"}}
    lines = [json.dumps(start)] + [json.dumps({"type": "train", "step": s, "time": 2.0, "train_loss": 1.0 / s,
                                               "lr": 0.1, "tokens_per_sec": 1.0, "grad_norm": 1.0,
                                               "elapsed_s": float(s)}) for s in range(1, 30)]
    (run / LOG_NAME).write_text("\n".join(lines) + "\n")
    text = snapshot([str(run)], (80, 30), ascii_only=True)
    assert "\x1b" not in text and "\x07" not in text and all(c.isprintable() for c in text.replace("\n", ""))
    assert "is missing" in text.replace("\n    ", " ")

"""Without a screen: ``ls``, ``status`` and ``view --snap`` with stdin and
stdout not a tty (as over ``ssh -T``, in cron or CI), their output clean of
control characters whatever the runs are named."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from runmaker import Change, append, live, write_run
from test_terminal_text import TINY, cli, env, wait_for
from tui_trainer import cli as tui_cli
from tui_trainer.control.channel import request

EVIL = "evil\x1b]0;PWNED\x07\x1b[2Jname\x07"


def runs(root: Path) -> Path:
    """A folder of runs: finished, crashed (no run_end), diverged, one named with escapes, and two folders
    that are not runs."""
    folder = root / "outs"
    write_run(folder / "run-lr3e-4", end="finished", config=dict(max_lr=3e-4), start_time=1.70e9)
    write_run(folder / "run-lr1e-3", end=None, start_time=1.71e9)
    write_run(folder / "run-wide", end="diverged", config=dict(n_embd=128), start_time=1.72e9)
    write_run(folder / "run-evil", end="stopped", name=EVIL, start_time=1.73e9)
    (folder / "notes").mkdir()
    (folder / "bin").mkdir()
    (folder / "bin" / "losses.jsonl").write_bytes(b"\x00\x01\x02" * 100)
    return folder


def test_ls_prints_the_browsers_rows_as_a_table(tmp_path):
    folder = runs(tmp_path)
    p = cli(["ls", folder], tmp_path)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().splitlines()
    head = lines[0].split()
    assert head[:5] == ["run", "status", "step", "best", "val"] and "max_lr" in head and "n_embd" in head
    rows = lines[1:5]
    # newest start first, statuses exactly as the browser computes them (no lock held: none running)
    assert [r.split()[1] for r in rows] == ["stopped", "diverged", "crashed", "finished"]
    assert all("50/50" in r for r in rows)
    finished = rows[3]
    assert "3e-4" in finished and "2.1000" in finished
    widths = {len(r) for r in lines[:5]}
    assert len({r.index("status") if i == 0 else r.index(r.split()[1]) for i, r in enumerate(lines[:5])}) == 1
    assert max(widths) - min(widths) <= 8  # aligned: only the trailing columns' padding differs
    assert "\\x07\\x1b[2J" in p.stdout.decode()  # the label (its last 12 characters), escaped (cli() checked no raw control byte)
    tail = p.stdout.decode().split("skipped 2:")[1]
    assert "bin  (losses.jsonl is a binary file)" in tail and "notes  (no losses.jsonl)" in tail


def test_ls_json_is_one_strict_object_per_run(tmp_path):
    folder = runs(tmp_path)
    write_run(folder / "run-nan", end="finished", loss=lambda s: float("nan"), start_time=1.69e9)
    p = cli(["ls", folder, "--json"], tmp_path)
    assert p.returncode == 0, p.stderr
    objs = [json.loads(line, parse_constant=lambda c: pytest_fail(c)) for line in p.stdout.decode().splitlines()]
    assert len({tuple(o) for o in objs}) == 1  # the same keys on every line
    by = {o["folder"]: o for o in objs}
    assert by["run-lr3e-4"]["status"] == "finished" and by["run-lr3e-4"]["best_val"] == 2.1
    assert by["run-lr3e-4"]["settings"]["max_lr"] == 3e-4 and by["run-wide"]["settings"]["n_embd"] == 128
    assert by["run-nan"]["best_val"] is None and by["run-nan"]["train_loss"] is None
    assert by["run-evil"]["name"] == EVIL  # the name itself, escaped by JSON
    assert by["notes"]["status"] == "skipped" and by["notes"]["problem"] == "no losses.jsonl"


def main(args: list, capsys) -> tuple[int, str, str]:
    """``tui-trainer ARGS`` in this process (standard output captured: not a tty)."""
    code = tui_cli.main([str(a) for a in args])
    got = capsys.readouterr()
    return code, got.out, got.err


def one_error_line(code: int, err: str) -> bool:
    return code == 2 and err.startswith("error: ") and err.count("\n") == 1


def pytest_fail(constant: str):
    raise AssertionError(f"{constant} is not JSON")


def test_ls_running_only_while_a_process_holds_the_lock(tmp_path):
    folder = runs(tmp_path)
    lock = live(folder / "run-lr1e-3")  # this process holds it, as a training process would
    try:
        objs = [json.loads(x) for x in cli(["ls", folder, "--json"], tmp_path).stdout.splitlines()]
        assert {o["folder"]: o["status"] for o in objs}["run-lr1e-3"] == "running"
    finally:
        lock.release()


def test_ls_bad_folder_is_one_line(tmp_path, capsys):
    assert one_error_line(*main(["ls", tmp_path / "nope"], capsys)[::2])
    write_run(tmp_path / "one")
    code, _, err = main(["ls", tmp_path / "one"], capsys)
    assert one_error_line(code, err) and "tui-trainer status" in err


def test_status_exit_says_how_the_run_stands(tmp_path, capsys):
    folder = runs(tmp_path)
    assert cli(["status", folder / "run-lr3e-4"], tmp_path).returncode == 0
    crashed = cli(["status", folder / "run-lr1e-3", "--json"], tmp_path)
    assert crashed.returncode == 1 and json.loads(crashed.stdout)["state"] == "crashed"
    for name in ("run-wide", "run-evil"):
        assert main(["status", folder / name], capsys)[0] == 1
    for bad in (folder / "missing", folder / "notes", folder):
        assert one_error_line(*main(["status", bad], capsys)[::2])


def test_status_figures_from_the_log(tmp_path):
    folder = runs(tmp_path)
    append(folder / "run-lr3e-4", Change(step=50, key="lr_scale", old=1.0, new=0.5, source="attach",
                                         time=1.70e9 + 60))
    p = cli(["status", folder / "run-lr3e-4"], tmp_path)
    text = p.stdout.decode()
    for line in ("state:    finished", "step:     50/50", "last val: 2.1000 at step 50", "changed:  lr_scale=0.5",
                 "sample:   (step 50) run-lr3e-4 sample at 50"):
        assert line in text, text
    f = json.loads(cli(["status", folder / "run-evil", "--json"], tmp_path).stdout)
    assert f["run"] == EVIL and f["state"] == "stopped" and f["best_val"] == 2.1 and f["eta_s"] is None
    assert "\\x1b]0;PWNED" in cli(["status", folder / "run-evil"], tmp_path).stdout.decode()


def test_status_of_a_live_run_running_paused_then_stopped(tmp_path):
    """One real tiny run: 3 while it trains and while it is paused, 1 once stopped."""
    out = tmp_path / "run"
    args = ["train", "--headless", "--steps", "100000", "--eval-every", "100000", "--out", out, *TINY]
    proc = subprocess.Popen([sys.executable, "-m", "tui_trainer", *map(str, args)], cwd=tmp_path, env=env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (out / "control.sock").exists() and request(out, "status")["step"] > 2, proc, "steps")
        p = cli(["status", out, "--json"], tmp_path)
        f = json.loads(p.stdout)
        assert p.returncode == 3 and f["state"] == "running" and f["source"] == "control" and f["step"] > 2
        assert f["total_steps"] == 100000 and f["settings"]["lr_scale"] == 1.0
        assert request(out, "pause")["ok"]
        wait_for(lambda: request(out, "status")["state"] == "paused", proc, "the pause")
        p = cli(["status", out], tmp_path)
        assert p.returncode == 3 and "state:    paused" in p.stdout.decode()
        assert request(out, "stop")["ok"]
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    p = cli(["status", out], tmp_path)
    assert p.returncode == 1 and "state:    stopped" in p.stdout.decode()


def test_snap_prints_the_plots_once_as_plain_ascii(tmp_path):
    folder = runs(tmp_path)
    p = cli(["view", "--snap", folder / "run-lr3e-4", folder / "run-evil", "--size", "90x28"], tmp_path)
    assert p.returncode == 0, p.stderr
    text = p.stdout.decode()
    lines = text.splitlines()
    assert b"\x1b" not in p.stdout
    at = next(i for i, line in enumerate(lines) if line.startswith("* "))  # the legend, after the plots
    plots, legend = lines[:at], "\n".join(lines[at:])
    assert all(line.isascii() for line in plots)  # the plots in ASCII (a run's name may not be)
    assert plots[0].startswith("loss") and "learning rate" in plots
    assert max(len(line) for line in lines) <= 90 and len(lines) <= 28
    assert any(line.lstrip().startswith("+---") for line in plots)  # the x axis, in ASCII
    assert any(line.lstrip().startswith(("2.5+", "3+")) for line in plots)  # y ticks
    assert legend.count("best val 2.1000 @ 50") == 2 and "finished" in legend and "stopped" in legend
    assert "\\x1b[2J" in legend  # the evil name, escaped
    assert lines[-1] == "o val loss"


def test_snap_default_size_and_bad_arguments(tmp_path, capsys):
    folder = runs(tmp_path)
    code, out, _ = main(["view", "--snap", folder / "run-wide"], capsys)
    lines = out.splitlines()
    assert code == 0 and max(len(line) for line in lines) <= 100 and 20 <= len(lines) <= 30
    for args in (["view", "--snap", folder], ["view", "--snap", folder / "run-wide", "--size", "9x9"],
                 ["view", "--snap", folder / "run-wide", "--size", "big"], ["view", "--snap", tmp_path / "nope"],
                 ["view", folder / "run-wide", "--size", "80x24"]):
        code, _, err = main(args, capsys)
        assert one_error_line(code, err), (args, err)


def test_without_a_terminal_view_and_attach_name_snap_and_status(tmp_path, capsys):
    folder = runs(tmp_path)
    lock = live(folder / "run-lr1e-3")
    try:
        for args in (["view", folder / "run-wide"], ["view", folder], ["attach", folder / "run-lr1e-3"]):
            code, _, err = main(args, capsys)
            assert one_error_line(code, err) and "needs a terminal" in err and "--snap" in err and "status" in err
    finally:
        lock.release()


def test_ls_family_lists_each_run_with_its_forks_under_it(tmp_path):
    folder = tmp_path / "outs"
    base = write_run(folder / "base", start_time=1.70e9)
    write_run(folder / "other", start_time=1.71e9)
    half = write_run(folder / "half", start_time=1.72e9, parent={"folder": str(base), "name": "base", "step": 20})
    write_run(folder / "quarter", start_time=1.73e9, parent={"folder": str(half), "name": "half", "step": 30})

    def order(*flags):
        p = cli(["ls", folder, *flags], tmp_path)
        assert p.returncode == 0, p.stderr
        return [line.split()[0] for line in p.stdout.decode().splitlines()[1:] if line.strip()]

    assert order() == ["quarter", "half", "other", "base"]  # newest first
    assert order("--family") == ["base", "half", "quarter", "other"]
    p = cli(["ls", folder, "--family"], tmp_path)
    assert "half ← base@20" in p.stdout.decode() and "quarter ← half@30" in p.stdout.decode()


def test_ls_shows_an_absent_best_val_as_a_dash_as_status_does(tmp_path):
    folder = tmp_path / "outs"
    write_run(folder / "no-evals", eval_every=1000, end=None)  # crashed before its first eval
    p = cli(["ls", folder], tmp_path)
    assert p.returncode == 0, p.stderr
    head, row = p.stdout.decode().splitlines()[:2]
    cells = dict(zip(["run", "status", "step", "best"], row.split()))
    assert cells["best"] == "-" and "nan" not in row, row
    assert "best val: -" in cli(["status", folder / "no-evals"], tmp_path).stdout.decode()

"""``tui-trainer view``: the dashboard's panes over files, driven with Pilot."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time

import pytest

from test_logs import write_run
from tui_trainer import cli
from tui_trainer.records import TrainStep
from tui_trainer.run.log_writer import dumps
from tui_trainer.ui.plot import CurvePlot
from tui_trainer.ui.viewer import FileSource, viewer_app
from tui_trainer.ui.eval_log import EvalLog
from tui_trainer.ui.help_screen import HelpScreen
from tui_trainer.ui.sample_pane import SamplePane
from uitools import until

SIZE = (100, 30)
BRAILLE = range(0x2801, 0x2900)


def drawn(plot: CurvePlot) -> str:
    return plot.render().plain


def has_curve(plot: CurvePlot) -> bool:
    return any(ord(ch) in BRAILLE for ch in drawn(plot))


def viewer(paths, follow=False):
    src = FileSource(paths, follow=follow)
    src.prepare()
    return viewer_app(src), src


async def test_replay_shows_plots_evals_and_samples(tmp_path):
    write_run(tmp_path / "run1" / "losses.jsonl", steps=200, eval_every=50)
    app, src = viewer([tmp_path / "run1"])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        run = app.runs[0]
        assert run.step == 200 and run.state == "finished" and len(run.evals) == 4
        assert has_curve(app.query_one("#loss", CurvePlot)) and has_curve(app.query_one("#lr", CurvePlot))
        assert app.query_one(EvalLog).row_count == 4
        assert "sample at 200" in str(app.query_one(SamplePane).render())
        assert app.query_one("#sample-box").border_title == "sample @ step 200 (4/4)"
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert "sample at 100" in str(app.query_one(SamplePane).render())
        assert app.query_one("#sample-box").border_title == "sample @ step 100 (2/4)"
        await pilot.press("right_square_bracket")
        assert app.query_one("#sample-box").border_title == "sample @ step 150 (3/4)"
        # A log cannot be steered: the keys are not offered and do nothing.
        assert app.check_action("pause", ()) is False and app.check_action("eval", ()) is False
        await pilot.press("p", "e", "c")
        assert run.state == "finished"
        await pilot.press("q")
    assert src.done


async def test_a_real_run_replays(tmp_path, capsys):
    out = tmp_path / "real"
    code = cli.main(["train", "--headless", "--steps", "20", "--eval-every", "10", "--warmup-steps", "5",
                     "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--context-length", "16",
                     "--batch-size", "4", "--eval-batches", "2", "--sample-tokens", "8", "--threads", "1",
                     "--out", str(out)])
    assert code == 0
    capsys.readouterr()
    app, _ = viewer([out])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        run = app.runs[0]
        assert run.name == "real" and run.step == 20 and run.state == "finished"
        assert [e.step for e in run.evals] == [10, 20] and len(run.samples) == 2
        assert has_curve(app.query_one("#loss", CurvePlot))
        await pilot.press("q")


async def test_two_runs_overlay_in_one_plot(tmp_path):
    write_run(tmp_path / "lr-3e-3" / "losses.jsonl", steps=100, loss=lambda s: 4 - s / 50)
    write_run(tmp_path / "lr-1e-3" / "losses.jsonl", steps=80, loss=lambda s: 4 - s / 100)
    app, _ = viewer([tmp_path / "lr-3e-3", tmp_path / "lr-1e-3" / "losses.jsonl"])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        assert [r.name for r in app.runs] == ["lr-3e-3", "lr-1e-3"]
        loss = app.query_one("#loss", CurvePlot)
        assert loss.runs is app.runs and len(loss.runs) == 2
        assert "lr-3e-3" in loss.border_title and "lr-1e-3" in loss.border_title
        text = loss.render()
        colours = {str(span.style) for span in text.spans}
        assert len([c for c in colours if "color(4)" in c or "blue" in c]) and \
            len([c for c in colours if "color(1)" in c or "red" in c])  # one colour per run
        assert app.query_one(EvalLog).row_count == 10 + 8
        await pilot.press("q")


async def test_lesson_and_hugging_face_files_plot(tmp_path):
    lesson = tmp_path / "lesson.jsonl"
    lesson.write_text("".join(json.dumps({"step": s, "train_loss": 5 - s / 50, "lr": 1e-3}) + "\n"
                              for s in range(1, 101)))
    hf = tmp_path / "hf.jsonl"
    hf.write_text("".join(json.dumps(d) + "\n" for s in range(10, 210, 10) for d in
                          ([{"loss": 3 - s / 200, "learning_rate": 5e-5, "epoch": s / 100, "step": s}] +
                           ([{"eval_loss": 2.9 - s / 200, "epoch": s / 100, "step": s}] if s % 50 == 0 else []))))
    for path, steps, evals in ((lesson, 100, 0), (hf, 200, 4)):
        app, _ = viewer([path])
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.2)
            assert app.runs[0].step == steps and len(app.runs[0].evals) == evals
            assert has_curve(app.query_one("#loss", CurvePlot)), path
            assert has_curve(app.query_one("#lr", CurvePlot)), path
            await pilot.press("q")


async def test_follow_shows_appends_and_survives_truncation(tmp_path):
    log = write_run(tmp_path / "r" / "losses.jsonl", steps=20, eval_every=10, end=False)
    app, src = viewer([log], follow=True)

    def append(steps):
        with open(log, "ab", buffering=0) as f:
            for s in steps:
                line = dumps(TrainStep(step=s, train_loss=1.0, lr=0.1, tokens_per_sec=1.0,
                                       grad_norm=1.0, elapsed_s=s)).encode() + b"\n"
                f.write(line[:15])
                time.sleep(0.01)
                f.write(line[15:])

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        assert app.runs[0].step == 20 and app.query_one(EvalLog).row_count == 2
        assert "following" in src.status_text()
        th = threading.Thread(target=append, args=(range(21, 41),))
        th.start()
        await until(pilot, lambda: app.runs[0].step == 40, "appended steps")
        th.join()
        assert src.feeds[0].counts.bad == 0
        await pilot.press("question_mark")  # the re-read must not depend on which screen is up
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        log.write_text("")  # a rerun over the same file
        write_run(log, steps=5, eval_every=5, end=False)
        await until(pilot, lambda: app.runs[0].step == 5, "the re-read after truncation")
        await pilot.pause(0.3)
        await pilot.press("escape")
        await pilot.pause(0.3)
        assert app.query_one(EvalLog).row_count == 1  # the old run's rows are gone
        await pilot.press("q")
        await until(pilot, lambda: src.done, "the watcher to stop")


def test_follow_a_headless_run_in_another_process(tmp_path):
    """The viewer waits for a run folder that does not exist yet, then follows
    the real training process writing it, to its run-end record."""
    out = tmp_path / "live"
    src = FileSource([out], follow=True)
    src.prepare()
    src.start()
    proc = subprocess.Popen([sys.executable, "-m", "tui_trainer", "train", "--headless", "--steps", "30",
                             "--eval-every", "15", "--warmup-steps", "5", "--n-layer", "1", "--n-head", "2",
                             "--n-embd", "32", "--context-length", "16", "--batch-size", "4",
                             "--eval-batches", "2", "--sample-tokens", "8", "--threads", "1", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert src.status_text().startswith("following · waiting for")
        end = time.monotonic() + 120
        while time.monotonic() < end and not (src.runs[0].ended and src.runs[0].step == 30):
            for i, rec in src.poll():
                src.runs[i].apply(rec)
            time.sleep(0.05)
        run = src.runs[0]
        assert run.state == "finished" and run.step == 30 and [e.step for e in run.evals] == [15, 30]
        assert src.feeds[0].counts.bad == 0
    finally:
        proc.wait(timeout=120)
        src.close()
    assert proc.returncode == 0, proc.stderr.read().decode()


# --- bad input: one line, exit 2, no screen ---

def view(args, capsys):
    code = cli.main(["view", *map(str, args)])
    out, err = capsys.readouterr()
    return code, err


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("case, expect", [
    ("missing", "does not exist"),
    ("empty_dir", "folder without losses.jsonl; pass a run folder"),
    ("outputs", "view needs a terminal"),  # a folder of runs opens the runs browser (tests/test_runs_browser.py)
    ("binary", "is a binary file"),
    ("empty_file", "has no plottable record"),
    ("junk", "has no plottable record (3 lines: 2 unreadable, 1 without a step and a loss)"),
    ("fifo", "not a regular file"),
])
def test_bad_paths_exit_2_with_one_line(tmp_path, capsys, case, expect):
    p = tmp_path / case
    if case == "empty_dir":
        p.mkdir()
    elif case == "outputs":
        (p / "run-a").mkdir(parents=True)
        write_run(p / "run-b" / "losses.jsonl", steps=2)
    elif case == "binary":
        p.write_bytes(bytes(range(256)) * 4)
    elif case == "empty_file":
        p.write_text("")
    elif case == "junk":
        p.write_text('not json\n{"type": "eval", "step": "x"}\n{"message": "hello"}\n')
    elif case == "fifo":
        os.mkfifo(p)
    code, err = view([p], capsys)
    assert code == 2
    assert expect in one_error_line(err)


def test_unreadable_file_exits_2(tmp_path, capsys, monkeypatch):
    p = write_run(tmp_path / "r" / "losses.jsonl", steps=2)
    real_open = os.open

    def deny(path, *a, **kw):  # the tests run as root, where chmod 000 does not stop a read
        if os.fspath(path) == os.fspath(p):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(os, "open", deny)
    code, err = view([p], capsys)
    assert code == 2 and "permission denied" in one_error_line(err)


def test_one_bad_path_among_good_ones_names_it(tmp_path, capsys):
    good = write_run(tmp_path / "good" / "losses.jsonl", steps=3)
    code, err = view([good, tmp_path / "typo"], capsys)
    assert code == 2 and "typo does not exist" in one_error_line(err)


def status_and_banner(app) -> str:
    from tui_trainer.ui.alert import Alert
    from tui_trainer.ui.status_line import StatusLine
    return f"{app.query_one(StatusLine).render()}\n{app.query_one(Alert).render()}"


async def test_follow_says_running_only_while_a_process_holds_the_lock(tmp_path):
    """A followed log no process writes is not RUNNING: crashed (ours) or log
    (someone else's); RUNNING once a writer holds the lock; its end state at run_end."""
    import runmaker
    run = runmaker.write_run(tmp_path / "run", 20, end=None)
    foreign = tmp_path / "theirs.jsonl"
    foreign.write_text("".join(json.dumps({"step": s, "loss": 3.0 - s / 10}) + "\n" for s in range(1, 11)))
    app, src = viewer([run, foreign], follow=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: [r.state for r in app.runs] == ["crashed", "log"], "crashed and log")
        await until(pilot, lambda: "CRASHED" in status_and_banner(app), "CRASHED on screen")
        assert "RUNNING" not in status_and_banner(app) and math.isnan(app.runs[0].eta_s())
        lock = runmaker.live(run)  # a writer appears
        try:
            await until(pilot, lambda: app.runs[0].state == "running", "running once the lock is held")
            await until(pilot, lambda: "RUNNING" in status_and_banner(app), "RUNNING on screen")
            runmaker.append(run, runmaker.RunEnd(step=20, status="stopped", elapsed_s=10.0, time=1.7e9 + 30))
            await until(pilot, lambda: app.runs[0].state == "stopped", "its end state at run_end")
        finally:
            lock.release()
        await pilot.pause(0.6)  # a look after the lock was left: an ended run stays as it ended
        assert app.runs[0].state == "stopped" and app.runs[1].state == "log"
        await pilot.press("q")


@pytest.mark.parametrize("follow", [True, False])
async def test_a_log_deleted_while_shown_is_said(tmp_path, follow):
    import shutil

    import runmaker
    run = runmaker.write_run(tmp_path / "run", 20, end="finished")
    app, src = viewer([run], follow=follow)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs[0].state == "finished", "the run")
        assert "GONE" not in status_and_banner(app)
        (run / "losses.jsonl").unlink()
        # the status line and the banner are refreshed apart: wait for both to say it
        await until(pilot, lambda: "LOG GONE (file deleted)" in status_and_banner(app)
                    and "its log is gone" in status_and_banner(app), "the file said gone")
        await until(pilot, lambda: "following" not in status_and_banner(app), "no longer following")
        shutil.rmtree(run)
        await until(pilot, lambda: "LOG GONE (folder missing)" in status_and_banner(app), "the folder said gone")
        assert app.runs[0].step == 20  # what was read stays shown
        await pilot.press("q")
    assert src.done


async def test_the_status_line_is_one_row_when_its_first_draw_was_wider_than_the_window(tmp_path):
    """The status line's first text is made before the layout (width 0: every
    part kept), wider than the window, so it wraps to two rows; the next ones
    fit in one row but had as many lines, and the widget kept two rows: a blank
    row under the status line in ``view``, ``view --follow``, ``attach`` and ``run``."""
    folder = tmp_path / ("a-run-whose-status-line-is-longer-than-the-window-" + "x" * 20)
    write_run(folder / "losses.jsonl")
    app, source = viewer([folder])
    try:
        async with app.run_test(size=(60, 20)) as pilot:
            status = app.main.query_one("#status")
            await until(pilot, lambda: "FINISHED" in status._shown.plain and status.size.width > 0, "the status")
            await pilot.pause()
            await until(pilot, lambda: app.main.query_one("#top").region.y == status.region.height, "the layout")
            assert len(status._shown.plain.splitlines()) == 1
            assert status.region.height == 1, status.region
    finally:
        source.close()


@pytest.mark.parametrize("size, timed", [((80, 24), False), ((200, 50), True)])
async def test_the_eval_table_fits_its_pane_with_bits_per_byte(tmp_path, size, timed):
    """With the bpb column the time column did not fit the pane at 80x24 and
    was cut to ``0:`` at its edge; a narrow pane leaves it out whole."""
    from tui_trainer.records import Eval, RunEnd, RunStart

    folder = tmp_path / "bpb-run"
    folder.mkdir()
    lines = [RunStart(step=0, run_name="bpb-run", config={}, n_params=1, device="cpu", total_steps=9000, time=0.0)]
    for s in range(1, 9001):
        if s % 1800 == 0:
            lines.append(Eval(step=s, val_loss=2.5, train_loss=2.6, elapsed_s=s * 0.01, val_bpb=3.61, time=float(s)))
    lines += [TrainStep(step=9000, train_loss=2.5, lr=1e-3, tokens_per_sec=1e3, grad_norm=1.0, elapsed_s=8000.0,
                        time=8000.0), RunEnd(step=9000, status="finished", elapsed_s=8000.0, time=8000.0)]
    (folder / "losses.jsonl").write_text("".join(dumps(r) + "\n" for r in lines))
    app, source = viewer([folder])
    try:
        async with app.run_test(size=size) as pilot:
            table = app.main.query_one(EvalLog)
            await until(pilot, lambda: table.row_count == 5 and table.size.width > 0, "the evals")
            await pilot.pause()
            keys = [c.key.value for c in table.columns.values()]
            assert ("time" in keys) == timed and "bpb" in keys, keys
            assert table.virtual_size.width <= table.size.width, (table.virtual_size, table.size)
            await pilot.resize_terminal(*((200, 50) if size == (80, 24) else (80, 24)))  # a resize moves it
            await until(pilot, lambda: ("time" in [c.key.value for c in table.columns.values()]) != timed,
                        "the columns refitted to the new size")
            assert table.row_count == 5
    finally:
        source.close()


async def test_a_resize_to_a_small_terminal_takes_the_compact_layout_at_once(tmp_path):
    """The compact layout was decided from the app's size before the resize
    had set it: 80x24 was drawn as 200x50 had been, and the other way round."""
    folder = tmp_path / "run1"
    write_run(folder / "losses.jsonl")
    app, source = viewer([folder])
    try:
        async with app.run_test(size=(200, 50)) as pilot:
            await until(pilot, lambda: app.main.query_one(EvalLog).row_count == 5, "the evals")
            assert not app.main.has_class("-compact")
            await pilot.resize_terminal(80, 24)
            await until(pilot, lambda: app.main.has_class("-compact"), "the compact layout at 80x24")
            await pilot.resize_terminal(200, 50)
            await until(pilot, lambda: not app.main.has_class("-compact"), "the full layout at 200x50")
    finally:
        source.close()

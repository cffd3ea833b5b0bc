"""The run's edges: what a person reaches on an ordinary day with attach, a
dropped terminal, an odd path or a Ctrl-C at the wrong moment."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from tui_trainer import cli
from tui_trainer.run import signals
from tui_trainer.records import Checkpoint, RunEnd, RunStart
from tui_trainer.run.run import Run
from tui_trainer.run.folder import RunLock, is_live
from tui_trainer.run.log_writer import LOG_NAME, JsonlSink

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--context-length", "16", "--batch-size", "4",
        "--eval-batches", "2", "--sample-tokens", "8", "--threads", "1"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def write_log(folder: Path, *records) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    sink = JsonlSink(folder / LOG_NAME)
    for r in records:
        sink.emit(r)
    sink.close()


def start(name: str = "r") -> RunStart:
    return RunStart(step=0, run_name=name, config={}, n_params=1, device="cpu", total_steps=10)


# --- attach answers at once when there is nothing to attach to -------------

@pytest.fixture
def terminal(monkeypatch):
    """Pretend stdin and stdout are a terminal (pytest's are not)."""
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)


def test_attach_to_a_typo_is_one_line(tmp_path, capsys, terminal):
    assert cli.main(["attach", str(tmp_path / "nope")]) == 2
    assert "does not exist" in one_error_line(capsys)


def test_attach_to_a_folder_of_runs_lists_them(tmp_path, capsys, terminal):
    for name in ("run-a", "run-b"):
        write_log(tmp_path / "outputs" / name, start(name))
    assert cli.main(["attach", str(tmp_path / "outputs")]) == 2
    line = one_error_line(capsys)
    assert "folder of runs (run-a, run-b)" in line and "tui-trainer attach" in line


def test_attach_to_a_finished_run_offers_view(tmp_path, capsys, terminal):
    run = tmp_path / "done"
    write_log(run, start(), RunEnd(step=10, status="finished", elapsed_s=1.0))
    assert cli.main(["attach", str(run)]) == 2
    line = one_error_line(capsys)
    assert "has ended (finished at step 10)" in line and f"tui-trainer view {run}" in line


def test_attach_to_a_crashed_run_says_so(tmp_path, capsys, terminal):
    run = tmp_path / "crashed"
    write_log(run, start(), Checkpoint(step=5, path="x", reason="scheduled"))
    assert cli.main(["attach", str(run)]) == 2
    line = one_error_line(capsys)
    assert "not running" in line and "--resume" in line


def test_attach_without_a_terminal_refuses_and_names_the_ways(tmp_path, capsys):
    run = tmp_path / "live"
    write_log(run, start())
    with RunLock(run):  # a live run: its lock is held
        assert is_live(run)
        assert cli.main(["attach", str(run)]) == 2
    line = one_error_line(capsys)
    assert "needs a terminal" in line and "ssh -t" in line and "--send" in line
    assert not is_live(run)


# --- strings the product writes are strict JSON ------------------------------

def test_a_non_utf8_path_is_written_as_valid_json(tmp_path):
    odd = os.fsdecode(b"run-\xff\xfe")
    rec = RunStart(step=0, run_name=odd, config={"out": str(tmp_path / odd), "data": odd}, n_params=1,
                   device="cpu", total_steps=3)
    line = json.dumps(rec.to_dict())
    back = orjson.loads(line)  # orjson rejects lone surrogates: the viewer's parser
    assert back["run_name"] == "run-\\xff\\xfe" and back["config"]["data"] == "run-\\xff\\xfe"


def test_a_non_utf8_out_trains_and_its_log_reads_strictly(tmp_path, capsys):
    out = os.fsdecode(os.fsencode(str(tmp_path)) + b"/run-\xff")
    assert cli.main(["train", "--headless", "--steps", "4", "--eval-every", "2", *TINY, "--out", out]) == 0
    lines = (Path(out) / LOG_NAME).read_bytes().splitlines()
    recs = [orjson.loads(x) for x in lines]  # every line, strictly
    assert recs[0]["type"] == "run_start" and recs[-1]["type"] == "run_end"
    assert any(r["type"] == "checkpoint" for r in recs)


# --- folders that cannot be made ---------------------------------------------

def test_an_unwritable_out_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    real_mkdir = os.mkdir

    def refuse(path, *a, **kw):
        if str(path).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *a, **kw)

    monkeypatch.setattr(os, "mkdir", refuse)
    assert cli.main(["train", "--headless", "--steps", "2", *TINY, "--out", str(tmp_path / "ro" / "run")]) == 2
    line = one_error_line(capsys)
    assert "Read-only file system" in line and "--out" in line
    assert not (tmp_path / "ro").exists()


# --- a dropped terminal ------------------------------------------------------

def test_detach_redirects_the_fds_that_were_a_terminal_even_when_isatty_now_says_no(tmp_path):
    # After a real hangup isatty() on the dead pty can answer False: the fds
    # noted at start are redirected regardless, so later writes cannot EIO.
    r, w = os.pipe()
    saved = os.dup(2)
    try:
        os.dup2(w, 2)
        assert signals.detach_terminal([2]) == [2]
        assert os.path.samefile(f"/proc/self/fd/2", os.devnull)
    finally:
        os.dup2(saved, 2)
        for fd in (r, w, saved):
            os.close(fd)


STUCK_UI = textwrap.dedent("""
    import os, signal, sys, threading, time
    from tui_trainer import cli
    import tui_trainer.ui.app as app

    def stuck_dashboard(trainer=None, mouse=True, signals=None, source=None):
        source.start()             # prepares the trainer, then trains
        source.ready.wait()
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGHUP)   # the SSH connection drops...
        while True:                           # ...and the UI's shutdown hangs on the dead terminal
            time.sleep(1)

    app.run_dashboard = stuck_dashboard
    sys.stdin.isatty = lambda: True
    sys.stdout.isatty = lambda: True
    sys.exit(cli.main(sys.argv[1:]))
""")


def test_after_a_drop_the_process_leaves_soon_after_its_run_ends(tmp_path):
    out = tmp_path / "run"
    script = tmp_path / "stuck.py"
    script.write_text(STUCK_UI)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, str(script), "train", "--steps", "30", "--eval-every", "10", *TINY,
                          "--out", str(out)], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        pytest.fail("the process never left after its run ended (it still held the lock)")
    recs = [json.loads(x) for x in (out / LOG_NAME).read_text().splitlines()]
    assert recs[-1]["type"] == "run_end" and recs[-1]["status"] == "finished"
    assert p.returncode == 0
    assert not is_live(out) and not (out / "control.sock").exists()


def test_a_ctrl_c_during_close_leaves_no_socket(tmp_path):
    run = Run.create(str(tmp_path / "run"))
    run.open(log=True, control=True, signals=True)
    sock = tmp_path / "run" / "control.sock"
    assert sock.exists()
    server = run._out.control
    real_close = server.close

    def interrupted_close():
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C lands mid-teardown
        time.sleep(0.05)
        real_close()

    server.close = interrupted_close
    run.close()
    assert not sock.exists() and not is_live(tmp_path / "run")


# --- the disk fills while the log is written ------------------------------------

def test_a_full_disk_ends_the_run_failed_with_one_line_and_a_readable_log(tmp_path, capsys, monkeypatch):
    real_write = JsonlSink._write
    calls = {"n": 0}

    def filling(self, data):
        calls["n"] += 1
        if calls["n"] > 60:  # the disk is full from here on
            os.write(self._fd, data[: len(data) // 2])  # a torn half line reaches the file first
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, data)

    monkeypatch.setattr(JsonlSink, "_write", filling)
    out = tmp_path / "run"
    code = cli.main(["train", "--headless", "--steps", "200", "--eval-every", "20", *TINY, "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "No space left on device" in err and "Traceback" not in err
    assert f"--resume {out}" in err
    raw = (out / LOG_NAME).read_bytes()
    assert raw.endswith(b"\n")
    recs = [orjson.loads(x) for x in raw.splitlines()]  # every line whole and strict
    last_train = max(r["step"] for r in recs if r["type"] == "train")
    assert last_train < 200
    # A final checkpoint where space allowed: at the step the run stopped.
    assert (out / "latest.pt").exists()
    from tui_trainer.run.checkpoint import load_checkpoint
    assert load_checkpoint(out / "latest.pt")["step"] >= last_train


# --- a resume that cannot be exact says so ---------------------------------------

def test_resume_with_other_threads_says_it_is_not_exact(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--headless", "--steps", "6", "--eval-every", "3", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--headless", "--resume", str(out), "--steps", "9", "--threads", "2"]) == 0
    printed = capsys.readouterr().out
    assert "not bit-identical" in printed
    starts = [json.loads(x) for x in (out / LOG_NAME).read_text().splitlines() if '"run_start"' in x]
    assert starts[-1]["inexact"] == ["threads"] and starts[0].get("inexact") is None
    from tui_trainer.curves.series import RunSeries
    from tui_trainer.records import from_dict
    s = RunSeries()
    s.apply(from_dict(starts[-1]))
    assert "not bit-identical" in s.message


@pytest.mark.parametrize("nonfinite", [5, None, "x", {"a": 1}, True, [["nested"]]])
def test_from_dict_never_raises_on_an_odd_nonfinite(nonfinite):
    from tui_trainer.records import from_dict
    rec = from_dict({"type": "train", "step": 3, "train_loss": None, "lr": 0.1, "tokens_per_sec": 1.0,
                     "grad_norm": 1.0, "elapsed_s": 1.0, "nonfinite": nonfinite})
    assert rec is None or rec.step == 3


# --- first-hour defaults -----------------------------------------------------------

@pytest.mark.parametrize("command", [["train"], ["view", "x"], ["attach", "x"]])
def test_the_mouse_is_left_to_the_terminal_unless_asked(command):
    parser = cli.build_parser()
    assert parser.parse_args(command).mouse is False  # copy and paste work over SSH
    assert parser.parse_args(command + ["--mouse"]).mouse is True
    assert parser.parse_args(command + ["--no-mouse"]).mouse is False  # the old flag still works


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("tui-trainer ")


def test_view_without_a_terminal_refuses_instead_of_spinning(tmp_path, capsys):
    run = tmp_path / "run"
    write_log(run, start(), RunEnd(step=10, status="finished", elapsed_s=1.0))
    from tui_trainer.records import TrainStep
    sink = JsonlSink(run / LOG_NAME)
    sink.emit(TrainStep(step=1, train_loss=1.0, lr=0.1, tokens_per_sec=1.0, grad_norm=1.0, elapsed_s=1.0))
    sink.close()
    assert cli.main(["view", str(run)]) == 2
    line = one_error_line(capsys)
    assert "needs a terminal" in line and "ssh -t" in line


# --- the numbers people watch ----------------------------------------------------

def test_run_start_carries_what_mfu_needs_and_resources_are_sampled(tiny_cfg, monkeypatch):
    from tui_trainer.run import resources
    from tui_trainer.train.engine import Trainer
    from tui_trainer.records import Resources
    from tui_trainer.curves.series import RunSeries

    monkeypatch.setattr(resources, "EVERY_S", 0.0)  # a sample after every step
    seen = []
    t = Trainer(tiny_cfg(steps=5, eval_every=5, threads=1), None, [type("S", (), {"emit": lambda s, r: seen.append(r)})()])
    t.run()
    start = seen[0]
    assert start.flops_per_token > 6 * t.model.num_params() and start.peak_flops > 0
    samples = [r for r in seen if isinstance(r, Resources)]
    assert samples and all(r.rss_mb > 10 for r in samples) and samples[0].cuda_allocated_mb is None
    s = RunSeries()
    for r in seen:
        s.apply(r)
    assert 0 < s.mfu() < 1 and s.resources is samples[-1]


async def test_the_status_line_shows_mfu_and_memory():
    from tui_trainer.records import Resources, RunStart, TrainStep
    from tui_trainer.curves.series import RunSeries
    from tui_trainer.ui.sources import QueueSource
    from tui_trainer.ui.app import DashboardApp
    from tui_trainer.ui.status_line import StatusLine
    from uitools import until

    src = QueueSource()
    sink = src.sink(0)
    sink.emit(RunStart(step=0, run_name="r", config={}, n_params=1, device="cpu", total_steps=100,
                       flops_per_token=1e6, peak_flops=1e11))
    for k in range(1, 11):
        sink.emit(TrainStep(step=k, train_loss=2.0, lr=1e-3, tokens_per_sec=2000.0, grad_norm=1.0,
                            elapsed_s=k * 0.5, tokens=1000 * k))
    sink.emit(Resources(step=10, rss_mb=412.0))
    app = DashboardApp(src, [RunSeries("r")])
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.runs[0].step == 10, "the records")
        await pilot.pause(0.3)
        line = str(app.screen.query_one(StatusLine).render())
        assert "MFU 2.0%" in line and "mem 412M" in line, line


async def test_a_run_that_ended_diverged_is_not_called_paused():
    from tui_trainer.records import BadStep, Paused
    from tui_trainer.curves.series import RunSeries
    from tui_trainer.ui.sources import QueueSource
    from tui_trainer.ui.app import DashboardApp
    from tui_trainer.ui.alert import Alert
    from uitools import until

    src = QueueSource()
    sink = src.sink(0)
    sink.emit(start())
    for k in range(1, 6):
        sink.emit(BadStep(step=0, train_loss=float("nan"), grad_norm=float("nan"), consecutive=k))
    sink.emit(RunEnd(step=0, status="diverged", elapsed_s=1.0))
    app = DashboardApp(src, [RunSeries("r")])
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.runs[0].state == "diverged", "the end")
        await pilot.pause(0.3)
        text = str(app.screen.query_one(Alert).render())
        assert "ended DIVERGED" in text and "paused" not in text, text


def test_a_log_read_at_once_shows_the_runs_average_rate_and_no_impossible_mfu(tmp_path):
    from tui_trainer.logs import load_series
    from tui_trainer.records import TrainStep

    run = tmp_path / "r"
    recs = [RunStart(step=0, run_name="r", config={}, n_params=1, device="cpu", total_steps=100,
                     flops_per_token=1e6, peak_flops=1e9)]
    # 100 steps of 1000 tokens in 10 s; the last step happened to be very fast.
    recs += [TrainStep(step=k, train_loss=2.0, lr=1e-3, tokens_per_sec=1e4 if k < 100 else 1e6, grad_norm=1.0,
                       elapsed_s=k * 0.1, tokens=1000 * k) for k in range(1, 101)]
    write_log(run, *recs)
    s, _ = load_series(run)
    assert s.rates()[1] == pytest.approx(1e4)  # not the last step's 1e6
    assert s.mfu() != s.mfu()  # 1e4 tok/s x 1e6 FLOPs against a 1e9 peak is over 100%: not shown


def test_a_text_run_samples_from_a_prompt_taken_from_its_data(tmp_path, capsys):
    text = "".join(f"The quick brown fox {i} jumps over the lazy dog.\n" for i in range(3000))
    data = tmp_path / "english.txt"
    data.write_text(text)
    out = tmp_path / "run"
    assert cli.main(["train", "--headless", "--data", str(data), "--steps", "4", "--eval-every", "2", *TINY,
                     "--out", str(out)]) == 0
    recs = [json.loads(x) for x in (out / LOG_NAME).read_text().splitlines()]
    prompt = recs[0]["config"]["sample_prompt"]
    assert prompt.startswith("The quick") and "\x00" not in prompt
    assert all(r["prompt"] == prompt and r["text"].startswith(prompt) for r in recs if r["type"] == "sample")
    # Given explicitly, or on the embedded corpus, the prompt is the one asked for.
    from tui_trainer.config import make_config
    assert make_config({"data": str(data), "sample_prompt": "Once"}).sample_prompt == "Once"
    assert make_config({}).sample_prompt == "def "


def test_a_short_smoke_test_under_torchrun_with_two_cpu_ranks(tmp_path):
    from test_distributed import torchrun

    proc = torchrun(["--steps", "30", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--context-length", "16",
                     "--batch-size", "4", "--eval-batches", "2", "--sample-tokens", "8", "--out", str(tmp_path / "r")],
                    tmp_path)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-2000:]
    recs = [json.loads(x) for x in (tmp_path / "r" / LOG_NAME).read_text().splitlines()]
    assert recs[-1]["type"] == "run_end" and recs[-1]["status"] == "finished" and recs[-1]["step"] == 30
    assert sum(r["type"] == "eval" for r in recs) >= 2
    assert "rank 1: run finished at step 30" in err

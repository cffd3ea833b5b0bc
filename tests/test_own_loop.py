"""A training loop of your own under the same run (issue 17): ``tui_trainer.init``,
``run.log``, ``should_stop``, ``finish``, steered over the control socket, read
back by the log reader; two ranks under torchrun; ``tui-trainer run``."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import tui_trainer
from tui_trainer.control.channel import request
from tui_trainer.errors import UserError
from tui_trainer.logs import load_series, read_records
from tui_trainer.logs.formats.ours import typed_record
from tui_trainer.records import Eval, TrainStep
from tui_trainer.run.folder import is_live
from tui_trainer.loops.own_loop import OwnLoop
from tui_trainer.run.run import Run

from test_distributed import _env, wait_for as _wait_for

REPO = Path(__file__).resolve().parents[1]


def wait_for(pred, timeout: float = 60.0) -> bool:
    def safe():
        try:
            return pred()
        except Exception:  # the socket or the log is not there yet
            return False
    return _wait_for(safe, timeout)


def log_of(folder: Path) -> list[dict]:
    return read_records(folder / "losses.jsonl")


class TinyLoop:
    """A plain PyTorch loop, a few lines, using the API; ``returned`` counts
    the ``run.log`` calls that have returned."""

    def __init__(self, folder: Path, **init_kw):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 1)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.05)
        self.evals: list[int] = []
        self.saves: list[int] = []
        self.returned = 0
        self.run = tui_trainer.init(folder, config={"lr": 0.05, "layers": 1}, on_eval=self.evaluate,
                                    on_checkpoint=self.save, total_steps=10**6, model=self.model, quiet=True,
                                    **init_kw)
        self.run.on_setting("lr", self.set_lr)

    def evaluate(self, step: int) -> dict:
        self.evals.append(step)
        return {"val_loss": 0.5, "accuracy": 0.75}

    def save(self, step: int):
        self.saves.append(step)
        return self.run.save_checkpoint(step, {"model": self.model.state_dict(), "step": step})

    def set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def train(self) -> None:
        with self.run as run:
            step = 0
            while not run.should_stop:
                step += 1
                loss = self.model(torch.randn(8, 4)).pow(2).mean()
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                run.log(step, train_loss=loss.item(), lr=self.opt.param_groups[0]["lr"], acc=0.9, tokens=32 * step)
                self.returned += 1


def test_a_plain_loop_steered_over_the_socket(tmp_path):
    folder = tmp_path / "run"
    loop = TinyLoop(folder)
    # It has (composition, not a mixin) the very class the built-in trainer reports to.
    assert isinstance(loop.run, OwnLoop) and isinstance(loop.run._run, Run)
    worker = threading.Thread(target=loop.train)
    worker.start()
    try:
        assert wait_for(lambda: loop.returned >= 3)
        assert request(folder, "pause")["ok"]
        assert wait_for(lambda: request(folder, "status")["state"] == "paused")
        paused_at = request(folder, "status")["step"]
        # While paused, the loop answers inside the log() call that blocks it.
        assert request(folder, "eval")["ok"]
        assert wait_for(lambda: loop.evals == [paused_at])
        assert request(folder, "checkpoint")["ok"]
        assert wait_for(lambda: loop.saves == [paused_at])
        assert request(folder, {"cmd": "set", "key": "lr", "value": 0.01})["ok"]
        assert wait_for(lambda: any(r["type"] == "change" for r in log_of(folder)))
        assert loop.returned == paused_at - 1  # log(paused_at) has not returned: the loop waits in it
        assert request(folder, "status")["step"] == paused_at

        # What the loop cannot do is refused at once, with the reason.
        answer = request(folder, {"cmd": "sample", "prompt": "def "})
        assert not answer["ok"] and "on_sample" in answer["error"]
        answer = request(folder, {"cmd": "set", "key": "lr_scale", "value": 0.5})
        assert not answer["ok"] and "unknown setting 'lr_scale'" in answer["error"] and "lr" in answer["error"]
        answer = request(folder, {"cmd": "set", "key": "lr", "value": "fast"})
        assert not answer["ok"] and "lr must be a number" in answer["error"]

        assert request(folder, "resume")["ok"]
        assert wait_for(lambda: loop.returned > paused_at + 2)
        assert request(folder, "stop")["ok"]
        worker.join(timeout=60)
        assert not worker.is_alive()
    finally:
        if worker.is_alive():
            loop.run.request_stop()
            worker.join(timeout=10)

    recs = log_of(folder)
    types = [r["type"] for r in recs]
    assert types[0] == "run_start" and types.count("run_start") == 1
    assert recs[0]["config"] == {"lr": 0.05, "layers": 1} and recs[0]["n_params"] == 5
    end = recs[-1]
    assert end["type"] == "run_end" and end["status"] == "stopped" and end["error"] is None
    train = [r for r in recs if r["type"] == "train"]
    assert [r["step"] for r in train] == list(range(1, end["step"] + 1))
    assert all(r["acc"] == 0.9 for r in train)  # an extra number, a flat key of the line
    assert train[-1]["tokens"] == 32 * end["step"]
    assert loop.opt.param_groups[0]["lr"] == 0.01 and loop.run.config["lr"] == 0.01
    assert train[-1]["lr"] == 0.01
    pause, ev = next(r for r in recs if r["type"] == "pause"), next(r for r in recs if r["type"] == "eval")
    assert pause["step"] == ev["step"] == paused_at
    assert ev["forced"] and ev["val_loss"] == 0.5 and ev["accuracy"] == 0.75
    ck = next(r for r in recs if r["type"] == "checkpoint")
    assert ck["reason"] == "manual" and ck["step"] == paused_at and ck["val_loss"] == 0.5
    change = next(r for r in recs if r["type"] == "change")
    assert (change["key"], change["old"], change["new"], change["source"]) == ("lr", 0.05, 0.01, "attach")
    assert torch.load(folder / "latest.pt")["step"] == paused_at
    assert (folder / "best.pt").exists()  # the eval at that step was the best so far
    # The run is over: no lock, no socket.
    assert not is_live(folder) and not (folder / "control.sock").exists()

    # The log reader (what view, attach and the runs browser read) reads it back.
    series, counts = load_series(folder)
    assert counts.bad == 0 and series.state == "stopped" and series.step == end["step"]
    assert [(e.step, e.val) for e in series.evals] == [(paused_at, 0.5)]
    assert series.last_checkpoint is not None and series.last_checkpoint.reason == "manual"
    assert series.config == {"lr": 0.05, "layers": 1}
    back = typed_record(train[-1])
    assert isinstance(back, TrainStep) and back.extra == {"acc": 0.9}
    back = typed_record(ev)
    assert isinstance(back, Eval) and back.extra == {"accuracy": 0.75} and back.forced


def test_a_loop_without_callbacks_is_refused_eval_checkpoint_and_settings(tmp_path):
    folder = tmp_path / "run"
    run = tui_trainer.init(folder, quiet=True)
    try:
        for cmd, why in (("eval", "on_eval"), ("checkpoint", "on_checkpoint")):
            answer = request(folder, cmd)
            assert not answer["ok"] and why in answer["error"], answer
        answer = request(folder, {"cmd": "set", "key": "lr", "value": 0.1})
        assert not answer["ok"] and "unknown setting 'lr'" in answer["error"] and "pause_at" in answer["error"]
        # pause_at is the run's own: it pauses the loop inside log() at that step.
        assert request(folder, {"cmd": "set", "key": "pause_at", "value": 2})["ok"]
        run.log(1, train_loss=1.0)
        assert not run.paused
        assert request(folder, "stop")["ok"]  # so the pause at step 2 lets go at once
        run.log(2, train_loss=1.0)
        assert run.should_stop
    finally:
        end = run.finish()
    assert end.status == "stopped" and end.step == 2
    assert run.finish() is end  # once only
    assert [r["type"] for r in log_of(folder)].count("run_end") == 1


def test_an_exception_in_the_with_block_ends_the_run_failed(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom"):
        with tui_trainer.init(folder, quiet=True) as run:
            run.log(1, train_loss=2.0, lr=1e-3)
            raise RuntimeError("boom")
    end = log_of(folder)[-1]
    assert end["type"] == "run_end" and end["status"] == "failed" and end["error"] == "RuntimeError: boom"
    assert end["step"] == 1 and not is_live(folder)


def test_numbers_are_checked_and_non_finite_ones_named(tmp_path):
    folder = tmp_path / "run"
    with tui_trainer.init(folder, quiet=True) as run:
        with pytest.raises(ValueError, match="'elapsed_s' is a key of the record"):
            run.log(1, train_loss=1.0, elapsed_s=3.0)
        with pytest.raises(TypeError, match="acc must be a number"):
            run.log(1, train_loss=1.0, acc="high")
        with pytest.raises(TypeError, match="step must be an integer"):
            run.log(1.5, train_loss=1.0)
        run.log(1, train_loss=torch.tensor(2.5), lr=None, ratio=math.nan, epoch=0)
        run.log_eval(1, val_loss=torch.tensor(3.0), perplexity=math.inf)
        run.log_sample(1, "hello", prompt="he")
        path = run.save_checkpoint(1, lambda: {"w": torch.ones(2)})
    assert path == folder / "ckpt-step00000001.pt" and (folder / "latest.pt").exists()
    lines = (folder / "losses.jsonl").read_text().splitlines()
    train = json.loads(next(line for line in lines if '"train"' in line))
    assert train["train_loss"] == 2.5 and train["lr"] is None and train["ratio"] is None and train["epoch"] == 0
    assert {"lr", "ratio"} <= set(train["nonfinite"])
    assert list(train)[:9] == ["type", "step", "time", "train_loss", "lr", "tokens_per_sec", "grad_norm",
                               "elapsed_s", "tokens"]  # the record's own keys first, in their order
    ev = json.loads(next(line for line in lines if '"eval"' in line))
    assert ev["val_loss"] == 3.0 and ev["perplexity"] is None and "perplexity" in ev["nonfinite"]
    back = typed_record(ev)
    assert math.isnan(back.extra["perplexity"])  # null named in nonfinite reads back as NaN
    ck = json.loads(next(line for line in lines if '"checkpoint"' in line))
    assert ck["val_loss"] == 3.0 and ck["reason"] == "scheduled"  # the eval logged at that step


def test_a_folder_holding_a_run_is_refused_unless_resumed(tmp_path):
    folder = tmp_path / "run"
    with tui_trainer.init(folder, quiet=True) as run:
        for step in range(1, 7):
            run.log(step, train_loss=10.0 - step)
            if step == 4:
                run.save_checkpoint(step, {"step": step})
        live = folder  # while it runs, a second writer is refused too
        with pytest.raises(UserError, match="in use"):
            tui_trainer.init(live, resume=True, quiet=True)
    with pytest.raises(UserError, match="already holds a run; pass a new folder, or resume=True"):
        tui_trainer.init(folder, quiet=True)

    with tui_trainer.init(folder, resume=True, quiet=True) as run:
        assert run.step == 4 and run.resumed_from == str(folder / "ckpt-step00000004.pt")
        for step in range(5, 9):
            run.log(step, train_loss=1.0)
    recs = log_of(folder)
    starts = [r for r in recs if r["type"] == "run_start"]
    assert [s["resumed"] for s in starts] == [False, True] and starts[1]["step"] == 4
    series, _ = load_series(folder)  # steps 5 and 6 of the first session are superseded
    assert series.step == 8 and series.state == "finished"
    assert list(series.loss.points(100)[1][-4:]) == [1.0, 1.0, 1.0, 1.0]


def test_a_record_after_finish_is_refused_in_one_line(tmp_path):
    from tui_trainer.loops.own_loop import RunFinishedError

    folder = tmp_path / "run"
    run = tui_trainer.init(folder, quiet=True)
    run.log(1, train_loss=1.0)
    run.finish()
    before = (folder / "losses.jsonl").read_bytes()
    calls = [lambda: run.log(2, train_loss=0.5), lambda: run.log(2, steer=False), lambda: run.log_eval(2, 0.5),
             lambda: run.log_sample(2, "text"), lambda: run.save_checkpoint(2, {"w": torch.ones(1)}),
             lambda: run.log_checkpoint(2, folder / "x.pt")]
    for call in calls:
        with pytest.raises(RunFinishedError) as e:
            call()
        assert isinstance(e.value, RuntimeError) and isinstance(e.value, UserError)
        assert "after finish()" in str(e.value) and "finished at step 1" in str(e.value)
        assert "\n" not in str(e.value)
    assert (folder / "losses.jsonl").read_bytes() == before and not (folder / "ckpt-step00000002.pt").exists()


EXITING = """
import sys, tui_trainer
run = tui_trainer.init(sys.argv[1], quiet=True)
run.log(1, train_loss=1.0)
{body}
"""


@pytest.mark.parametrize("body, status, error", [
    ("sys.exit(3)", "failed", "the script exited with status 3"),
    ("sys.exit('no data')", "failed", "the script exited: no data"),
    ("raise ValueError('bad')", "failed", "ValueError: bad"),
    ("with run:\n    sys.exit(4)", "failed", "the script exited with status 4"),
    ("with run:\n    raise SystemExit(0)", "finished", None),
    ("sys.exit(0)", "finished", None),
    ("pass", "finished", None),
], ids=["exit-3", "exit-text", "exception", "with-exit-4", "with-exit-0", "exit-0", "end"])
def test_a_scripts_exit_status_is_how_its_run_ends(tmp_path, body, status, error):
    folder = tmp_path / "run"
    out = subprocess.run([sys.executable, "-c", EXITING.format(body=body), str(folder)], capture_output=True,
                         text=True, timeout=60, env=_env())
    end = log_of(folder)[-1]
    assert (end["type"], end["status"], end["error"], end["step"]) == ("run_end", status, error, 1), out.stderr
    assert [r["type"] for r in log_of(folder)].count("run_end") == 1
    assert (out.returncode == 0) == (status == "finished")


def test_integers_beyond_float_range_are_refused_at_log(tmp_path):
    folder = tmp_path / "run"
    with tui_trainer.init(folder, quiet=True, config={"n": 10**400, "m": [-(10**5000)], "ok": 10**300}) as run:
        assert run.config == {"n": "an integer of 1329 bits", "m": ["an integer of 16610 bits"], "ok": 10**300}
        for bad in (dict(big=10**400), dict(train_loss=10**400), dict(tokens=-10**400), dict(acc=-(10**309))):
            with pytest.raises(ValueError, match="beyond float range") as e:
                run.log(1, **bad)
            assert "\n" not in str(e.value) and len(str(e.value)) < 200
        with pytest.raises(ValueError, match="step is an integer of 1329 bits, beyond float range"):
            run.log(10**400, train_loss=1.0)
        with pytest.raises(ValueError, match="beyond float range"):
            run.log_eval(1, val_loss=1.0, big=10**400)
        run.log(1, train_loss=1.0, big=10**300, tokens=2**62)  # large, but numbers every reader takes
    recs = log_of(folder)
    assert [r["type"] for r in recs] == ["run_start", "train", "run_end"]
    assert recs[1]["big"] == float(10**300) and recs[1]["tokens"] == 2**62
    series, _ = load_series(folder)  # the viewer reads the line, rather than skipping it
    assert series.step == 1


def test_run_end_is_at_the_last_step_logged_from_threads_without_steering(tmp_path):
    folder = tmp_path / "run"
    run = tui_trainer.init(folder, quiet=True)

    def worker(first: int) -> None:
        for step in range(first, 300, 3):
            run.log(step, steer=False, train_loss=1.0)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert run.step == 299  # what status answers say
    end = run.finish()
    recs = log_of(folder)
    assert max(r["step"] for r in recs if r["type"] == "train") == 299
    assert end.step == 299 and recs[-1]["type"] == "run_end" and recs[-1]["step"] == 299


def test_import_is_cheap_and_init_is_there():
    code = ("import sys, tui_trainer; f = tui_trainer.init; "
            "print(callable(f), 'torch' in sys.modules, 'textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env())
    assert out.stdout.split() == ["True", "False", "False"]


# --- two ranks ----------------------------------------------------------------

DDP_LOOP = r"""
import sys
from pathlib import Path
import torch, torch.distributed as dist
import tui_trainer

dist.init_process_group("gloo")
rank = dist.get_rank()
folder, marks = Path(sys.argv[1]), Path(sys.argv[2])
torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)

def evaluate(step):
    (marks / f"eval-rank{rank}-step{step}").touch()
    return {"val_loss": 1.0}

run = tui_trainer.init(folder, config={"ranks": 2}, on_eval=evaluate, total_steps=10**6, quiet=True)
step = 0
with run:
    while not run.should_stop:
        step += 1
        loss = model(torch.randn(8, 4)).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
        run.log(step, train_loss=loss.item())
print(f"rank {rank} left at step {step}", flush=True)
dist.destroy_process_group()
"""


def test_two_ranks_get_the_same_pauses_evals_and_stop(tmp_path):
    script, folder, marks = tmp_path / "loop.py", tmp_path / "run", tmp_path / "marks"
    script.write_text(DDP_LOOP)
    marks.mkdir()
    env = dict(_env(), TORCH_CPP_LOG_LEVEL="ERROR")
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(script), str(folder), str(marks)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: request(folder, "status")["step"] >= 3, 120), "the run never served its socket"
        assert request(folder, "pause")["ok"]
        assert wait_for(lambda: request(folder, "status")["state"] == "paused")
        paused_at = request(folder, "status")["step"]
        assert request(folder, "eval")["ok"]
        assert wait_for(lambda: len(list(marks.iterdir())) == 2)
        # Both ranks evaluated at the step they both paused at; neither trained on.
        assert sorted(p.name for p in marks.iterdir()) == [f"eval-rank{r}-step{paused_at}" for r in (0, 1)]
        assert request(folder, "status")["step"] == paused_at
        assert request(folder, "resume")["ok"]
        assert wait_for(lambda: request(folder, "status")["step"] > paused_at + 2)
        assert request(folder, "stop")["ok"]
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    recs = log_of(folder)
    end = recs[-1]
    assert end["type"] == "run_end" and end["status"] == "stopped"
    # Rank 0 alone wrote: one run_start, each step once; both ranks left at the same step.
    assert [r["type"] for r in recs].count("run_start") == 1 and "x2 ranks (gloo)" in recs[0]["device"]
    assert [r["step"] for r in recs if r["type"] == "train"] == list(range(1, end["step"] + 1))
    assert sorted(line for line in out.splitlines() if line.startswith("rank")) == \
        [f"rank {r} left at step {end['step']}" for r in (0, 1)]
    assert not (folder / "control.sock").exists()


# --- tui-trainer run ----------------------------------------------------------

def test_run_starts_the_script_and_attaches_to_the_run_it_creates(tmp_path, monkeypatch):
    from tui_trainer.loops import launch
    from tui_trainer.ui import attach

    folder = tmp_path / "run"
    attached = []

    def fake_attach(run_dir, mouse=True):  # the dashboard: here it steers once and closes
        attached.append(Path(run_dir))
        assert wait_for(lambda: request(run_dir, "status")["step"] >= 2)
        assert request(run_dir, "stop")["ok"]
        return 0

    monkeypatch.setattr(attach, "run_attach", fake_attach)
    monkeypatch.setattr(launch, "has_terminal", lambda: True)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    code = launch.launch(["--", sys.executable, str(REPO / "examples" / "own_loop.py"), "--steps", "10000000",
                          "--out", str(folder)], mouse=False)
    assert code == 0
    assert attached == [folder.resolve()]
    assert log_of(folder)[-1]["status"] == "stopped"
    # The script's output after init went to the run folder, not over the dashboard.
    assert "stopped at step" in (folder / "output.log").read_text()

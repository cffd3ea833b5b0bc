"""Start-up (issue 20, items 10 and 12): nothing read at start blocks on a file
that is not a regular one; SIGINT and SIGTERM end the process in any phase;
PyTorch that cannot load is one line.  Every test points HOME and
XDG_CACHE_HOME at its own folder, so the real cache is never touched."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tui_trainer.cli import main
from tui_trainer.files import read_if_regular
from tui_trainer.logs import read_records

from test_distributed import _env

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--context-length", "16", "--batch-size", "4",
        "--eval-batches", "2", "--sample-tokens", "8", "--log-every", "1"]


def env_home(tmp_path: Path, xdg: bool = False) -> dict[str, str]:
    env = _env()
    env["HOME"] = str(tmp_path / "home")
    env.pop("XDG_CACHE_HOME", None)
    if xdg:
        env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    return env


def fifo_cache(tmp_path: Path, xdg: bool) -> Path:
    where = (tmp_path / "xdg" if xdg else tmp_path / "home" / ".cache") / "tui-trainer"
    where.mkdir(parents=True)
    os.mkfifo(where / "peak-flops.json")
    return where / "peak-flops.json"


def tui(args: list[str], cwd: Path, env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui_trainer", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=kw.pop("timeout", 180), **kw)


def test_a_fifo_as_the_peak_cache_neither_hangs_training_nor_is_replaced(tmp_path):
    fifo = fifo_cache(tmp_path, xdg=False)
    out = tui(["train", "--headless", "--steps", "3", "--out", "run", *TINY], tmp_path, env_home(tmp_path))
    assert out.returncode == 0, out.stderr
    recs = read_records(tmp_path / "run" / "losses.jsonl")
    assert recs[-1]["type"] == "run_end" and recs[-1]["status"] == "finished" and recs[-1]["step"] == 3
    assert recs[0]["peak_flops"] > 0  # measured all the same, just not cached
    assert Path(fifo).is_fifo()


PEAK_TWICE = r"""
import os, sys
from tui_trainer.train.hardware import cache_dir, cpu_peak_flops
first = cpu_peak_flops()            # a FIFO at the cache's name: measured, nothing read or written
fifo = cache_dir() / "peak-flops.json"
print(first > 0, fifo.is_fifo())
fifo.unlink()
print(cpu_peak_flops() > 0, fifo.is_file())   # a regular cache is written as before
"""


def test_the_peak_cache_is_read_from_xdg_cache_home_and_kept_when_regular(tmp_path):
    fifo_cache(tmp_path, xdg=True)
    out = subprocess.run([sys.executable, "-c", PEAK_TWICE], env=env_home(tmp_path, xdg=True),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True", "True"]
    assert not (tmp_path / "home" / ".cache").exists()


def test_read_if_regular_never_blocks_and_reads_only_regular_files(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "big").write_bytes(b"x" * 101)
    (tmp_path / "ok").write_bytes(b'{"a": 1}')
    os.symlink(tmp_path / "ok", tmp_path / "link")
    assert read_if_regular(tmp_path / "fifo", 100) is None
    assert read_if_regular(tmp_path / "dir", 100) is None
    assert read_if_regular(tmp_path / "big", 100) is None
    assert read_if_regular(tmp_path / "missing", 100) is None
    assert read_if_regular(tmp_path / "ok", 100) == b'{"a": 1}'
    assert read_if_regular(tmp_path / "link", 100) == b'{"a": 1}'


@pytest.mark.parametrize("body, says", [("a = " + "[" * 5000 + "]" * 5000, "nests too deeply"),
                                        ("steps = 3\n" + "#" * (2 << 20), "larger than")],
                         ids=["deep", "huge"])
def test_a_config_file_that_cannot_be_read_sensibly_is_one_line(tmp_path, monkeypatch, capsys, body, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(body)
    assert main(["train", "--headless", "--config", "c.toml", "--out", "run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: config file c.toml") and says in err, err
    assert not (tmp_path / "run").exists()


# A headless train whose start blocks at a known phase: after the run folder
# and its lock exist, while the trainer is built (a slow data load, a model
# build, a compile), or, with "run", after the log and socket are open and
# before the first step.
SLOW_START = r"""
import sys
import tui_trainer.train.engine as engine

phase = sys.argv[1]
target = "__init__" if phase == "build" else "run"
original = getattr(engine.Trainer, target)

def slow(self, *a, **k):
    print(phase, flush=True)
    sys.stdin.readline()
    return original(self, *a, **k)

setattr(engine.Trainer, target, slow)
from tui_trainer.cli import main
sys.exit(main(sys.argv[2:]))
"""


def start_slow(tmp_path: Path, phase: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", SLOW_START, phase, "train", "--headless", "--steps", "30",
                          "--out", "run", *TINY], cwd=tmp_path, env=env_home(tmp_path), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == phase
    return p


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_while_the_model_is_built_ends_the_process_and_leaves_no_folder(tmp_path, sig):
    p = start_slow(tmp_path, "build")
    assert (tmp_path / "run" / ".lock").exists()  # the folder and lock are there when it blocks
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + sig, err
    assert err.strip() == f"{signal.Signals(sig).name}: stopped before training began"
    assert not (tmp_path / "run").exists()  # no half-made run folder


def test_a_stop_acknowledged_before_the_first_step_ends_the_run_stopped(tmp_path):
    p = start_slow(tmp_path, "run")
    p.send_signal(signal.SIGTERM)
    # The acknowledgement is printed when the signal is taken; then the start goes on.
    assert "SIGTERM: stopping after this step" in p.stderr.readline()
    out, err = p.communicate("\n", timeout=120)
    assert p.returncode == 0, err
    end = read_records(tmp_path / "run" / "losses.jsonl")[-1]
    assert end["type"] == "run_end" and end["status"] == "stopped" and end["step"] == 0


def _limit_address_space(nbytes: int):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
    return limit


def test_pytorch_that_cannot_load_under_ulimit_v_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tui_trainer", "train", "--headless", "--steps", "3",
                          "--out", "run"], cwd=tmp_path, env=env_home(tmp_path), capture_output=True, text=True,
                         timeout=120, preexec_fn=_limit_address_space(320 << 20))
    assert out.returncode != 0
    assert out.stderr.startswith("error: PyTorch could not load: ") and out.stderr.count("\n") == 1, out.stderr
    assert "ulimit -v" in out.stderr and not (tmp_path / "run").exists()


def test_a_pytorch_import_that_fails_is_one_line_with_its_reason(tmp_path):
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        'raise ImportError("libtorch_cpu.so: failed to map segment from shared object")\n')
    env = env_home(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "fake"), env["PYTHONPATH"]])
    out = tui(["train", "--headless", "--steps", "3", "--out", "run"], tmp_path, env)
    assert out.returncode != 0 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: PyTorch could not load: libtorch_cpu.so: failed to map segment")

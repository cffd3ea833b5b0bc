"""Every GPU-path switch, checked on a machine without a GPU.

CUDA's presence and abilities are faked with monkeypatch; nothing here needs
(or touches) a real GPU: choosing ``cuda`` only builds a ``torch.device``.
"""
from __future__ import annotations

import pytest
import torch

from tui_trainer.train import hardware, threads
from tui_trainer.config import UserError, make_config
from tui_trainer.train.hardware import configure, pick_compile, pick_device, pick_dtype, pick_fused_adamw, pick_tf32
from tui_trainer.records import Status, TrainStep

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


@pytest.fixture
def fake_cuda(monkeypatch):
    """A CUDA GPU that is visible; bf16 support is set per test."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def set_bf16(ok: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: ok)

    set_bf16(True)
    # configure() writes the global TF32 switches: put them back afterwards.
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield set_bf16
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# --- device ---

def test_auto_device_is_cpu_without_a_gpu(no_cuda):
    assert pick_device("auto") == CPU


def test_auto_device_is_cuda_when_one_is_visible(fake_cuda):
    assert pick_device("auto") == CUDA


def test_asking_for_cuda_without_a_gpu_is_a_user_error(no_cuda):
    with pytest.raises(UserError, match="--device cpu"):
        pick_device("cuda")


# --- dtype: bf16 autocast, fp16 + grad scaler fallback ---

def test_cuda_with_bf16_autocasts_to_bf16(fake_cuda):
    assert pick_dtype("auto", CUDA) == "bf16"


def test_cuda_without_bf16_falls_back_to_fp16_with_a_grad_scaler(fake_cuda):
    fake_cuda(False)
    hw = configure(make_config({"device": "cuda"}))
    assert hw.dtype == "fp16"
    assert hw.grad_scaler


def test_asking_bf16_on_a_gpu_without_it_gives_fp16_and_says_why(fake_cuda):
    fake_cuda(False)
    notes: list[str] = []
    assert pick_dtype("bf16", CUDA, notes) == "fp16"
    assert any("fp16" in n for n in notes)


def test_dtype_fp32_turns_autocast_off_on_cuda(fake_cuda):
    hw = configure(make_config({"device": "cuda", "dtype": "fp32"}))
    assert hw.dtype == "fp32" and not hw.grad_scaler
    assert isinstance(hw.autocast(), type(__import__("contextlib").nullcontext()))


def test_cpu_auto_stays_fp32(no_cuda):
    hw = configure(make_config({}))
    assert hw.device == CPU and hw.dtype == "fp32" and not hw.grad_scaler


def test_cpu_bf16_flag_is_honoured_and_never_needs_a_scaler(no_cuda):
    hw = configure(make_config({"dtype": "bf16"}))
    assert hw.dtype == "bf16" and not hw.grad_scaler
    with hw.autocast():
        out = torch.nn.Linear(8, 8)(torch.randn(2, 8))
    assert out.dtype == torch.bfloat16


def test_cpu_fp16_request_falls_back_to_bf16(no_cuda):
    notes: list[str] = []
    assert pick_dtype("fp16", CPU, notes) == "bf16"
    assert any("bf16 instead" in n for n in notes)


def test_cpu_without_native_bf16_warns_but_honours_the_flag(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    notes: list[str] = []
    assert pick_dtype("bf16", CPU, notes) == "bf16"
    assert any("slower" in n for n in notes)


# --- TF32 ---

def test_tf32_on_by_default_on_cuda_and_set_globally(fake_cuda):
    torch.backends.cuda.matmul.allow_tf32 = False
    hw = configure(make_config({"device": "cuda"}))
    assert hw.tf32 and torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_no_tf32_flag_turns_it_off(fake_cuda):
    torch.backends.cuda.matmul.allow_tf32 = True
    hw = configure(make_config({"device": "cuda", "tf32": False}))
    assert not hw.tf32 and not torch.backends.cuda.matmul.allow_tf32


def test_tf32_is_never_claimed_on_cpu():
    assert pick_tf32(True, CPU) is False
    assert "tf32" not in configure(make_config({"device": "cpu"})).describe()


# --- fused AdamW ---

def test_fused_adamw_on_cuda_by_default(fake_cuda):
    assert configure(make_config({"device": "cuda"})).fused_adamw


def test_no_fused_adamw_flag_turns_it_off(fake_cuda):
    assert not configure(make_config({"device": "cuda", "fused_adamw": False})).fused_adamw


def test_cpu_uses_fused_adamw_where_torch_has_the_kernel(monkeypatch):
    monkeypatch.setattr(hardware, "_fused_adamw_devices", lambda: ["cuda", "cpu"])
    assert pick_fused_adamw(True, CPU) is True
    assert pick_fused_adamw(False, CPU) is False
    monkeypatch.setattr(hardware, "_fused_adamw_devices", lambda: ["cuda"])  # torch < 2.4
    assert pick_fused_adamw(True, CPU) is False


def test_fused_adamw_on_cpu_trains_like_the_default_loop():
    from tui_trainer.train.model import GPT, GPTConfig
    from tui_trainer.train.optim import make_optimizer

    losses = {}
    for fused in (False, True):
        torch.manual_seed(0)
        model = GPT(GPTConfig(n_layer=1, n_embd=32, n_head=2, context_length=16))
        opt = make_optimizer(model, 0.1, 3e-3, (0.9, 0.99), fused=pick_fused_adamw(fused, CPU))
        gen = torch.Generator().manual_seed(0)
        for _ in range(5):
            x = torch.randint(0, 256, (4, 16), generator=gen)
            loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.roll(-1, 1).flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses[fused] = loss.item()
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


# --- torch.compile: opt-in ---

def test_compile_is_off_unless_asked():
    assert make_config({}).compile is False
    assert pick_compile(False, CPU) is False


def test_compile_falls_back_to_eager_when_dynamo_is_unsupported(monkeypatch):
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    notes: list[str] = []
    assert pick_compile(True, CPU, notes) is False
    assert any("eagerly" in n for n in notes)


def test_compile_on_cuda_without_triton_falls_back(monkeypatch):
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: True)
    monkeypatch.setattr(hardware, "_has_triton", lambda: False)
    notes: list[str] = []
    assert pick_compile(True, CUDA, notes) is False
    assert any("Triton" in n for n in notes)


def test_compile_on_cpu_needs_a_cxx_compiler(monkeypatch):
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: True)
    monkeypatch.setattr(hardware.shutil, "which", lambda name: None)
    notes: list[str] = []
    assert pick_compile(True, CPU, notes) is False
    assert any("C++" in n for n in notes)
    monkeypatch.setattr(hardware.shutil, "which", lambda name: "/usr/bin/" + name)
    assert pick_compile(True, CPU) is True


def test_compile_time_is_shown_as_a_status_before_the_first_step(monkeypatch):
    """The compile happens inside the first step; the UI must see "compiling"
    before it and its duration after it.  torch.compile is stubbed out so the
    test checks the engine's reporting, not Inductor."""
    from tui_trainer.train.engine import Trainer

    monkeypatch.setattr(hardware, "pick_compile", lambda requested, device, notes=None: requested)
    monkeypatch.setattr(torch, "compile", lambda model, **kw: model)
    records = []

    class Sink:
        def emit(self, r):
            records.append(r)

    cfg = make_config({"steps": 3, "eval_every": 3, "n_layer": 1, "n_embd": 32, "n_head": 2,
                       "context_length": 16, "batch_size": 4, "warmup_steps": 1, "eval_batches": 1,
                       "sample_tokens": 4, "compile": True})
    trainer = Trainer(cfg, None, [Sink()])
    assert trainer.hw.compile
    trainer.run()
    first_train = next(i for i, r in enumerate(records) if isinstance(r, TrainStep))
    statuses = [(i, r) for i, r in enumerate(records) if isinstance(r, Status)]
    compiling = [i for i, r in statuses if r.state == "compiling"]
    assert compiling and compiling[0] < first_train
    done = [r for i, r in statuses if i > compiling[0] and r.state == "running" and "compiled in" in r.detail]
    assert done, "the compile's duration is reported once the first step is done"


def test_describe_names_the_path_and_the_reasons(fake_cuda):
    fake_cuda(False)
    hw = configure(make_config({"device": "cuda", "dtype": "bf16", "fused_adamw": False}))
    text = hw.describe()
    assert "fp16" in text and "tf32" in text and "fused" not in text and "no bf16" in text


def test_a_failing_compile_falls_back_to_eager_and_says_so(monkeypatch):
    from tui_trainer.train.engine import Trainer

    class Uncompilable(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self._orig_mod = model

        def forward(self, *args, **kwargs):
            raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(hardware, "pick_compile", lambda requested, device, notes=None: requested)
    monkeypatch.setattr(torch, "compile", lambda model, **kw: Uncompilable(model))
    records = []

    class Sink:
        def emit(self, r):
            records.append(r)

    cfg = make_config({"steps": 3, "eval_every": 3, "n_layer": 1, "n_embd": 32, "n_head": 2,
                       "context_length": 16, "batch_size": 4, "warmup_steps": 1, "eval_batches": 1,
                       "sample_tokens": 4, "compile": True})
    end = Trainer(cfg, None, [Sink()]).run()
    assert end.status == "finished" and end.step == 3
    assert any(isinstance(r, Status) and "running eagerly" in r.detail for r in records)
    assert sum(isinstance(r, TrainStep) for r in records) == 3


# --- CPU threads under contention: how they wait (how many: test_threads.py) ---

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def _py_env(**extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def test_the_command_chooses_the_wait_before_torch_loads():
    """libgomp reads its environment once, when torch loads it: the command
    must have chosen by then (``tui-trainer`` is ``cli:main``)."""
    import subprocess
    import sys

    probe = ("import os, sys\n"
             "from tui_trainer import cli\n"
             "cli.cmd_train = lambda args: print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'),"
             " 'torch' in sys.modules) or 0\n"
             "sys.exit(cli.main(['train']))\n")
    out = subprocess.run([sys.executable, "-c", probe], env=_py_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # Which one depends on how busy this machine is right now; that one is chosen does not.
    assert out.stdout.split() in ([threads.SPIN_COUNT, "None", "False"], ["None", "PASSIVE", "False"])


@pytest.fixture
def fresh_choice(monkeypatch):
    """As in a process that has not loaded torch yet, with nothing chosen."""
    monkeypatch.setattr(threads, "_chosen", {})
    monkeypatch.setattr(threads, "_busy_at_start", [])
    monkeypatch.delitem(__import__("sys").modules, "torch")


def test_busy_cpus_at_start_mean_passive_waits_and_idle_ones_a_short_spin(fresh_choice):
    env: dict[str, str] = {}
    assert threads.apply_wait_policy(["train"], env, measure=lambda: 1.0)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert threads.describe_wait(env) == "omp passive: 1.0 CPUs busy at start"
    env = {}
    assert threads.apply_wait_policy([], env, measure=lambda: 0.1)  # the demo
    assert env == {"GOMP_SPINCOUNT": threads.SPIN_COUNT}
    assert threads.describe_wait(env) == f"omp spin {threads.SPIN_COUNT}: CPUs idle at start"
    env = {}
    assert threads.apply_wait_policy(["train"], env, measure=lambda: None)  # not Linux
    assert env == {"GOMP_SPINCOUNT": threads.SPIN_COUNT}


def test_commands_that_do_not_train_are_left_alone(fresh_choice):
    env: dict[str, str] = {}
    assert not threads.apply_wait_policy(["view", "run"], env, measure=lambda: 1 / 0)
    assert env == {}


def test_a_wait_policy_the_user_set_wins(fresh_choice):
    for env in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "0"}):
        before = dict(env)
        assert threads.apply_wait_policy(["train"], env, measure=lambda: 0.0) is False
        assert env == before
        assert ":" not in threads.describe_wait(env)  # the user's, not ours: no reason given


def test_nothing_is_set_once_torch_has_loaded():
    env: dict[str, str] = {}
    assert "torch" in __import__("sys").modules
    assert threads.apply_wait_policy(["train"], env, measure=lambda: 0.0) is False and env == {}


def test_busy_cpus_reads_the_cpus_this_process_may_use():
    snaps = iter(["cpu  9 9 9 9 9 9 9 9 0 0\n"
                  "cpu0 100 0 0 900 0 0 0 0 0 0\ncpu1 0 0 0 1000 0 0 0 0 0 0\ncpu2 0 0 0 0 0 0 0 0 0 0\n",
                  "cpu  9 9 9 9 9 9 9 9 0 0\n"
                  "cpu0 150 0 20 920 0 0 0 10 0 0\ncpu1 40 0 0 1060 0 0 0 0 0 0\ncpu2 99 0 0 0 0 0 0 0 0 0\n"])
    # cpu0: 80 of 100 jiffies busy (steal counts); cpu1: 40 of 100; cpu2 is not ours.
    busy = threads.busy_cpus(0.0, read=lambda: next(snaps), cpus={0, 1})
    assert busy == pytest.approx(2 * 120 / 200)
    assert threads.busy_cpus(0.0, read=lambda: "garbage", cpus={0}) is None


def test_describe_wait_names_what_openmp_loaded_with(monkeypatch):
    monkeypatch.setattr(threads, "_chosen", {})
    assert threads.describe_wait({}) == "omp default"
    assert threads.describe_wait({"GOMP_SPINCOUNT": "10000"}) == "omp spin 10000"
    assert threads.describe_wait({"OMP_WAIT_POLICY": "PASSIVE"}) == "omp passive"


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_run_start_names_the_threads_and_how_they_wait(no_cuda, keep_threads, monkeypatch):
    monkeypatch.setattr(threads, "_chosen", {})
    monkeypatch.setenv("GOMP_SPINCOUNT", "12345")
    text = configure(make_config({"threads": 1})).describe()
    assert text.startswith("cpu (fp32, ") and text.endswith(", 1 thread, omp spin 12345)")
    n = torch.get_num_threads()
    assert f"{n} thread" in configure(make_config({})).describe()


def test_the_starting_thread_count_does_not_follow_the_load(no_cuda, keep_threads, monkeypatch):
    """A run starts at torch's count whatever the load; the governor moves it
    later, by measuring steps (test_threads.py), changing no number."""
    import os

    idle = configure(make_config({})), torch.get_num_threads()
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    busy = configure(make_config({})), torch.get_num_threads()
    assert busy[1] == idle[1] and busy[0].describe() == idle[0].describe()
    configure(make_config({"threads": 1}))
    assert torch.get_num_threads() == 1  # --threads N pins it


def test_the_wait_policy_does_not_change_the_losses(tmp_path):
    """Only how threads wait differs between these runs (2 threads, the demo
    shape, so the kernels do run in parallel): the losses are bit-identical."""
    import json
    import subprocess
    import sys

    arms = {"policy": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "spin": {"GOMP_SPINCOUNT": "300000"}}
    procs = {}
    for name, env in arms.items():
        cmd = [sys.executable, "-m", "tui_trainer", "train", "--headless", "--threads", "2", "--steps", "4",
               "--eval-every", "4", "--eval-batches", "1", "--sample-tokens", "1", "--warmup-steps", "2",
               "--out", str(tmp_path / name)]
        procs[name] = subprocess.Popen(cmd, cwd=tmp_path, env=_py_env(**env), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True)
    losses, devices = {}, {}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
        recs = [json.loads(line) for line in (tmp_path / name / "losses.jsonl").read_text().splitlines()]
        losses[name] = [r["train_loss"] for r in recs if r["type"] == "train"]
        devices[name] = recs[0]["device"]
    assert len(losses["policy"]) == 4
    assert losses["passive"] == losses["policy"] == losses["spin"]
    assert "omp " in devices["policy"] and "omp passive" in devices["passive"]
    assert all("2 threads" in d for d in devices.values())


# --- FLOPs, peaks, MFU ---

@pytest.mark.parametrize("shape", [dict(n_layer=2, n_embd=64, vocab_size=256, bias=True),
                                   dict(n_layer=4, n_embd=96, vocab_size=1000, bias=False),
                                   dict(n_layer=3, n_embd=48, vocab_size=100, bias=True)])
def test_parameter_count_from_the_shape_matches_the_model(shape):
    from tui_trainer.train.model import GPT, GPTConfig

    model = GPT(GPTConfig(n_head=4, context_length=32, **shape))
    assert hardware.count_params(**shape) == model.num_params()


def test_flops_per_token_of_gpt2_small():
    cfg = make_config({"n_layer": 12, "n_head": 12, "n_embd": 768, "context_length": 1024,
                       "vocab_size": 50304, "bias": False})
    n = hardware.count_params(12, 768, 50304, bias=False)
    assert n == 123_587_328
    assert hardware.flops_per_token(cfg) == 6 * n + 12 * 12 * 768 * 1024
    assert hardware.flops_per_token(cfg, n_params=100) == 600 + 12 * 12 * 768 * 1024


def test_the_model_counts_flops_as_mfu_does():
    """One definition: the model's own figure (bench_engine's MFU) was 6, not
    12, x layers x width x context."""
    from tui_trainer.train.model import GPT, GPTConfig

    model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, context_length=32))
    assert model.flops_per_token() == hardware.flops_per_token(model.config, model.num_params())
    assert model.flops_per_token() == 6 * model.num_params() + 12 * 2 * 64 * 32


@pytest.mark.parametrize("name, dtype, tf32, tflops", [
    ("NVIDIA H100 80GB HBM3", "bf16", True, 989), ("NVIDIA H200", "bf16", True, 989),
    ("NVIDIA H100 PCIe", "bf16", True, 756), ("NVIDIA A100-SXM4-80GB", "bf16", True, 312),
    ("NVIDIA A100-SXM4-80GB", "fp32", True, 156), ("NVIDIA A100-SXM4-80GB", "fp32", False, 19.5),
    ("NVIDIA L4", "bf16", True, 121), ("NVIDIA L40S", "bf16", True, 362),
    ("NVIDIA GeForce RTX 4090", "bf16", True, 165), ("Tesla T4", "fp16", True, 65),
])
def test_gpu_peaks_come_from_the_data_sheet_table(name, dtype, tf32, tflops):
    assert hardware.gpu_peak_flops(name, dtype, tf32) == pytest.approx(tflops * 1e12)


def test_an_unknown_gpu_has_no_peak(fake_cuda, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA A10G")
    assert hardware.peak_flops("cuda", "bf16") is None
    assert hardware.mfu(1000.0, 1e9, None) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    assert hardware.mfu(100_000.0, 1e9, hardware.peak_flops("cuda", "bf16")) == pytest.approx(1e14 / 989e12)


def test_the_cpu_peak_is_the_highest_measured_and_heals_a_low_one(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    measured = [5e10]
    monkeypatch.setattr(hardware, "measure_matmul_flops", lambda **kw: measured[0])
    assert hardware.peak_flops("cpu") == 5e10
    assert (tmp_path / "tui-trainer" / "peak-flops.json").exists()
    # A later measurement slowed by a busy neighbour never lowers the peak...
    measured[0] = 1e9
    assert hardware.peak_flops("cpu") == 5e10
    # ...and a peak first measured on a busy machine is raised by an idle start
    # (it was cached once and for all: MFU read 190% on this machine).
    measured[0] = 2e11
    assert hardware.peak_flops("cpu") == 2e11
    measured[0] = 1.0
    assert hardware.cpu_peak_flops(measure=False) == 2e11  # the cache alone
    (tmp_path / "tui-trainer" / "peak-flops.json").write_text("not json")
    assert hardware.cpu_peak_flops() == 1.0  # a damaged cache is measured again


def test_measuring_the_peak_draws_nothing_from_torchs_random_numbers():
    """It runs at every start, after a resume restored the RNG state: a draw
    from the global generator there broke exact resume (dropout)."""
    state = torch.get_rng_state()
    hardware.measure_matmul_flops(n=64, repeats=1)
    assert torch.equal(torch.get_rng_state(), state)


def test_bench_gpu_tiny_runs_on_cpu_and_prints_its_figures(tmp_path):
    """The GPU script cannot rot: its --cpu-smoke (--tiny) run goes through
    every arm but the compiled ones on CPU, with the pause points' table, and
    writes its figures to $OUT/bench_gpu.json."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), "--cpu-smoke", "--threads", "1",
                          "--steps", "20", "--warmup", "5", "--sample-tokens", "50", "--pause-every", "20"],
                         env=_py_env(XDG_CACHE_HOME=str(tmp_path), OUT=str(tmp_path)), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    for arm in ("bare loop", "engine", "engine+dashboard"):
        line = next((ln for ln in lines if ln.startswith(arm + " ")), "")
        assert "tok/s" in line and "MFU" in line and "peak mem" in line, out.stdout
    assert "GFLOP/token" in out.stdout and "peak" in lines[0]
    assert "dashboard overhead" in out.stdout
    table = lines[next(i for i, ln in enumerate(lines) if ln.startswith("pause points")) + 3:]
    assert [ln.split()[0] for ln in table] == ["engine", "engine+dashboard"], out.stdout
    report = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert report["arms"]["bare loop"]["pause_points"] is None and report["arms"]["bare loop"]["tok_s"] > 0
    for arm in ("engine", "engine+dashboard"):
        f = report["arms"][arm]["pause_points"]
        assert f["problem"] is None, f
        assert len(f["eval_s"]["all"]) == 3 and len(f["sample_s"]["all"]) == 3, f  # at steps 20, 40 and 60
        assert f["blocked_s"]["first"] >= 0 and f["write_s"]["later"] > 0, f
        assert [(c["step"], c["reason"]) for c in f["checkpoints"]] == [(20, "scheduled"), (40, "scheduled"),
                                                                        (60, "scheduled")], f
        assert set(f["shown_vs_steady"]) == {"10", "20"} and all(v > 0 for v in f["shown_vs_steady"].values()), f

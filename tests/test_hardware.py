"""Every GPU-path switch, checked on a machine without a GPU.

CUDA's presence and abilities are faked with monkeypatch; nothing here needs
(or touches) a real GPU: choosing ``cuda`` only builds a ``torch.device``.
"""
from __future__ import annotations

import pytest
import torch

from tui_trainer import hardware
from tui_trainer.config import UserError, make_config
from tui_trainer.hardware import (configure, pick_compile, pick_device, pick_dtype, pick_fused_adamw,
                                  pick_tf32)
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
    from tui_trainer.model import GPT, GPTConfig
    from tui_trainer.optim import make_optimizer

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
    from tui_trainer.engine import Trainer

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
    from tui_trainer.engine import Trainer

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

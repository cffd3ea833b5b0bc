"""A Hugging Face ``transformers.Trainer`` steered through ``TuiTrainerCallback``
(issue 17): a tiny randomly initialised GPT-2, nothing downloaded."""
from __future__ import annotations

import threading

import pytest

transformers = pytest.importorskip("transformers", reason="the [hf] extra (CI installs it with [test])")
pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments  # noqa: E402

from tui_trainer.control.channel import request  # noqa: E402
from tui_trainer.loops.huggingface import TuiTrainerCallback  # noqa: E402
from tui_trainer.logs import load_series, read_records  # noqa: E402

from test_own_loop import wait_for  # noqa: E402


def tiny_trainer(tmp_path, callback, **args) -> Trainer:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32))
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(0, 64, (16,), generator=g) for _ in range(64)]
    data = [{"input_ids": r, "labels": r} for r in rows]
    kw = dict(output_dir=str(tmp_path / "hf"), max_steps=100_000, per_device_train_batch_size=4,
              learning_rate=1e-3, logging_steps=1, eval_strategy="steps", eval_steps=100_000,
              save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
    kw.update(args)
    return Trainer(model=model, args=TrainingArguments(**kw), train_dataset=data[:48], eval_dataset=data[48:],
                   callbacks=[callback])


def records(folder):
    return read_records(folder / "losses.jsonl")


def test_trainer_paused_evaluated_checkpointed_and_stopped_over_the_socket(tmp_path):
    folder = tmp_path / "run"
    callback = TuiTrainerCallback(folder, config={"task": "tiny"}, quiet=True)
    trainer = tiny_trainer(tmp_path, callback)
    failed: list[BaseException] = []

    def train():
        try:
            trainer.train()
        except BaseException as e:  # shown by the test, not lost in the thread
            failed.append(e)

    worker = threading.Thread(target=train)
    worker.start()
    try:
        assert wait_for(lambda: request(folder, "status")["step"] >= 3, 120)
        assert request(folder, "pause")["ok"]
        assert wait_for(lambda: request(folder, "status")["state"] == "paused")
        paused_at = request(folder, "status")["step"]
        # eval now -> control.should_evaluate, done at once; the run stays paused.
        assert request(folder, "eval")["ok"]
        assert wait_for(lambda: any(r["type"] == "eval" and r["forced"] for r in records(folder)))
        # checkpoint now -> control.should_save: the Trainer's own checkpoint folder.
        assert request(folder, "checkpoint")["ok"]
        assert wait_for(lambda: any(r["type"] == "checkpoint" for r in records(folder)))
        assert (tmp_path / "hf" / f"checkpoint-{paused_at}").is_dir()
        assert wait_for(lambda: request(folder, "status")["state"] == "paused")
        assert trainer.state.global_step == paused_at  # no step trained while it was paused
        # What the Trainer cannot take is refused at once.
        answer = request(folder, {"cmd": "sample", "prompt": "hi"})
        assert not answer["ok"] and "Hugging Face" in answer["error"] and "on_sample" not in answer["error"]
        answer = request(folder, {"cmd": "set", "key": "lr_scale", "value": 0.5})
        assert not answer["ok"] and "unknown setting" in answer["error"]
        assert request(folder, "resume")["ok"]
        assert wait_for(lambda: request(folder, "status")["step"] > paused_at + 2)
        # stop -> control.should_training_stop: the Trainer ends as after its last step.
        assert request(folder, "stop")["ok"]
        worker.join(timeout=120)
        assert not worker.is_alive()
    finally:
        if worker.is_alive() and callback.run is not None:
            callback.run.request_stop()
            worker.join(timeout=30)
    assert not failed, failed

    recs = records(folder)
    end = recs[-1]
    assert end["type"] == "run_end" and end["status"] == "stopped"
    assert end["step"] == trainer.state.global_step < 100_000
    start = recs[0]
    assert start["type"] == "run_start" and start["total_steps"] == 100_000
    assert start["config"]["task"] == "tiny" and start["config"]["model_type"] == "gpt2"
    assert start["config"]["learning_rate"] == 1e-3 and start["n_params"] > 0
    train = [r for r in recs if r["type"] == "train"]
    assert [r["step"] for r in train] == list(range(1, end["step"] + 1))  # logging_steps=1
    assert all(r["lr"] > 0 and r["grad_norm"] >= 0 and "epoch" in r for r in train)
    ev = next(r for r in recs if r["type"] == "eval")
    assert ev["step"] == paused_at and ev["forced"] and ev["val_loss"] > 0 and "eval_runtime" in ev
    ck = next(r for r in recs if r["type"] == "checkpoint")
    assert ck["step"] == paused_at and ck["reason"] == "manual" and ck["path"].endswith(f"checkpoint-{paused_at}")
    assert ck["val_loss"] == ev["val_loss"]
    kinds = [(r["type"], r["step"]) for r in recs if r["type"] in ("pause", "resume", "train")]
    at = kinds.index(("pause", paused_at))
    # The step's record, then the pause; nothing trained until the resume.
    assert kinds[at - 1:at + 3] == [("train", paused_at), ("pause", paused_at), ("resume", paused_at),
                                    ("train", paused_at + 1)]
    series, counts = load_series(folder)
    assert counts.bad == 0 and series.state == "stopped" and series.evals[0].step == paused_at


def test_eval_is_refused_when_the_trainer_does_not_evaluate(tmp_path):
    folder = tmp_path / "run"
    callback = TuiTrainerCallback(folder, quiet=True)
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), eval_strategy="no", report_to="none", use_cpu=True)
    state, control = transformers.TrainerState(max_steps=6), transformers.TrainerControl()
    callback.on_train_begin(args, state, control)
    try:
        answer = request(folder, "eval")
        # said in the Trainer's terms, with the fix, not "registered no on_eval"
        assert not answer["ok"] and "eval_strategy" in answer["error"] and "on_eval" not in answer["error"]
        assert request(folder, "checkpoint")["ok"]  # saving needs no eval_strategy
    finally:
        callback.on_train_end(args, state, control)
    recs = records(folder)
    assert recs[0]["total_steps"] == 6 and recs[-1]["type"] == "run_end" and recs[-1]["status"] == "finished"


def test_the_example_sets_special_tokens_inside_its_vocabulary(tmp_path):
    """examples/huggingface_trainer.py: bytes are its tokens, so bos/eos/pad are a byte; transformers
    warned `bos_token_id must be None or an integer within the vocabulary ... got 50256` (issue 23)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, str(repo / "examples" / "huggingface_trainer.py"), "--steps", "3",
                        "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "within the vocabulary" not in p.stdout + p.stderr and "50256" not in p.stdout + p.stderr
    assert [r["type"] for r in records(tmp_path / "run")][-1] == "run_end"

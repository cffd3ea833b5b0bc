"""--grad-accum N: N micro-batches per optimizer step (issue 22, item 6), and
evals under --compile on the eager module (item 4)."""
from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch

from tui_trainer.run import checkpoint as ckpt
from tui_trainer.config import make_config
from tui_trainer.train.data import BatchSampler, load_default_corpus
from tui_trainer.train.engine import Trainer
from tui_trainer.records import RunStart, TrainStep
from tui_trainer.run.resume import plan_resume
from tui_trainer.run.run import Run

from test_distributed import _env
from test_steering import At, of, set_

TINY = dict(n_layer=1, n_embd=32, n_head=2, context_length=16, eval_batches=1, sample_tokens=8, threads=1,
            device="cpu", dtype="fp32", warmup_steps=2)


def cfg(**kw):
    return make_config({**TINY, **kw})


def trained(c, plan=None, run_dir=None):
    run = Run(run_dir, checkpoint_every=c.ckpt_every, keep=c.keep)
    sink = At(run, dict(plan or {}))
    run.add_sink(sink)
    t = Trainer(c, run)
    end = t.run()
    return t, end, sink.seen


def test_the_sampler_draws_a_big_batch_as_its_micro_batches_in_a_row():
    """Why the next test compares two whole runs: one draw of 32 rows is
    the four draws of 8 that --grad-accum 4 makes, from the same generator."""
    data = torch.frombuffer(bytearray(load_default_corpus()[:200_000]), dtype=torch.uint8)
    big = BatchSampler(data, 32, 16, seed=5)
    small = BatchSampler(data, 8, 16, seed=5)
    for _ in range(3):
        x, y = big.next()
        parts = [small.next() for _ in range(4)]
        assert torch.equal(x, torch.cat([p[0] for p in parts])) and torch.equal(y, torch.cat([p[1] for p in parts]))


def test_four_micro_batches_of_8_train_as_one_batch_of_32():
    # grad_clip 0: AdamW barely sees the gradient's scale, but the logged norm
    # does, so a sum where the mean belongs is caught.
    common = dict(steps=6, eval_every=1000, dropout=0.0, grad_clip=0.0, seed=3)
    _, end_a, big = trained(cfg(batch_size=32, **common))
    t, end_b, acc = trained(cfg(batch_size=8, grad_accum=4, **common))
    assert end_a.status == end_b.status == "finished"
    a, b = of(big, TrainStep), of(acc, TrainStep)
    assert [r.step for r in a] == [r.step for r in b] == list(range(1, 7))
    assert [r.train_loss for r in b] == pytest.approx([r.train_loss for r in a], rel=1e-5)
    assert [r.grad_norm for r in b] == pytest.approx([r.grad_norm for r in a], rel=1e-4)
    assert [r.lr for r in b] == [r.lr for r in a]  # the schedule counts optimizer steps
    assert [r.tokens for r in b] == [r.tokens for r in a] == [32 * 16 * k for k in range(1, 7)]
    start = of(acc, RunStart)[0]
    assert start.tokens_per_step == 32 * 16 and start.config["grad_accum"] == 4
    # The data position: 4 draws of 8 per step, 24 in all.
    fresh = BatchSampler(t.corpus.train, 8, 16, seed=3)
    for _ in range(24):
        fresh.next()
    assert torch.equal(fresh.generator.get_state(), t.sampler.generator.get_state())


def test_steering_acts_between_optimizer_steps(monkeypatch):
    calls = []
    real = Run.between_steps
    monkeypatch.setattr(Run, "between_steps", lambda self, step: (calls.append(step), real(self, step))[1])
    micro = []
    import tui_trainer.train.engine as engine_mod
    real_loss = engine_mod.calc_loss_batch
    monkeypatch.setattr(engine_mod, "calc_loss_batch", lambda *a: (micro.append(1), real_loss(*a))[1])
    t, end, seen = trained(cfg(batch_size=4, grad_accum=3, steps=5, eval_every=1000),
                           {2: [set_("lr_scale", 0.5)]})
    assert end.step == 5 and calls == [0, 1, 2, 3, 4] and len(micro) == 15
    lrs = {r.step: r.lr for r in of(seen, TrainStep)}
    base = {r.step: r.lr for r in of(trained(cfg(batch_size=4, grad_accum=3, steps=5, eval_every=1000))[2],
                                      TrainStep)}
    assert lrs[2] == base[2] and lrs[3] == pytest.approx(base[3] * 0.5)  # from the next optimizer step


def test_resume_of_a_grad_accum_run_is_bitwise(tmp_path):
    """Stopped at 9 of 16 after a live change at 5, resumed: every loss and
    the final weights are those of the uninterrupted run (dropout on: the
    torch RNG consumed by each micro-batch round-trips too)."""
    def go(out, stop_at=None):
        out.mkdir()
        c = cfg(batch_size=4, grad_accum=3, steps=16, eval_every=4, dropout=0.1, out=str(out))
        plan = {5: [set_("lr_scale", 0.5)]}
        if stop_at:
            plan[stop_at] = ["stop"]
        return trained(c, plan, out)

    _, whole_end, whole = go(tmp_path / "whole")
    _, part_end, part = go(tmp_path / "part", stop_at=9)
    assert (part_end.status, part_end.step) == ("stopped", 9)
    plan = plan_resume(tmp_path / "part", {})
    assert plan.cfg.grad_accum == 3
    run = Run(tmp_path / "part", checkpoint_every=plan.cfg.ckpt_every, keep=plan.cfg.keep)
    rest = []
    run.add_sink(type("S", (), {"emit": lambda self, r: rest.append(r)})())
    t = Trainer(plan.cfg, run, resume=plan)
    assert t.run().step == 16 and t.lr_scale == 0.5
    want = {r.step: r.train_loss for r in of(whole, TrainStep)}
    got = {r.step: r.train_loss for r in of(part, TrainStep) + of(rest, TrainStep)}
    assert sorted(got) == list(range(1, 17)) and got == want
    a = ckpt.load_checkpoint(tmp_path / "whole" / ckpt.LATEST)["model"]
    b = ckpt.load_checkpoint(tmp_path / "part" / ckpt.LATEST)["model"]
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_a_resume_may_not_change_grad_accum_and_old_checkpoints_resume_with_1(tmp_path, capsys):
    from tui_trainer import cli
    from tui_trainer.run.checkpoint_schema import check_trainer_state

    out = tmp_path / "run"
    out.mkdir()
    c = cfg(batch_size=4, steps=4, eval_every=2, out=str(out))
    trained(c, {}, out)
    state = ckpt.load_checkpoint(out / ckpt.LATEST)
    del state["config"]["grad_accum"], state["config"]["preset"]  # a file from before they existed
    check_trainer_state(state)
    old = ckpt.atomic_save(state, out / "ckpt-step00000004.pt")
    plan = plan_resume(old, {"steps": 6})
    assert plan.cfg.grad_accum == 1 and plan.cfg.preset is None and set(plan.changes) == {"steps"}
    rc = cli.main(["train", "--headless", "--resume", str(old), "--steps", "6", "--grad-accum", "2"])
    err = capsys.readouterr().err.strip()
    assert rc == cli.EXIT_USAGE and err.startswith("error: ") and "\n" not in err and "grad_accum" in err


def test_grad_accum_bounds_are_one_line():
    from tui_trainer.config import UserError

    for bad in (0, 4097):
        with pytest.raises(UserError, match=r"--grad-accum must be at least 1 and at most 4096"):
            cfg(grad_accum=bad)


# --- DDP: two gloo ranks, no_sync on all but the last micro-batch ---------------

DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch.nn.parallel as par
    from tui_trainer import cli

    calls = []
    real = par.DistributedDataParallel.no_sync

    def counted(self):
        calls.append(1)
        return real(self)

    par.DistributedDataParallel.no_sync = counted
    rc = cli.main(sys.argv[1:])
    with open(os.path.join(os.environ["COUNT_DIR"], "rank" + os.environ["RANK"]), "w") as f:
        json.dump({"no_sync": len(calls), "rc": rc}, f)
""")


def test_ddp_two_ranks_accumulate_with_no_sync_and_match_one_process(tmp_path):
    import subprocess

    script = tmp_path / "ddp_counted.py"
    script.write_text(DDP_SCRIPT)
    flags = ["--steps", "4", "--eval-every", "1000", "--seed", "7", "--n-layer", "1", "--n-embd", "32",
             "--n-head", "2", "--context-length", "16", "--eval-batches", "1", "--sample-tokens", "4",
             "--warmup-steps", "1", "--dtype", "fp32", "--threads", "1"]
    env = {**_env(), "COUNT_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           "train", "--headless", *flags, "--batch-size", "2", "--grad-accum", "2", "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}").read_text())
        assert got == {"no_sync": 4, "rc": 0}  # one per optimizer step: the first of its two micro-batches
    # One process with the same global micro-batch (2 ranks x 2 rows) draws the same rows: same losses.
    ddp = [json.loads(line) for line in (tmp_path / "ddp" / "losses.jsonl").read_text().splitlines()]
    start = next(r for r in ddp if r["type"] == "run_start")
    assert start["tokens_per_step"] == 2 * 2 * 16 * 2 and start["config"]["grad_accum"] == 2
    train = [r for r in ddp if r["type"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4] and train[-1]["tokens"] == 4 * 2 * 2 * 16 * 2
    one = cfg(batch_size=4, grad_accum=2, steps=4, eval_every=1000, seed=7, warmup_steps=1, sample_tokens=4)
    want = [r.train_loss for r in of(trained(one)[2], TrainStep)]
    assert [r["train_loss"] for r in train] == pytest.approx(want, abs=1e-4)


# --- evals under --compile: the eager module, no recompile ---------------------

def test_evals_under_compile_do_not_recompile_the_training_graph(monkeypatch):
    """A backend that counts graph compilations (no C compiler needed): the
    first step compiles once; the evals (val and train split) add none."""
    compiled = []
    real = torch.compile

    def counting(gm, example_inputs):
        compiled.append(len(example_inputs))
        return gm.forward

    monkeypatch.setattr(torch, "compile", lambda model, **kw: real(model, backend=counting))
    c = cfg(batch_size=4, steps=4, eval_every=2, compile=True)
    t, end, seen = trained(c)
    if not t.hw.compile:
        pytest.skip("torch.compile is not available here")
    assert end.status == "finished" and len(of(seen, TrainStep)) == 4
    assert len([r for r in seen if type(r).__name__ == "Eval"]) == 2
    assert len(compiled) == 1, compiled


def test_tokens_per_step_on_the_console_and_the_series_old_logs_and_hostile_values_read():
    import io

    from tui_trainer.run.console import ConsoleSink
    from tui_trainer.records import from_dict
    from tui_trainer.curves.series import RunSeries

    base = {"type": "run_start", "step": 0, "run_name": "r", "config": {}, "n_params": 10, "device": "cpu",
            "total_steps": 5}
    out = io.StringIO()
    sink = ConsoleSink(stream=out)
    sink.emit(from_dict({**base, "tokens_per_step": 524288}))
    sink.emit(from_dict(base))  # a log from before the field: read, nothing shown
    first, second = out.getvalue().splitlines()
    assert first.endswith("| 524.3k tokens/step") and "tokens/step" not in second
    for hostile in ("many", -4, float("inf"), True, [1]):
        s = RunSeries()
        s.apply(from_dict({**base, "tokens_per_step": hostile}))
        assert s.tokens_per_step is None


def test_the_memory_check_counts_one_micro_batch():
    from tui_trainer.train.memory import estimate_memory

    assert estimate_memory(cfg(batch_size=8, grad_accum=64), 256) == estimate_memory(cfg(batch_size=8), 256)


def test_the_status_line_shows_tokens_per_step(monkeypatch):
    from textual.geometry import Size

    from tui_trainer.records import from_dict
    from tui_trainer.curves.series import RunSeries
    from tui_trainer.ui.status_line import StatusLine

    shown = []
    monkeypatch.setattr(StatusLine, "size", property(lambda self: Size(200, 4)))
    monkeypatch.setattr(StatusLine, "update", lambda self, text, **kw: shown.append(text.plain))
    s = RunSeries("r")
    s.apply(from_dict({"type": "run_start", "step": 0, "run_name": "r", "config": {}, "n_params": 10,
                       "device": "cpu", "total_steps": 5, "tokens_per_step": 524288}))
    StatusLine().show([s])
    assert "524.3k tok/step" in shown[-1]

"""--resume: exact continuation, the log rule, and refused settings."""
from __future__ import annotations

import json

import pytest
import torch

from tui_trainer.run import checkpoint as ckpt
from tui_trainer import cli
from trainer_with_run import trainer_with_run
from tui_trainer.records import TrainStep
from tui_trainer.run.folder import RunLock
from tui_trainer.logs import ReadCounts, effective_records, read_records
from tui_trainer.run.log_writer import LOG_NAME, JsonlSink

TINY = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--context-length", "16", "--batch-size", "4",
        "--eval-batches", "1", "--sample-tokens", "8", "--warmup-steps", "3", "--threads", "1",
        "--dropout", "0.1"]  # dropout: the torch RNG state must round-trip too
STEPS, EVAL = 24, 8


def _args(out, *extra):
    return ["train", "--headless", "--out", str(out), "--steps", str(STEPS), "--eval-every", str(EVAL), *TINY, *extra]


class StopAt:
    """A sink that asks the trainer to stop once step ``k`` is trained: the
    run then ends at ``k`` with a final checkpoint, its schedule untouched."""

    def __init__(self, k: int):
        self.k, self.run = k, None

    def emit(self, r):
        if isinstance(r, TrainStep) and r.step == self.k:
            self.run.request_stop()


def run_stopped_at(out, k, *extra):
    """What `tui-trainer train` does, but stopped after step k."""
    cfg = cli.config_from_args(cli.build_parser().parse_args(_args(out, *extra)))
    out.mkdir(parents=True)
    stop = StopAt(k)
    log = JsonlSink(out / LOG_NAME)
    t, stop.run = trainer_with_run(cfg, out, [log, stop])
    try:
        end = t.run()
    finally:
        log.close()
    assert (end.status, end.step) == ("stopped", k)
    assert ckpt.load_checkpoint(out / ckpt.LATEST)["step"] == k
    return end


def losses(run_dir, kind="train", field="train_loss"):
    stats = ReadCounts()
    recs = effective_records(read_records(run_dir / LOG_NAME, stats))
    assert stats.bad == 0
    return {r["step"]: r[field] for r in recs if r["type"] == kind}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    n = torch.get_num_threads()
    try:
        assert cli.main(_args(out)) == 0
    finally:
        torch.set_num_threads(n)
    return out


@pytest.mark.parametrize("k", [EVAL, 13], ids=["at-eval-boundary", "between-evals"])
def test_resume_is_exact(full_run, tmp_path, k):
    split = tmp_path / "split"
    run_stopped_at(split, k)
    assert cli.main(["train", "--headless", "--resume", str(split)]) == 0
    want = losses(full_run)
    got = losses(split)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert got == want  # bit-for-bit, step for step
    # evals after the split agree too (the one at k itself was cut short by the stop)
    want_val = {s: v for s, v in losses(full_run, "eval", "val_loss").items() if s > k}
    got_val = {s: v for s, v in losses(split, "eval", "val_loss").items() if s > k}
    assert got_val == want_val and want_val
    recs = read_records(split / LOG_NAME)
    starts = [r for r in recs if r["type"] == "run_start"]
    assert [s["resumed"] for s in starts] == [False, True]
    assert starts[1]["step"] == k and starts[1]["resumed_from"].endswith(f"ckpt-step{k:08d}.pt")
    assert recs[-1]["type"] == "run_end" and recs[-1]["status"] == "finished"
    # the final weights are identical too
    a = ckpt.load_checkpoint(full_run / ckpt.LATEST)["model"]
    b = ckpt.load_checkpoint(split / ckpt.LATEST)["model"]
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_records_past_the_checkpoint_are_superseded(tmp_path, full_run):
    """A crash after the checkpoint at step 8 left steps 9..11 in the log;
    the resumed session trains them again and readers keep the new ones."""
    run = tmp_path / "run"
    run_stopped_at(run, EVAL)
    with open(run / LOG_NAME, "a") as f:  # what a session killed at step 11 would have left
        for s in (9, 10, 11):
            f.write(json.dumps({"type": "train", "step": s, "time": 0.0, "train_loss": 99.0, "lr": 0.1,
                                "tokens_per_sec": 1.0, "grad_norm": 1.0, "elapsed_s": 1.0}) + "\n")
        f.write('{"type":"train","step":12,"tr')  # torn by the kill
    before = (run / LOG_NAME).read_bytes()
    assert cli.main(["train", "--headless", "--resume", str(run)]) == 0
    after = (run / LOG_NAME).read_bytes()
    assert after.startswith(before)  # appended, never rewritten
    stats = ReadCounts()
    raw = read_records(run / LOG_NAME, stats)
    assert stats.bad == 1 and not stats.torn_tail  # the torn line, closed and skipped
    assert [r["train_loss"] for r in raw if r["type"] == "train" and r["step"] == 9][0] == 99.0
    eff = {r["step"]: r["train_loss"] for r in effective_records(raw) if r["type"] == "train"}
    assert eff == losses(full_run)


def test_effective_records_rule():
    recs = [{"type": "run_start", "step": 0, "resumed": False}, {"type": "train", "step": 1},
            {"type": "train", "step": 2}, {"type": "checkpoint", "step": 2}, {"type": "train", "step": 3},
            {"type": "run_start", "step": 2, "resumed": True}, {"type": "train", "step": 3, "new": 1},
            {"other": "not a record"}]
    got = [(r.get("type"), r.get("step")) for r in effective_records(recs)]
    assert got == [("run_start", 0), ("train", 1), ("train", 2), ("checkpoint", 2), ("run_start", 2),
                   ("train", 3), (None, None)]


def test_allowed_changes_are_recorded(tmp_path):
    run = tmp_path / "run"
    run_stopped_at(run, 5)
    assert cli.main(["train", "--headless", "--resume", str(run), "--steps", "30", "--eval-every", "10"]) == 0
    starts = [r for r in read_records(run / LOG_NAME) if r["type"] == "run_start"]
    assert starts[-1]["changes"] == {"steps": [STEPS, 30], "eval_every": [EVAL, 10]}
    assert starts[-1]["total_steps"] == 30
    assert max(losses(run)) == 30


def test_refusals_are_one_line_and_write_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    run_stopped_at(run, 5)
    log = (run / LOG_NAME).read_bytes()

    def refused(*argv, want):
        rc = cli.main(["train", "--headless", "--resume", *map(str, argv)])
        err = capsys.readouterr().err.strip()
        assert rc == cli.EXIT_USAGE and err.startswith("error: ") and "\n" not in err, err
        for w in want:
            assert w in err, err
        assert (run / LOG_NAME).read_bytes() == log

    refused(run, "--n-embd", "64", "--seed", "7", want=["n_embd (32 in the checkpoint, 64 now)", "seed", "--n-embd"])
    refused(run, "--batch-size", "8", want=["batch_size"])
    refused(run, "--max-lr", "0.02", want=["max_lr"])  # not the default
    refused(run, "--steps", "5", want=["already at step 5", "--steps"])
    refused(run, "--out", tmp_path / "elsewhere", want=["drop --out"])
    refused(tmp_path / "missing", want=["not found"])
    data = tmp_path / "other.txt"
    data.write_text("something else entirely\n" * 2000)
    refused(run, "--data", data, want=["data differs"])
    with RunLock(run):  # the run is still going in another process
        refused(run, want=["in use by another tui-trainer"])
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, want=["holds no checkpoint"])


def test_a_run_still_training_before_its_first_save_is_said_as_such(tmp_path, capsys):
    """--resume (or --fork) on a run that is training and has not saved yet
    said "holds no checkpoint ... start a new run instead"; it is a run going
    on: the line says so and how to reach it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / LOG_NAME).write_text('{"type": "run_start", "step": 0}\n')
    with RunLock(run):  # the run is still going in another process
        for flag, want in (("--resume", f"attach {run}, and resume it once"),
                           ("--fork", f"attach {run} --send checkpoint")):
            assert cli.main(["train", "--headless", flag, str(run)]) == cli.EXIT_USAGE
            err = capsys.readouterr().err.strip()
            assert err.startswith(f"error: {flag} {run}: that run is still training and has saved no checkpoint "
                                  "yet") and want in err and "\n" not in err, err
    for flag, want in (("--resume", "start a new run instead"), ("--fork", "--checkpoint-every N")):
        assert cli.main(["train", "--headless", flag, str(run)]) == cli.EXIT_USAGE
        err = capsys.readouterr().err.strip()
        assert "holds no checkpoint" in err and want in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

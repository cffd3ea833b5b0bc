"""Requests that arrive while steps are in flight (the NaN guard decides on
the device; the loop settles at its log interval, ``train/guard.py``): a
request taken at the safe point brings those steps to the log first
(``run.Run._apply``), so every record a request writes (``change``,
``sample``, ``ack``, ``pause``, ``eval``) follows the train records of the
steps before it, and every step is logged once, in order."""
from __future__ import annotations

import math
import random

import pytest
import torch

from tui_trainer.config import make_config
from tui_trainer.control.commands import Command, Order
from tui_trainer.records import BadStep, Checkpoint, Status, TrainStep
from tui_trainer.train.engine import Trainer

TINY = {"n_layer": 1, "n_head": 2, "n_embd": 16, "context_length": 8, "batch_size": 2, "eval_batches": 1,
        "sample_tokens": 4, "warmup_steps": 2, "threads": 1, "log_every": 10, "eval_every": 100}


def requests(rng: random.Random) -> list:
    return rng.choice([
        [Order(Command.SET, {"key": "steps", "value": rng.randint(2, 6)}, "socket")],  # below the step in flight
        [Order(Command.SET, {"key": "checkpoint_every", "value": rng.choice([1, 3, 7])}, "socket")],
        [Order(Command.SET, {"key": "eval_every", "value": rng.choice([1, 4])}, "socket")],
        [Order(Command.SAMPLE, {"prompt": "a"}, "socket")],
        [Order(Command.SET, {"key": "steps", "value": "x"}, "socket")],  # refused when applied: an ack
        [Command.EVAL, Command.CHECKPOINT, Order(Command.SAMPLE, {"prompt": "b"}, "socket")],
        [Command.PAUSE, Command.STOP],
    ])


def run_with(tmp_path, monkeypatch, seed: int) -> list:
    monkeypatch.setattr("tui_trainer.train.guard.RECORDS_LAG_S", math.inf)  # a loaded machine: no lag settle
    rng = random.Random(seed)
    cfg = make_config({"steps": 16, "out": str(tmp_path / f"run{seed}"), "seed": seed, **TINY})
    records = []

    class Sink:
        def emit(self, r):
            records.append(r)

    t = Trainer(cfg, None, [Sink()])
    real, at = t._train_step, rng.randint(1, 8)

    def launch_then_ask():
        ok = real()
        if t.step == at and t.guard.pending:  # the window: steps launched, not yet logged
            for req in requests(rng):
                t._run.commands.put(req)
        return ok

    monkeypatch.setattr(t, "_train_step", launch_then_ask)
    end = t.run()
    assert end.status in ("finished", "stopped"), end
    return records


@pytest.mark.parametrize("seed", range(8))
def test_a_request_while_steps_are_in_flight_follows_their_records(tmp_path, monkeypatch, seed):
    records = run_with(tmp_path, monkeypatch, seed)
    train = [r.step for r in records if isinstance(r, (TrainStep, BadStep))]
    assert train == list(range(1, len(train) + 1)), train  # each step once, in order
    for i, r in enumerate(records):
        if isinstance(r, (TrainStep, BadStep, Checkpoint, Status)) or r.type in ("run_start", "resources"):
            continue  # (a background write's checkpoint record comes steps later, by design)
        later = [x.step for x in records[i + 1:] if isinstance(x, TrainStep) and x.step <= r.step]
        assert not later, f"{r.type} at step {r.step} came before the train records of steps {later}"

"""The loop asks; the manager decides (issue 21 item 2).  The built-in loop and
a loop of your own call one ``CheckpointManager`` method, ``after``, wherever
a save may follow; only the manager knows scheduled / best / final / manual /
refused, and only it writes.  Checked three ways: from the source (nobody
else saves, decides or sets the manager's state), with a manager whose policy
is recorded (the engine writes exactly what it says, and asks at every step),
and against a reference model of the policy over generated event sequences."""
from __future__ import annotations

import ast
import math
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings, strategies as st

from tui_trainer.logs import read_records
from tui_trainer.records import Ack, Checkpoint
from tui_trainer.run import checkpoint as ckpt
from tui_trainer.run.log_writer import LOG_NAME

PKG = Path(__file__).resolve().parent.parent / "tui_trainer"
MANAGER_NAMES = {"checkpoints", "ckpts"}  # what the package calls a run's CheckpointManager
# What a loop may call on its manager: the one question, and what it supplies.
# ``due`` is a question, not a decision: the built-in loop asks whether a save
# is scheduled at a step so that the step's numbers are on the host first
# (``train/guard.py``); whether it is written, and why, stays the manager's.
LOOP_CALLS = {"after", "bind", "restore", "set_every", "due"}
# The run that owns the manager also gives it its folder, turns it off in a
# forked child and logs a finished background write at each step boundary.
RUN_CALLS = LOOP_CALLS | {"use_folder", "disable", "poll"}


# --- from the source ----------------------------------------------------------------

def _name(node: ast.AST) -> str | None:
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None


def test_only_the_manager_decides_and_writes_and_nobody_sets_its_state():
    found = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        if rel in ("run/checkpoint.py", "run/checkpoint_writer.py", "run/atomic_file.py"):
            continue
        allowed = RUN_CALLS if rel == "run/run.py" else LOOP_CALLS
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                fn = _name(node.func)
                if fn in ("save_checkpoint", "atomic_save"):
                    found.append(f"{rel}:{node.lineno} calls {fn}: only the manager writes")
                if isinstance(node.func, ast.Attribute) and _name(node.func.value) in MANAGER_NAMES \
                        and fn not in allowed:
                    found.append(f"{rel}:{node.lineno} calls the manager's {fn}: ask it with after()")
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for t in targets:
                if isinstance(t, ast.Attribute) and _name(t.value) in MANAGER_NAMES:
                    found.append(f"{rel}:{node.lineno} sets the manager's {t.attr} from outside")
    assert not found, "\n".join(found)


def test_a_run_s_manager_is_made_in_one_place():
    makers = [f"{p.relative_to(PKG).as_posix()}:{node.lineno}" for p in sorted(PKG.rglob("*.py"))
              for node in ast.walk(ast.parse(p.read_text()))
              if isinstance(node, ast.Call) and _name(node.func) == "CheckpointManager"]
    assert len(makers) == 1 and makers[0].startswith("run/run.py:"), makers


# --- a manager whose policy is recorded ---------------------------------------------

def test_the_engine_asks_at_every_step_and_writes_only_what_the_manager_says(tiny_cfg, monkeypatch):
    """Every step trained is put to the manager, in order, then the end; a
    policy of its own (save at steps 2 and 5 only) is exactly what reaches the
    disk and the log, although the schedule (every step) and the evals say
    otherwise."""
    from tui_trainer.run import run as run_module
    from tui_trainer.train.engine import train

    asked: list[tuple[int, str]] = []

    class Recorded(ckpt.CheckpointManager):
        def after(self, step, moment="step", **kw):
            asked.append((step, moment))
            if moment == "step" and step in (2, 5):
                return super().after(step, "save")
            if moment == "end":
                return super().after(step, "end", clean=False)  # waits for the write in flight, saves nothing
            return None

    monkeypatch.setattr(run_module, "CheckpointManager", Recorded)
    cfg = tiny_cfg(steps=6, eval_every=3, checkpoint_every=1, keep=5)
    end = train(cfg, cfg.out)
    assert end.status == "finished" and end.step == 6
    assert [s for s, m in asked if m == "step"] == [1, 2, 3, 4, 5, 6]
    assert asked[-1] == (6, "end") and [m for _, m in asked].count("end") == 1
    out = Path(cfg.out)
    assert [s for s, _ in ckpt.list_step_checkpoints(out)] == [2, 5]
    saved = [(r["step"], r["reason"]) for r in read_records(out / LOG_NAME) if r["type"] == "checkpoint"]
    assert saved == [(2, "manual"), (5, "manual")]
    assert ckpt.load_checkpoint(out / ckpt.LATEST)["step"] == 5


def test_the_built_in_policy_through_the_engine(tiny_cfg):
    """Unpatched: scheduled every 2 steps, the last step scheduled too (so no
    final save at it), a manual request answered as 'manual'."""
    from tui_trainer.train.engine import train

    cfg = tiny_cfg(steps=5, eval_every=100, checkpoint_every=2, keep=5)
    assert train(cfg, cfg.out).status == "finished"
    saved = [(r["step"], r["reason"]) for r in read_records(Path(cfg.out) / LOG_NAME) if r["type"] == "checkpoint"]
    # step 5 is the last: scheduled, and its eval (eval at the last step) marks best.pt
    assert saved == [(2, "scheduled"), (4, "scheduled"), (5, "scheduled")]
    assert ckpt.load_checkpoint(Path(cfg.out) / ckpt.BEST)["step"] == 5


# --- the policy against a reference model -------------------------------------------

class _View:
    """A stand-in for the run the manager reads (``checkpoint.RunView``)."""

    def __init__(self, total: int):
        self.stopping, self.paused, self.total_steps = False, False, total


def _reference(events, every, total):
    """What the manager should decide: [(step, reason)] saved, [step] refused,
    and which save (its index) best.pt should hold (None: none)."""
    best, last, saves, refused, best_save = math.inf, -1, [], [], None
    stopping, healthy = False, True

    def save(step, reason, val):
        nonlocal best, last, best_save
        if not healthy:
            refused.append(step)
            return
        if val is not None and math.isfinite(val) and val < best:
            best, best_save = val, len(saves)
        last = step
        saves.append((step, reason))

    for kind, step, val, flag in events:
        if kind == "health":
            healthy = flag
        elif kind == "stop":
            stopping = True
        elif kind == "step":
            if step % every == 0 or step == total:
                save(step, "scheduled", val)
            elif val is not None and math.isfinite(val) and val < best and not stopping:
                save(step, "best", val)
        elif kind == "eval":
            if val is not None and math.isfinite(val) and val < best and not stopping:
                save(step, "best", val)
        elif kind == "save":
            save(step, "manual", val)
        elif kind == "end":
            if flag and step > 0 and step != last and healthy:
                save(step, "final", val)
    return saves, refused, best_save


@st.composite
def _events(draw):
    total = draw(st.integers(1, 8))
    val = st.one_of(st.none(), st.floats(0.0, 5.0), st.just(math.nan))
    events = []
    for step in range(1, total + 1):
        if draw(st.integers(0, 5)) == 0:
            events.append(("health", step, None, draw(st.booleans())))
        events.append(("step", step, draw(val), None))
        for _ in range(draw(st.integers(0, 2))):
            kind = draw(st.sampled_from(["eval", "save"]))
            events.append((kind, step, draw(val), None))
        if draw(st.integers(0, 7)) == 0:
            events.append(("stop", step, None, None))
            break
    last = events[-1][1]
    events.append(("end", last, draw(val), draw(st.booleans())))
    return total, draw(st.integers(1, 4)), events


@settings(max_examples=40, deadline=None)
@given(case=_events())
def test_the_manager_decides_as_its_policy_says(case):
    total, every, events = case
    expected, refused, best_save = _reference(events, every, total)
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        records = []
        view = _View(total)
        m = ckpt.CheckpointManager(folder, every=every, keep=100, emit=records.append, run=view)
        health = SimpleNamespace(ok=True)
        made = []  # one state per save written (a refused save makes none): its index is in the file

        def state():
            made.append(len(made))
            return {"format": ckpt.FORMAT, "step": 0, "tokens": made[-1], "config": {}, "model": {"w": torch.zeros(2)},
                    "optimizer": {}, "sampler": {}, "rng": {}}

        m.bind(state, healthy=lambda: health.ok)
        moments = {"step": "step", "eval": "eval", "save": "save", "end": "end"}
        for kind, step, val, flag in events:
            if kind == "health":
                health.ok = flag
            elif kind == "stop":
                view.stopping = True
            elif kind == "end":
                m.after(step, "end", val_loss=val, clean=flag)
            else:
                m.after(step, moments[kind], val_loss=val)
        got = [(r.step, r.reason) for r in records if isinstance(r, Checkpoint)]
        assert got == expected
        assert [r.step for r in records if isinstance(r, Ack) and r.command == "checkpoint"] == refused
        assert sorted({s for s, _ in expected}) == [s for s, _ in ckpt.list_step_checkpoints(folder)]
        if best_save is None:
            assert not (folder / ckpt.BEST).exists()
        else:
            assert ckpt.load_checkpoint(folder / ckpt.BEST)["tokens"] == best_save

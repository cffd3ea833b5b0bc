"""One owner, one route (issue 21): whoever needs a run holds the ``Run``;
the trainer keeps its own to itself; the dashboard steers the run ``cli``
holds; nothing sets a run's state from outside; a loop of your own gets an
object that *has* a run (composition), and the built-in trainer's run offers
none of its calls."""
from __future__ import annotations

import ast
import queue
import threading
from pathlib import Path

import tui_trainer
from tui_trainer.control.commands import Command
from tui_trainer.loops.own_loop import OwnLoop
from tui_trainer.records import RunEnd, TrainStep
from tui_trainer.run.run import Run
from tui_trainer.ui.sources import LocalSteering, TrainerSource

PACKAGE = Path(tui_trainer.__file__).parent

#: What engine.Trainer forwarded to its run before (issue 21: twelve members).
FORWARDS = ("run_handle", "run_dir", "run_name", "commands", "sinks", "paused", "interactive", "add_sink",
            "remove_sink", "send", "request_stop", "stopping")
#: What a loop of your own calls: its object's, never the built-in trainer's run's.
OWN_LOOP_CALLS = ("log", "log_eval", "log_sample", "save_checkpoint", "log_checkpoint", "set_callbacks",
                  "on_setting", "finish", "should_stop", "loop_state", "config", "resumed_from", "ended",
                  "__enter__", "__exit__")
#: The run's own parts, which the own-loop object does not hand out.
RUN_INSIDES = ("emit", "sinks", "commands", "settings", "set_handlers", "open", "close", "take_folder",
               "add_sink", "remove_sink", "install_signals", "signals", "sync", "stop_event", "changed")
#: A run's state, which only the run sets (its methods say what happens).
RUN_STATE = {"pause_at", "changed", "total_steps", "step", "paused", "pause_reason", "failure", "folder", "name",
             "sinks", "commands", "detached"}


def test_the_trainer_keeps_its_run_to_itself(tiny_cfg):
    from tui_trainer.train.engine import Trainer

    for name in FORWARDS:
        assert not hasattr(Trainer, name), f"Trainer.{name} forwards its run's"
    t = Trainer(tiny_cfg(threads=1), None)  # the lesson's form: the factory makes its run
    assert not any(hasattr(t, name) for name in FORWARDS)
    assert callable(t.run)  # the loop


def test_the_lessons_forms_still_train(tiny_cfg, tmp_path):
    from tui_trainer.train.engine import train

    seen = []
    sink = type("S", (), {"emit": lambda self, r: seen.append(r)})()
    end = train(tiny_cfg(steps=3, eval_every=3, warmup_steps=1, threads=1), tmp_path / "r", [sink])
    assert end.status == "finished" and end.step == 3
    assert (tmp_path / "r" / "losses.jsonl").exists()
    assert [r.step for r in seen if isinstance(r, TrainStep)] == [1, 2, 3]


class LoopOnly:
    """A trainer as the dashboard needs it: its step and its loop, nothing of a run."""

    def __init__(self, run: Run):
        self.step, self._run, self.started = 0, run, threading.Event()

    def run(self) -> RunEnd:
        self.started.set()
        while not self._run.stopping:
            self._run.between_steps(self.step)
        end = RunEnd(step=self.step, status="stopped", elapsed_s=0.0)
        self._run.emit(end)
        return end


def test_the_dashboard_steers_the_run_it_is_given():
    run = Run.unlocked(name="held")
    trainer = LoopOnly(run)
    source = TrainerSource(trainer, run=run)
    steering = LocalSteering(source)
    source.send(Command.PAUSE)
    assert run.commands.get_nowait() is Command.PAUSE
    assert steering.request({"cmd": "status"})["ok"]  # answered by the run, as the socket would
    source.start()
    assert trainer.started.wait(30)
    source.stop()
    source.join(30)
    assert source.done and run.stop_event.is_set() and isinstance(source.result, RunEnd)
    assert any(isinstance(r, RunEnd) for _, r in source.poll())  # its records came through the run


def test_a_resume_gives_the_run_its_live_state_through_a_method():
    run = Run.unlocked()
    run.restore_live(120, {"lr_scale": 0.5})
    assert run.pause_at == 120 and run.changed == {"lr_scale": 0.5}
    assert run.settings.current()["pause_at"] == 120


def _assigned_from_outside(tree: ast.AST) -> list[str]:
    """``x.run.step = ...``-like assignments: a run's state set by someone else."""
    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            for t in target.elts if isinstance(target, ast.Tuple) else [target]:
                if isinstance(t, ast.Attribute) and t.attr in RUN_STATE:
                    owner = ast.unparse(t.value)
                    if owner.split(".")[-1] in ("run", "_run", "run_handle") and owner != "self":
                        found.append(ast.unparse(t))
                elif isinstance(t, ast.Attribute) and t.attr == "lr_scale" and ast.unparse(t.value) != "self":
                    found.append(ast.unparse(t))  # the trainer's live lr_scale: Trainer.set_lr_scale
    return found


def test_no_module_sets_a_runs_state_from_outside():
    bad = {}
    for p in PACKAGE.rglob("*.py"):
        tree = ast.parse(p.read_text(encoding="utf-8"))
        if got := _assigned_from_outside(tree):
            bad[str(p.relative_to(PACKAGE))] = got
        for node in ast.walk(tree):  # nor reaches a private member of another's object by name
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "getattr" and len(node.args) >= 2:
                name = node.args[1]
                if isinstance(name, ast.Constant) and name.value in ("run_handle", "_run", "_handlers", "_out"):
                    bad.setdefault(str(p.relative_to(PACKAGE)), []).append(ast.unparse(node))
    assert not bad, f"set from outside (give the run a method that says what happens): {bad}"


def test_a_loop_of_your_own_has_a_run_and_the_built_in_run_offers_none_of_its_calls(tmp_path):
    for name in OWN_LOOP_CALLS:
        assert not hasattr(Run, name), f"Run.{name}: a call for a loop of your own"
    with tui_trainer.init(tmp_path / "r", quiet=True, signals=False) as run:
        assert isinstance(run, OwnLoop) and not isinstance(run, Run)
        for name in RUN_INSIDES:
            assert not hasattr(run, name), f"init()'s object hands out the run's {name}"
        run.log(1, train_loss=1.0)
        assert run.step == 1 and not run.should_stop and run.folder == tmp_path / "r"
        run.log(5, train_loss=1.0, steer=False)
        assert run.step == 5  # what status answers say, without steering
    assert run.ended


def test_one_callback_api_reaches_the_loop(tmp_path):
    from tui_trainer.control.channel import TrainerControl

    asked = queue.Queue()
    with tui_trainer.init(tmp_path / "r", quiet=True, signals=False, on_eval=asked.put) as run:
        handle = TrainerControl(run._run).handle  # the run the socket serves
        assert handle({"cmd": "eval"})["ok"]
        assert "on_checkpoint" in handle({"cmd": "checkpoint"})["error"]
        run.log(3, train_loss=1.0)  # applied here, on the loop's thread, given the step
        assert asked.get_nowait() == 3

"""Ctrl-Z suspends the dashboard (issue 23): the key is bound, the time
stopped is a pause with reason ``suspended`` in the log (so rates and ETAs
leave it out), and the screen comes back only in the foreground.  The real
SIGTSTP is not sent here (Pilot has no terminal); tmux checks that by hand."""
from __future__ import annotations

from textual.app import App

from tui_trainer.records import Paused, Resumed, TrainStep
from tui_trainer.curves.series import RunSeries
from tui_trainer.ui.sources import LocalSteering, TrainerSource
from tui_trainer.ui import suspend
from tui_trainer.ui.app import DashboardApp
from uitools import FakeTrainer, until


class Keep:
    def __init__(self):
        self.seen = []

    def emit(self, r):
        self.seen.append(r)


def test_ctrl_z_is_bound_to_suspend():
    assert any(getattr(b, "key", None) == "ctrl+z" and b.action == "suspend_process" for b in DashboardApp.BINDINGS)


async def test_a_suspension_is_a_pause_in_the_log_and_fg_redraws(monkeypatch):
    trainer = FakeTrainer(step_s=0.001)
    kept = Keep()
    trainer.add_sink(kept)
    source = TrainerSource(trainer, run=trainer)
    app = DashboardApp(source, [RunSeries(trainer.run_name)], steering=LocalSteering(source))
    stopped = []
    foreground = [False]
    monkeypatch.setattr(suspend.Suspender, "can_suspend", lambda self: True)
    monkeypatch.setattr(suspend.Suspender, "in_foreground", lambda self: foreground[0])
    monkeypatch.setattr(App, "action_suspend_process", lambda self: stopped.append(self._batch_count))
    async with app.run_test(size=(100, 30)) as pilot:
        monkeypatch.setattr(app._driver, "resume_application_mode", lambda: stopped.append("redrawn"))
        await until(pilot, lambda: trainer.step > 5, "some steps")
        await pilot.press("ctrl+z")
        assert stopped == [1]  # SIGTSTP sent with drawing held
        assert [r for r in kept.seen if isinstance(r, Paused)][-1].reason == "suspended"
        app.suspender.continued()  # SIGCONT after `bg`: the run goes on, the screen stays away
        assert isinstance([r for r in kept.seen if isinstance(r, (Paused, Resumed))][-1], Resumed)
        assert app.suspender.suspended and app._batch_count == 1 and stopped == [1]
        foreground[0] = True  # `fg`
        await until(pilot, lambda: not app.suspender.suspended, "the screen back in the foreground")
        assert stopped == [1, "redrawn"] and app._batch_count == 0
        await until(pilot, lambda: app.runs[0].state == "running", "the run shown running again")
        await pilot.press("q", "q")
        await until(pilot, lambda: app.return_value is not None, "the app to exit")
    paused = [r for r in kept.seen if isinstance(r, Paused)]
    assert [p.reason for p in paused] == ["suspended"]


def test_the_rate_leaves_the_stopped_time_out():
    s = RunSeries()
    for i in range(1, 11):
        s.apply(TrainStep(step=i, train_loss=1.0, lr=1e-3, tokens_per_sec=100.0, grad_norm=1.0, elapsed_s=i * 0.1))
    s.apply(Paused(step=10, reason="suspended"))
    s.apply(Resumed(step=10))
    for i in range(11, 21):
        s.apply(TrainStep(step=i, train_loss=1.0, lr=1e-3, tokens_per_sec=100.0, grad_norm=1.0,
                          elapsed_s=600 + i * 0.1))  # ten minutes stopped
    sps, _ = s.rates()
    assert abs(sps - 10.0) < 0.5


def test_a_suspension_inside_a_log_interval_is_written_after_the_steps_it_follows(monkeypatch):
    """Ctrl-Z while steps since the last log interval are still on the device:
    the run pauses at the loop's safe point, so the ``pause`` (suspended) comes
    after every train record up to its step, and ``resume`` at the same step;
    before, the pause was written at once from the UI thread, at the loop's step,
    ahead of the steps it followed (``pause 44``, ``resume 48``, then ``train 41..``)."""
    import math
    import threading
    from types import SimpleNamespace

    from tui_trainer.config import make_config
    from tui_trainer.run.run import Run
    from tui_trainer.train.engine import Trainer

    monkeypatch.setattr("tui_trainer.train.guard.RECORDS_LAG_S", math.inf)
    monkeypatch.setattr(suspend, "SETTLE_S", 120.0, raising=False)  # a loaded machine: never the fallback here
    cfg = make_config({"steps": 12, "threads": 1, "log_every": 10, "eval_every": 1000, "checkpoint_every": 1000})
    run = Run.unlocked()
    kept = Keep()
    run.add_sink(kept)
    t = Trainer(cfg, run)
    source = SimpleNamespace(trainer=t, run=run, end=None)
    suspender = suspend.Suspender(SimpleNamespace(mode="live", source=source))
    helper: list[threading.Thread] = []

    def ctrl_z_then_fg():
        suspender.note(paused=True)   # Ctrl-Z: returns once the run waits at its safe point
        suspender.note(paused=False)  # SIGCONT

    real_due = t.guard.due

    def due(step, *args):
        if step == 5 and not helper:  # mid-interval: steps 1..5 not yet in the log
            helper.append(threading.Thread(target=ctrl_z_then_fg, daemon=True))
            helper[0].start()
            return False
        return real_due(step, *args)

    monkeypatch.setattr(t.guard, "due", due)
    assert t.run().status == "finished"
    helper[0].join(timeout=60)
    kinds = [(type(r).__name__, r.step) for r in kept.seen if isinstance(r, (TrainStep, Paused, Resumed))]
    paused = [r for r in kept.seen if isinstance(r, Paused)]
    assert [p.reason for p in paused] == ["suspended"], kinds
    at = kinds.index(("Paused", paused[0].step))
    assert kinds[:at] == [("TrainStep", s) for s in range(1, paused[0].step + 1)], kinds
    assert kinds[at + 1] == ("Resumed", paused[0].step), kinds
    assert [s for k, s in kinds if k == "TrainStep"] == list(range(1, 13))

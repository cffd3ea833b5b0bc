"""The live dashboard is drawn before the engine exists: importing torch,
loading data and building the model happen behind a window that says so."""
from __future__ import annotations

import sys
import threading

from tui_trainer.curves.series import RunSeries
from tui_trainer.ui.sources import LocalSteering, TrainerSource
from tui_trainer.ui.app import DashboardApp
from tui_trainer.ui.status_line import StatusLine
from uitools import FakeTrainer, until


def status_text(app) -> str:
    return str(app.screen.query_one(StatusLine).render())


async def test_the_first_paint_does_not_wait_for_the_engine():
    release = threading.Event()
    phases = []
    fake = FakeTrainer(steps=50)  # the trainer prepare builds, and the run (cli holds it from the start)

    def prepare(say, cancelled):
        say("loading PyTorch…")
        phases.append("asked")
        release.wait(30)  # the engine is slow to build: the window must not wait for it
        return fake

    source = TrainerSource(run=fake, prepare=prepare)
    app = DashboardApp(source, [RunSeries("")], steering=LocalSteering(source))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "loading PyTorch" in status_text(app), "the loading line")
        assert source.trainer is None and not release.is_set()
        await pilot.press("e")  # keys answer while it loads, and steer nothing yet
        release.set()
        await until(pilot, lambda: app.runs[0].step == 50, "training once ready")
        assert "loading" not in status_text(app)
        await pilot.press("q")


async def test_an_error_while_preparing_closes_the_window_and_is_kept():
    def prepare(say, cancelled):
        raise ValueError("data file x.txt is a FIFO")

    source = TrainerSource(run=FakeTrainer(), prepare=prepare)
    app = DashboardApp(source, [RunSeries("")], steering=LocalSteering(source))
    source.on_fail = lambda: app.call_from_thread(app.exit)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: source.error is not None, "the error")
        await pilot.pause(0.2)
    assert isinstance(source.error, ValueError) and source.trainer is None


FRESH = """
import sys
import tui_trainer.ui.app as app_module
from tui_trainer import cli

def fake_dashboard(trainer=None, mouse=False, signals=None, source=None):
    print("torch" in sys.modules, source.trainer is None)
    return None

app_module.run_dashboard = fake_dashboard
sys.stdin.isatty = lambda: True
sys.stdout.isatty = lambda: True
sys.exit(cli.main(["train", "--out", sys.argv[1]]))
"""


def test_the_dashboard_path_does_not_import_torch_before_the_window(tmp_path):
    import subprocess

    out = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "r")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]  # torch not imported when the window opens
    assert not (tmp_path / "r").exists()  # nothing built, nothing written

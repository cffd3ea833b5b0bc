"""Run an ``engine.Trainer`` inside the live dashboard, headless (Textual's
``run_test``), until it ends: the engine+dashboard arm of ``bench_engine.py``
and ``bench_gpu.py``."""
from __future__ import annotations

import asyncio
from typing import Any


def live_trainer(cfg: Any, folder: Any, sinks: list, interactive: bool = True) -> tuple[Any, Any]:
    """An ``engine.Trainer`` and the run it reports to, which the dashboard
    steers (an older tree: the trainer made its run and answers for it)."""
    from tui_trainer.train.engine import Trainer
    try:
        from tui_trainer.run.run import Run

        make = Run.unlocked
    except (ImportError, AttributeError):  # an older tree (bench_* --code)
        trainer = Trainer(cfg, folder, sinks, interactive=interactive)
        return trainer, trainer
    run = make(folder, sinks=sinks, interactive=interactive, checkpoint_every=cfg.ckpt_every, keep=cfg.keep)
    return Trainer(cfg, run), run


def run_in_dashboard(trainer: Any, size: tuple[int, int] = (120, 40), run: Any = None) -> None:
    """Train ``trainer`` under the dashboard app at ``size`` until it ends;
    ``run``: the run it reports to (``live_trainer``).  Raises ImportError
    where the dashboard does not import."""
    from tui_trainer.curves.series import RunSeries
    from tui_trainer.ui.app import DashboardApp
    try:
        from tui_trainer.ui.sources import TrainerSource
    except ImportError:  # an older tree (bench_* --code)
        from tui_trainer.ui.app import TrainerSource  # type: ignore[attr-defined,no-redef]

    if run is None or run is trainer:  # an older tree
        source, name = TrainerSource(trainer), trainer.run_name
    else:
        source, name = TrainerSource(trainer, run=run), run.name
    app = DashboardApp(source, [RunSeries(name)])

    async def drive() -> None:
        async with app.run_test(size=size) as pilot:
            source.start()  # the app starts it too; twice is harmless
            while not source.done:
                await pilot.pause(0.1)

    try:
        asyncio.run(drive())
    finally:
        source.stop()
        source.join()

"""Run an ``engine.Trainer`` inside the live dashboard, headless (Textual's
``run_test``), until it ends: the engine+dashboard arm of ``bench_engine.py``
and ``bench_gpu.py``."""
from __future__ import annotations

import asyncio
from typing import Any


def run_in_dashboard(trainer: Any, size: tuple[int, int] = (120, 40)) -> None:
    """Train ``trainer`` under the dashboard app at ``size`` until it ends.
    Raises ImportError where the dashboard does not import."""
    from tui_trainer.curves.series import RunSeries
    from tui_trainer.ui.app import DashboardApp
    try:
        from tui_trainer.ui.sources import TrainerSource
    except ImportError:  # an older tree (bench_* --code)
        from tui_trainer.ui.app import TrainerSource  # type: ignore[attr-defined,no-redef]

    source = TrainerSource(trainer)
    app = DashboardApp(source, [RunSeries(trainer.run_name)])

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

"""A built-in trainer and the run it reports to, both held by the test: the
trainer keeps its run to itself, so whoever steers it (a test, as cli does)
makes the run first and hands it over."""
from __future__ import annotations

from tui_trainer.run.run import Run
from tui_trainer.train.engine import Trainer


def trainer_with_run(cfg, folder=None, sinks=(), *, interactive=False, **trainer_kw) -> tuple[Trainer, Run]:
    run = Run.unlocked(folder, sinks=sinks, interactive=interactive,
                       checkpoint_every=cfg.ckpt_every, keep=cfg.keep)
    return Trainer(cfg, run, **trainer_kw), run

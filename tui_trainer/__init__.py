"""tui-trainer: train a small GPT and watch and steer the run from a terminal.

``tui_trainer.init(...)`` gives a training loop of your own the same run
folder, log, dashboard and steering (``api.py``).  It is imported on first
use, so ``import tui_trainer`` stays instant (no torch, no Textual).
"""

__version__ = "0.1.0"
__all__ = ["init"]


def __getattr__(name: str):
    if name == "init":
        from .api import init

        return init
    raise AttributeError(f"module 'tui_trainer' has no attribute {name!r}")

"""Commands a person (or the control channel) sends a running trainer.

Kept apart from the engine so the UI and the viewer can name them without
importing torch: `tui-trainer view` should start in a blink.
"""
from __future__ import annotations

from enum import Enum


class Command(str, Enum):
    PAUSE = "pause"
    RESUME = "resume"
    TOGGLE_PAUSE = "toggle_pause"
    EVAL = "eval"
    CHECKPOINT = "checkpoint"
    STOP = "stop"

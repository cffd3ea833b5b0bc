"""tui-trainer: train a small GPT and watch and steer the run from a terminal."""

__version__ = "0.1.0"

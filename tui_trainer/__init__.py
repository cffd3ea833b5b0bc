"""tui-trainer: train a small GPT and watch and steer the run from a terminal.

The package's rooms (README, "Design notes"): ``train/`` the loop and its parts,
``run/`` one run's folder, lock, log, checkpoints and signals, ``control/``
steering a running loop from elsewhere, ``text/`` tokenizers and corpora,
``logs/`` reading logs back, ``curves/`` a run's numbers made ready to draw,
``runs/`` many runs side by side, ``ui/`` the Textual screens, ``loops/`` a
loop of your own (``tui_trainer.init``), ``cli/`` the command.

``tui_trainer.init(...)`` is imported on first use, so ``import tui_trainer``
stays instant (no torch, no Textual).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

__version__ = "0.1.0"
__all__ = ["init"]

# Where each module lived before the package had rooms.  ``import
# tui_trainer.engine`` (and every other old path) still gives the module, the
# very same object as ``tui_trainer.train.engine``, so users' scripts keep working.
MOVED = {
    "engine": "train.engine",
    "step": "train.step",
    "parts": "train.parts",
    "model": "train.model",
    "data": "train.data",
    "optim": "train.optim",
    "schedule": "train.schedule",
    "hardware": "train.hardware",
    "memory": "train.memory",
    "threads": "train.threads",
    "distributed": "train.distributed",
    "lesson": "train.lesson",
    "torch_loader": "train.torch_loader",
    "text_codec": "text.tokenizer",
    "corpus_sources": "text.corpora",
    "token_cache": "text.token_cache",
    "nanogpt_files": "text.nanogpt",
    "bits_per_byte": "text.bits_per_byte",
    "rundir": "run.folder",
    "runlog": "run.log_writer",
    "checkpoint": "run.checkpoint",
    "checkpoint_schema": "run.checkpoint_schema",
    "checkpoint_writer": "run.checkpoint_writer",
    "resume": "run.resume",
    "fork": "run.fork",
    "signals": "run.signals",
    "console": "run.console",
    "resources": "run.resources",
    "time_budget": "run.time_budget",
    "control_server": "control.server",
    "channel_limits": "control.limits",
    "commands": "control.commands",
    "remote": "cli.remote",
    "control.remote": "cli.remote",
    "live": "control.live",
    "settings": "control.settings",
    "series": "curves.series",
    "smoothing": "curves.smoothing",
    "xaxis": "curves.xaxis",
    "axes": "curves.axes",
    "metrics": "logs.metrics",
    "api": "loops.api",
    "own_loop": "loops.own_loop",
    "launch": "loops.launch",
    "integrations": "loops",
    "integrations.huggingface": "loops.huggingface",
    "cli_parser": "cli.parser",
    "listing": "cli.listing",
    "snapshot": "cli.snapshot",
    "export": "cli.export",
    "alerts": "cli.alerts",
    "mcp_server": "cli.mcp_server",
    "sources": "ui.sources",
}


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        name = fullname.partition(".")[2]
        if fullname.startswith(__name__ + ".") and name in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        # the import system hands back whatever sys.modules holds under the
        # old name once this returns: the module at its new place
        sys.modules[module.__name__] = importlib.import_module(
            f"{__name__}.{MOVED[module.__name__.partition('.')[2]]}")


class Forwarding(types.ModuleType):
    """A room whose name was a module before (``control``, ``curves``,
    ``run``): the names that module held are read from the module they live
    in now (the room's ``__getattr__``), and set there too (``_FORWARD``), so
    ``monkeypatch.setattr(tui_trainer.control, "MAX_PENDING", 2)`` changes
    what the code reads, as it did before the rooms."""

    def __setattr__(self, name: str, value: object) -> None:
        home = self.__dict__.get("_FORWARD", {}).get(name)
        if home is None:
            return super().__setattr__(name, value)
        setattr(importlib.import_module(f"{self.__name__}.{home}"), name, value)

    def __delattr__(self, name: str) -> None:
        home = self.__dict__.get("_FORWARD", {}).get(name)
        if home is None:
            return super().__delattr__(name)
        delattr(importlib.import_module(f"{self.__name__}.{home}"), name)


def forward(room: str, home: str, names: tuple[str, ...]) -> None:
    """Make the room ``room`` (its module, importing) a ``Forwarding`` one
    whose ``names`` live in its module ``home``."""
    module = sys.modules[room]
    module.__dict__["_FORWARD"] = dict.fromkeys(names, home)
    module.__class__ = Forwarding


if not any(isinstance(f, _OldPaths) for f in sys.meta_path):
    sys.meta_path.insert(0, _OldPaths())   # first, so an old path never loads a second copy


def __getattr__(name: str):
    if name == "init":
        from .loops.api import init

        return init
    raise AttributeError(f"module 'tui_trainer' has no attribute {name!r}")

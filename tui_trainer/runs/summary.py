"""One run folder as the runs browser shows it (``RunSummary``), and what a
``Scanner`` keeps of it between scans (``Entry``)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LIVE = ("running", "paused")
ENDED = ("finished", "stopped", "diverged", "failed", "killed")
NAN = math.nan


@dataclass
class RunSummary:
    """One run folder as the runs browser shows it."""

    path: Path                 # the run folder
    folder: str                # its name, printable (odd bytes as \\xNN)
    run_name: str = ""         # run_start.run_name, else the folder's name
    label: str = ""            # the shortest distinct part of the names of the runs listed with it
    status: str = ""           # see the module docstring
    step: int = 0
    total_steps: int = 0
    best_val: float = NAN
    best_step: int | None = None
    best_bpb: float = NAN      # the val bits per byte of the best eval (NaN: not logged)
    train_loss: float = NAN
    tokens: int = 0
    elapsed_s: float = NAN
    started: float = NAN       # epoch seconds of its first run_start (NaN: unknown)
    config: dict[str, Any] = field(default_factory=dict)
    problem: str = ""          # why this folder is not a run to list ("" when it is one)
    evals_read: bool = False   # the eval search has run: best_val is known
    foreign: bool = False      # someone else's log (no run_start)
    size: int = 0              # bytes of its log when read
    parent: str = ""           # a fork's parent (run_start.parent): its folder as recorded, "" for no fork
    parent_name: str = ""      # ... its run name
    parent_label: str = ""     # ... its label when listed with it, else its name (labels.label)
    fork_step: int | None = None  # ... the step it was forked at
    family: str = ""           # sorts a family together: its ancestors' labels listed with it, then its own

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def live(self) -> bool:
        return self.status in LIVE


@dataclass
class Entry:
    """What a ``Scanner`` remembers of one folder between scans."""

    summary: RunSummary
    key: tuple = ()                      # (dev, ino, size, mtime_ns) of the log when last read
    live: bool | None = None
    scanned: int = 0                     # bytes of the log the eval search has covered
    ident: tuple[int, int] | None = None  # (dev, ino) the search covered
    # (step, val, resumes before it, val bits per byte or NaN)
    evals: list[tuple[int, float, int, float]] = field(default_factory=list)
    resumes: list[int] = field(default_factory=list)
    total: int = 0                       # the total steps the searched lines say, 0: none

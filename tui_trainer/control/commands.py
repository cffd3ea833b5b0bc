"""Commands a person (or the control channel) sends a running loop, and the
queue they wait in.

Kept apart from the engine so the UI and the viewer can name them without
importing torch: `tui-trainer view` should start in a blink.
"""
from __future__ import annotations

import queue
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Protocol

from ..records import ChangeSource


class Command(str, Enum):
    PAUSE = "pause"
    RESUME = "resume"
    TOGGLE_PAUSE = "toggle_pause"
    EVAL = "eval"
    CHECKPOINT = "checkpoint"
    STOP = "stop"
    SET = "set"        # an Order: {"key": K, "value": V}
    SAMPLE = "sample"  # an Order: {"prompt": P, "tokens": N, "temperature": T, "top_k": K, "id": ...}


#: Commands that carry arguments, and so travel as an ``Order``.
WITH_ARGS = (Command.SET, Command.SAMPLE)

#: Who asked, as a ``change`` record's ``source`` says.
Source = ChangeSource


@dataclass(frozen=True)
class Order:
    """A command with its arguments (``set``, ``sample``) and who sent it."""

    command: Command
    args: dict[str, Any] = field(default_factory=dict)
    source: Source = "keys"


@dataclass(frozen=True)
class Dropped:
    """A request the run will not apply (it arrived after its deadline), kept
    in the queue only so the loop's thread writes why, as an ``ack`` record."""

    command: Command
    why: str


def surrogate_problem(text: str, *, bytes_ok: bool = False) -> str | None:
    """Why ``text`` cannot be a prompt because it holds a lone surrogate
    (None when it holds none).  ``bytes_ok``: a byte-level model takes the
    ones that stand for undecodable bytes (``'\\udce9'``, as a command line
    with a non-UTF-8 argument gives it: the byte 0xE9)."""
    for c in text:
        if "\ud800" <= c <= "\udfff" and not (bytes_ok and "\udc80" <= c <= "\udcff"):
            return (f"the prompt holds U+{ord(c):04X}, a lone surrogate, which is no text; "
                    "send the prompt as UTF-8 text")
    return None


#: Data-parallel: at most this many commands are carried by one step's sync.
MAX_COMMANDS_PER_STEP = 8


class CommandSync(Protocol):
    """Data-parallel agreement (``distributed.Dist``): every rank calls
    ``sync_commands`` at the same point of each step and gets rank 0's
    commands, the OR of every rank's stop flag and the OR of every rank's
    "settle the steps in flight now" flag."""

    enabled: bool
    is_main: bool

    def sync_commands(self, commands: list[Command], stop: bool,
                      settle: bool = False) -> tuple[list[Command], bool, bool]: ...


#: Every steering command's wire name, in the enum's order.
STEERING: tuple[str, ...] = tuple(c.value for c in Command)
#: Those that need no arguments (``attach --send``, a key each).
PLAIN: tuple[str, ...] = tuple(c.value for c in Command if c not in WITH_ARGS)

Offer = Literal["queued", "coalesced", "busy"]


class CommandQueue(queue.Queue):
    """A thread-safe FIFO of ``Command``s with one extra: ``offer``, which
    coalesces a repeat of the command already waiting at the tail and bounds
    how many wait, atomically (the control channel's flood guard).  A stop is
    never refused as busy (it ends the run; one waits at most, past the bound)."""

    def offer(self, command: Command | Order | Dropped, max_pending: int) -> Offer:
        with self.not_full:  # the queue's own lock: check and put are one step
            waiting = self.queue
            if (waiting and waiting[-1] == command and isinstance(command, Command)
                    and command is not Command.TOGGLE_PAUSE):
                return "coalesced"
            if command is Command.STOP and Command.STOP in waiting:
                return "coalesced"
            if len(waiting) >= max_pending and command is not Command.STOP:  # a stop always gets through
                return "busy"
            self._put(command)
            self.unfinished_tasks += 1
            self.not_empty.notify()
        return "queued"

    def pending(self) -> int:
        return self.qsize()

    def take(self, wait_s: float | None, most: int) -> list[Any]:
        """Up to ``most`` requests, in order: waiting up to ``wait_s`` for the
        first when given (a paused loop), else only what is there now."""
        taken: list[Any] = []
        try:
            taken.append(self.get(timeout=wait_s) if wait_s is not None else self.get_nowait())
            while len(taken) < most:
                taken.append(self.get_nowait())
        except queue.Empty:
            pass
        return taken

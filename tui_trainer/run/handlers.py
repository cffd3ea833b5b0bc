"""What a run's loop does when asked, and why it refuses what it cannot do.

A ``run.Run`` has one ``Handlers``: the functions its loop registered for
eval, checkpoint and sample requests (called on the loop's thread at its safe
point), the loop's own words for a request it takes none of, and the check a
sample's prompt gets when the request arrives.  torch is not imported here.
"""
from __future__ import annotations

from typing import Any, Callable

from ..control.commands import Command, surrogate_problem

ASKABLE = (Command.EVAL, Command.CHECKPOINT, Command.SAMPLE)


class Handlers:
    """The requests a loop takes (see the module docstring)."""

    def __init__(self) -> None:
        self._fns: dict[Command, Callable[..., Any]] = {}
        self._why_not: dict[Command, str] = {}  # a loop's own words for a request it cannot take
        self.on_resume: Callable[[], Any] | None = None
        self.on_pause: Callable[[], int | None] | None = None
        self.lagging: Callable[[], bool] | None = None  # the loop's steps in flight wait too long for the log
        self._check_prompt: Callable[[str], str | None] | None = None

    def set(self, *, on_eval: Callable[[], Any] | None = None, on_checkpoint: Callable[[], Any] | None = None,
            on_sample: Callable[..., str] | None = None, on_resume: Callable[[], Any] | None = None,
            check_prompt: Callable[[str], str | None] | None = None,
            on_pause: Callable[[], int | None] | None = None,
            lagging: Callable[[], bool] | None = None) -> None:
        """Replace every handler; one left None is refused.  What the loop
        does, on its own thread, when asked to evaluate, checkpoint or sample
        now (``on_sample(prompt, tokens, temperature, top_k) -> text``).
        ``on_pause()`` brings the loop's steps in flight to the log before a
        pause is written, and says the step it has trained to.
        ``lagging()``: the loop's steps in flight have waited long enough for
        the log; data-parallel, any rank's says all settle at the next step.
        ``check_prompt(prompt)`` says why a sample's prompt cannot be taken
        (its tokenizer's word), asked when the request arrives; without it a
        prompt must be text (no lone surrogates)."""
        for cmd, fn in zip(ASKABLE, (on_eval, on_checkpoint, on_sample)):
            if fn is not None:
                self._fns[cmd] = fn
            else:
                self._fns.pop(cmd, None)
        self.on_resume, self.on_pause, self.lagging = on_resume, on_pause, lagging
        self._check_prompt = check_prompt

    def of(self, command: Command) -> Callable[..., Any] | None:
        """The function that answers ``command``, or None."""
        return self._fns.get(command)

    def refusal(self, command: Command) -> str | None:
        """Why the loop cannot take ``command`` (None when it can)."""
        if command in ASKABLE and command not in self._fns:
            if command in self._why_not:
                return self._why_not[command]
            what = {Command.EVAL: "on_eval", Command.CHECKPOINT: "on_checkpoint", Command.SAMPLE: "on_sample"}
            return f"this run's loop takes no {command.value} requests (it registered no {what[command]})"
        return None

    def explain(self, command: Command, why: str | None) -> None:
        """The loop's own words for a request it takes none of; None: the generic answer."""
        if why:
            self._why_not[command] = why
        else:
            self._why_not.pop(command, None)

    def prompt_refusal(self, prompt: str) -> str | None:
        """Why ``prompt`` cannot be sampled (None when it can)."""
        if self._check_prompt is None:
            return surrogate_problem(prompt)
        try:
            return self._check_prompt(prompt)
        except Exception as e:  # noqa: BLE001 - a checker that fails refuses, it does not fail the run
            return f"the prompt could not be checked ({type(e).__name__})"

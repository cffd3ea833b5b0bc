"""What a training loop of your own does with its run.

``tui_trainer.init`` (``api.py``) returns an ``OwnLoop``: it has a
``run.Run``, the very class the built-in trainer reports to (folder, lock,
log, control socket, signals, checkpoint policy), and offers the calls below;
the run's own parts stay the run's:

    with tui_trainer.init("outputs/my-run", config=cfg, on_eval=evaluate) as run:
        for step in range(1, steps + 1):
            ...                                        # forward, backward, optimizer step
            run.log(step, train_loss=loss.item(), lr=lr)
            if run.should_stop:
                break

- ``log`` writes one ``train`` record, then applies the steering waiting for
  the loop, on the loop's thread (``Run.between_steps``): a pause blocks
  inside ``log`` until resume or stop; eval, checkpoint and sample requests
  call the callbacks (``set_callbacks``, or ``init``'s arguments); a change of
  a live setting calls the function given to ``on_setting``.  A request with
  no callback, or a setting nobody offered, is refused on the socket at once.
- ``log_eval``, ``log_sample``, ``save_checkpoint`` and ``log_checkpoint``
  record the rest, so ``view`` and ``attach`` show evals, samples and
  checkpoints (``latest.pt``, ``best.pt``).
- ``finish`` writes the ``run_end``; leaving the ``with`` block does it too,
  as "failed" with the error when an exception leaves it.

torch is not imported here: a tensor given where a number belongs is read
with ``float()``.
"""
from __future__ import annotations

import math
import numbers
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, get_args

from ..errors import UserError
from ..run.run import Run
from ..records import RESERVED  # noqa: F401 (own_loop.RESERVED, as ever)
from ..records import Checkpoint, CheckpointReason, EndStatus, Eval, RunEnd, Sample, TrainStep, clean_text
from .values import as_count, as_number, as_step, callbacks, extras, said


@dataclass
class LoopState:
    """What a loop of its own has told its run so far."""

    config: dict[str, Any] = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)
    elapsed_before: float = 0.0         # a resumed run: the earlier sessions' wall time
    last_val: float | None = None       # the last eval's val loss, and its step
    last_val_step: int = -1
    rate_mark: tuple[float, int] | None = None  # (elapsed, tokens) at the last log giving tokens
    tokens_per_step: int | None = None  # init's batch shape: log counts the tokens when not given them
    request: str | None = None          # the request being answered now: "eval" or "checkpoint"
    checkpoints_logged: int = 0
    began: bool = False                 # init wrote a run_start: leaving a with block ends the run
    end: RunEnd | None = None
    resumed_from: str | None = None     # a resumed run: the checkpoint file it continues from
    logged_step: int | None = None      # the highest step ``log`` was given: where run_end says it ended
    lock: threading.Lock = field(default_factory=threading.Lock)


class RunFinishedError(UserError, RuntimeError):
    """A record given to a run after its ``finish``: its log has ended."""


class OwnLoop:
    """What a loop of your own holds (see the module docstring): a run, and
    what the loop has told it (``loop_state``)."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self.loop_state = LoopState()

    # --- the run, as the loop sees it ---
    @property
    def step(self) -> int:
        """Steps trained so far, as the run knows them (status answers say it)."""
        return self._run.step

    @property
    def total_steps(self) -> int:
        return self._run.total_steps

    @property
    def folder(self) -> Path | None:
        return self._run.folder

    @property
    def name(self) -> str:
        return self._run.name

    @property
    def checkpoints(self) -> Any:
        """The run's ``checkpoint.CheckpointManager`` (``last_step``, ``best_val``)."""
        return self._run.checkpoints

    @property
    def detached(self) -> bool:
        """A copy of the run in a child process after ``fork``: it writes nothing."""
        return self._run.detached

    @property
    def paused(self) -> bool:
        return self._run.paused

    def pause_quietly(self, paused: bool) -> None:
        """Let a pause go, or take it up again, with no record (the Hugging
        Face callback answers a request made while paused at a later hook)."""
        self._run.pause_quietly(paused)

    @property
    def stopping(self) -> bool:
        return self._run.stopping

    def request_stop(self) -> None:
        """Stop after the current step: ``should_stop`` turns True."""
        self._run.request_stop()

    def between_steps(self, step: int) -> None:
        """The steering waiting for the loop, applied here (``log`` calls it)."""
        self._run.between_steps(step)

    def explain_refusal(self, command: Any, why: str | None) -> None:
        """The loop's own words for a request it takes none of (``run.Run.explain_refusal``)."""
        self._run.explain_refusal(command, why)

    @property
    def config(self) -> dict[str, Any]:
        """The config given to ``init``; live settings (``on_setting``) keep theirs current."""
        return self.loop_state.config

    @property
    def resumed_from(self) -> str | None:
        """A resumed run: the checkpoint it continues from (load it yourself), or None."""
        return self.loop_state.resumed_from

    @property
    def elapsed(self) -> float:
        st = self.loop_state
        return st.elapsed_before + (time.perf_counter() - st.t0)

    @property
    def ended(self) -> bool:
        """True once ``finish`` wrote the run_end: records are refused from then on."""
        return self.loop_state.end is not None

    @property
    def should_stop(self) -> bool:
        """True once a stop was asked for (attach, SIGINT, SIGTERM; under
        torchrun, on every rank at the same step): leave the loop, then ``finish``."""
        return self._run.stopping

    # --- records ---
    def log(self, step: int, train_loss: float | None = None, lr: float | None = None, *,
            steer: bool = True, **numbers: float) -> None:
        """One ``train`` record for ``step`` (steps trained so far), then the
        steering waiting for the loop: a pause blocks here until resume or
        stop.  ``numbers``: any other number to keep (``acc=0.9``), written as
        a key of the line; ``grad_norm``, ``tokens`` (seen so far; default
        ``step x tokens_per_step`` when ``init`` had a batch shape) and
        ``tokens_per_sec`` fill the record's own fields (tokens/sec worked out
        from ``tokens`` when not given).  A number not given is NaN: null in
        the line, named in ``nonfinite``.  ``steer=False`` writes the record
        only (the Hugging Face callback logs from a hook that is not the step's end).  Under torchrun call it
        on every rank at the same steps: rank 0 writes, every rank steers."""
        self._check_open("log")
        step = as_step(step)
        own = {k: numbers.pop(k) for k in ("grad_norm", "tokens", "tokens_per_sec") if k in numbers}
        extra = extras(numbers, TrainStep)
        elapsed = self.elapsed
        per_step = self.loop_state.tokens_per_step
        if "tokens" not in own and per_step:
            own["tokens"] = step * per_step  # init's batch shape: the tokens so far
        tokens = as_count("tokens", own.get("tokens", 0))
        if "tokens_per_sec" in own:
            tps = as_number("tokens_per_sec", own["tokens_per_sec"])
        else:
            tps = self._tokens_per_sec(elapsed, tokens) if "tokens" in own else math.nan
        self._run.emit(TrainStep(step=step, train_loss=as_number("train_loss", train_loss),
                            lr=as_number("lr", lr), tokens_per_sec=tps,
                            grad_norm=as_number("grad_norm", own.get("grad_norm")),
                            elapsed_s=elapsed, tokens=tokens, extra=extra))
        st = self.loop_state
        with st.lock:  # several threads may log (steer=False): the highest step is where the run is
            st.logged_step = step if st.logged_step is None else max(st.logged_step, step)
        if steer:
            self._run.between_steps(step)
        else:
            self._run.reached(step)  # what status answers say; between_steps sets it when steering

    def _check_open(self, what: str) -> None:
        end = self.loop_state.end
        if end is not None and not self._run.detached:
            raise RunFinishedError(f"{what} after finish(): the run ended ({end.status} at step {end.step}) "
                                   "and its log takes no more records; call finish() after the last one, "
                                   "or start another run with tui_trainer.init")

    def _tokens_per_sec(self, elapsed: float, tokens: int) -> float:
        st = self.loop_state
        mark, st.rate_mark = st.rate_mark, (elapsed, tokens)
        if mark is None or elapsed <= mark[0] or tokens < mark[1]:
            return math.nan
        return (tokens - mark[1]) / (elapsed - mark[0])

    def log_eval(self, step: int, val_loss: float | None = None, train_loss: float | None = None, *,
                 forced: bool | None = None, **numbers: float) -> None:
        """One ``eval`` record: the validation loss (a dot on the loss plot, a
        row of the eval table), the train-split loss if you measured one, and
        any other metric (``accuracy=0.71``).  ``forced``: asked for by a
        person (default: whether this is the answer to an eval request)."""
        self._check_open("log_eval")
        step = as_step(step)
        st = self.loop_state
        val = as_number("val_loss", val_loss)
        if math.isfinite(val):
            st.last_val, st.last_val_step = val, step
        train = None if train_loss is None else as_number("train_loss", train_loss)  # absent is not NaN
        self._run.emit(Eval(step=step, val_loss=val, train_loss=train,
                       elapsed_s=self.elapsed, forced=st.request == "eval" if forced is None else bool(forced),
                       extra=extras(numbers, Eval)))

    def log_sample(self, step: int, text: str, prompt: str = "") -> None:
        """A generated sample, shown in the dashboard's sample pane."""
        self._check_open("log_sample")
        self._run.emit(Sample(step=as_step(step), prompt=str(prompt), text=str(text)))

    def save_checkpoint(self, step: int, state: Mapping[str, Any] | Callable[[], Mapping[str, Any]], *,
                        val_loss: float | None = None, reason: CheckpointReason | None = None) -> Path | None:
        """Write ``state`` (what ``torch.save`` takes, or a function returning
        it, called only when writing) as ``ckpt-stepNNNNNNNN.pt`` in the run
        folder, atomically; repoint ``latest.pt``, and ``best.pt`` when
        ``val_loss`` (default: the eval logged at this step) is the lowest so
        far; keep the newest ``keep`` older step files; write the
        ``checkpoint`` record.  Returns the path (None on ranks other than 0).
        Load it with ``torch.load(path)``."""
        self._check_open("save_checkpoint")
        step = as_step(step)
        st = self.loop_state
        if val_loss is None and st.last_val_step == step:
            val_loss = st.last_val
        make = state if callable(state) else (lambda: state)
        # The manager decides best or refused, and writes: the loop only says "save this now".
        path = self._run.checkpoints.after(step, "save", state=make, val_loss=val_loss,
                                      reason=reason or self._checkpoint_reason())
        if path is not None:
            st.checkpoints_logged += 1
        return path

    def log_checkpoint(self, step: int, path: str | os.PathLike[str], *, val_loss: float | None = None,
                       reason: CheckpointReason | None = None) -> None:
        """Record a checkpoint the loop wrote itself (``path``), so the viewer
        and the runs list know of it; ``val_loss`` defaults to the eval logged
        at this step."""
        self._check_open("log_checkpoint")
        step = as_step(step)
        st = self.loop_state
        st.checkpoints_logged += 1
        if val_loss is None and st.last_val_step == step:
            val_loss = st.last_val
        self._run.emit(Checkpoint(step=step, path=clean_text(os.fsdecode(path)),
                             reason=reason or self._checkpoint_reason(),
                             val_loss=None if val_loss is None else as_number("val_loss", val_loss)))

    def _checkpoint_reason(self) -> CheckpointReason:
        return "manual" if self.loop_state.request == "checkpoint" else "scheduled"

    # --- what the loop can be asked to do ---
    def set_callbacks(self, *, on_eval: Callable[[int], Any] | None = None,
                      on_checkpoint: Callable[[int], Any] | None = None,
                      on_sample: Callable[..., str] | None = None) -> None:
        """What the loop does, on its own thread inside ``log``, when asked to
        (``init`` takes the same arguments).  Each replaces the last; one left
        None is refused on the socket with the reason.

        - ``on_eval(step)``: evaluate; return a dict of numbers such as
          ``{"val_loss": v}`` (written as an ``eval`` record at that step), or
          None after calling ``log_eval`` itself.
        - ``on_checkpoint(step)``: save; call ``save_checkpoint``, or return
          the path written (recorded for you), or None.
        - ``on_sample(prompt, tokens=..., temperature=..., top_k=...)``:
          return the text generated from ``prompt`` (``attach --sample``);
          the options are None where the request gave none.

        They become the run's handlers (``run.Run.set_handlers``, the one
        route a request takes to any loop), given the step.
        """
        on_eval, on_checkpoint, on_sample = callbacks(on_eval, on_checkpoint, on_sample)  # junk refused here
        self._run.set_handlers(
            on_eval=(lambda: self._answer_eval(on_eval)) if on_eval is not None else None,
            on_checkpoint=(lambda: self._answer_checkpoint(on_checkpoint)) if on_checkpoint is not None else None,
            on_sample=(lambda prompt, tokens, temperature, top_k: str(
                on_sample(prompt, tokens=tokens, temperature=temperature, top_k=top_k)))
            if on_sample is not None else None)

    def _answer_eval(self, fn: Callable[[int], Any]) -> None:
        st = self.loop_state
        st.request = "eval"
        try:
            got = fn(self.step)
            if got is None:
                return
            if isinstance(got, numbers.Real) or hasattr(got, "__float__"):
                got = {"val_loss": got}
            if not isinstance(got, Mapping):
                raise TypeError(f"on_eval returns a dict of numbers such as {{'val_loss': 2.1}} or None, "
                                f"not {type(got).__name__}")
            self.log_eval(self.step, **dict(got))
        finally:
            st.request = None

    def _answer_checkpoint(self, fn: Callable[[int], Any]) -> None:
        st = self.loop_state
        st.request, before = "checkpoint", st.checkpoints_logged
        try:
            got = fn(self.step)
            if got is not None and st.checkpoints_logged == before:
                self.log_checkpoint(self.step, got)
        finally:
            st.request = None

    def on_setting(self, key: str, apply: Callable[[Any], Any] | None = None, *, value: float | None = None,
                   check: Callable[[Any], str | None] | None = None, help: str = "") -> None:
        """Offer ``key`` as a live setting: ``attach --set KEY=VALUE`` (and the
        dashboard) may change it.  The value is checked at once on the socket
        (a number of the type of its current value, ``value`` or
        ``config[key]``; ``check(v)`` returns why a value is refused, or
        None), then applied on the loop's thread inside its next ``log``:
        ``config[key]`` takes it, ``apply(v)`` is called, and a ``change``
        record is written.  ``apply`` raising ValueError refuses the change."""
        current = self.config.get(key) if value is None else value
        if isinstance(current, bool) or not isinstance(current, (int, float)):
            raise TypeError(f"live setting {key!r} needs a number to start from: pass value=, "
                            f"or put it in the config (it is {current!r})")
        kind = int if isinstance(current, int) else float
        self.config[key] = current

        def set_value(v: Any) -> None:
            if apply is not None:
                apply(v)
            self.config[key] = v

        self._run.settings.define(key, kind, lambda: self.config[key], set_value,
                             check=check or (lambda v: None), help=help)

    # --- the end ---
    def finish(self, status: EndStatus | None = None, error: str | None = None) -> RunEnd | None:
        """Write the ``run_end`` record ("finished", or "stopped" when a stop
        was asked for, unless ``status`` says otherwise) and close the run:
        log, socket, signal handlers and lock.  Calling it again does nothing."""
        st = self.loop_state
        if st.end is not None:
            return st.end
        if status is not None and status not in get_args(EndStatus):
            raise ValueError(f"status is one of {', '.join(get_args(EndStatus))}, not {status!r}")
        failure = self._run.failure  # the log could not be written (run.Run.emit)
        if failure is not None:
            status, error = "failed", failure
        status = status or ("stopped" if self._run.stopping else "finished")
        with st.lock:
            step = self.step if st.logged_step is None else max(self.step, st.logged_step)
        st.end = RunEnd(step=step, status=status, elapsed_s=self.elapsed,
                        val_loss=st.last_val, error=None if error is None else said(error))
        try:
            self._run.emit(st.end)
        finally:
            self._run.close()
        return st.end

    def __enter__(self) -> Any:
        return self

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        if error is None:
            self.finish()
        elif isinstance(error, KeyboardInterrupt):
            self.finish("killed", "interrupted: no final checkpoint")
        elif isinstance(error, SystemExit):
            self.finish(*exit_status(error.code))
        else:
            self.finish("failed", f"{type(error).__name__}: {said(error)}")


def exit_status(code: Any) -> tuple[EndStatus | None, str | None]:
    """How a run ends when its script exits with ``code`` (``sys.exit``'s
    argument): as usual for 0 or None, "failed" with the status otherwise."""
    if code is None or code == 0:
        return None, None
    if isinstance(code, int) and not isinstance(code, bool):
        return "failed", f"the script exited with status {code}"
    return "failed", f"the script exited: {said(code)[:200]}"

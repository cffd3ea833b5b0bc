"""A Hugging Face ``transformers.Trainer`` under the tui-trainer dashboard.

    from tui_trainer.integrations.huggingface import TuiTrainerCallback

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                      callbacks=[TuiTrainerCallback("outputs/hf-run")])
    trainer.train()

and, from another terminal, ``tui-trainer attach outputs/hf-run`` (or start
it as ``tui-trainer run -- python train.py``).  The run starts when training
does (``on_train_begin``, through ``tui_trainer.init``) and ends with it.

| from attach | what the Trainer does |
|---|---|
| pause | waits in ``on_step_end`` (after the step's train record, on a logging step) |
| eval now | ``control.should_evaluate``; needs an ``eval_strategy`` other than "no" (else refused) |
| checkpoint now | ``control.should_save``: ``output_dir/checkpoint-N``, as the Trainer saves |
| stop (also Ctrl-C, SIGTERM) | ``control.should_training_stop``: it ends as after its last step |

An eval or checkpoint asked for while paused happens at once, and the run is
still paused after it, no step trained (an eval asked for after a checkpoint
at the same paused step waits for the resume).  Train losses, learning rates and grad norms come from
``on_log``, eval metrics from ``on_evaluate`` (``eval_loss`` as the val loss,
the other metrics kept beside it), checkpoints from ``on_save``.  Live
settings other than ``pause_at`` are refused: the Trainer owns its schedule.

Needs ``transformers`` and ``accelerate``: ``pip install 'tui-trainer[hf]'``.
"""
from __future__ import annotations

import numbers
import os
from typing import Any

try:
    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
except ImportError as e:  # an optional extra: say how to get it
    raise ImportError("tui_trainer.integrations.huggingface needs transformers: "
                      "pip install 'tui-trainer[hf]'") from e

from .api import init
from ..control.commands import Command
from ..records import RESERVED, Eval, TrainStep

#: ``on_log`` keys read into the train record's own fields.
OWN_KEYS = {"loss": "train_loss", "learning_rate": "lr", "grad_norm": "grad_norm",
            "num_input_tokens_seen": "tokens"}


class TuiTrainerCallback(TrainerCallback):
    """Log a ``transformers.Trainer`` run to ``path`` (default: a new
    ``outputs/run-...``) and let attach steer it (see the module docstring).

    ``config`` is recorded beside the training arguments; ``resume`` continues
    the run in ``path`` from the step the Trainer resumes at; other keywords
    go to ``tui_trainer.init``.  ``run``: an existing run to use instead (you
    ``finish`` it)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, config: dict[str, Any] | None = None,
                 resume: bool = False, run: Any = None, **init_kwargs: Any):
        self.path = path
        self.config = config
        self.resume = resume
        self.init_kwargs = init_kwargs
        self.run = run
        self._owns_run = run is None
        self._eval_asked = False
        self._save_asked = False
        self._released = False  # a request let the pause go...
        self._hold: str | None = None  # ...until this hook of the step has run ("log", "evaluate", "save")
        self._after_log = False  # steering of this step waits for its train record (on_log)

    # --- the run's life ---
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.run is None:
            config = {**_training_config(args, model), **(self.config or {})}
            self.run = init(self.path, config=config, resume=self.resume,
                            step=state.global_step if self.resume else None,
                            total_steps=state.max_steps, model=model, **self.init_kwargs)
        strategy = getattr(args, "eval_strategy", getattr(args, "evaluation_strategy", "no"))
        evaluates = str(getattr(strategy, "value", strategy)) != "no"
        self.run.set_callbacks(on_eval=(lambda step: self._ask("eval")) if evaluates else None,
                               on_checkpoint=lambda step: self._ask("save"))
        self.run.explain_refusal(Command.EVAL, None if evaluates else (
            "this Trainer never evaluates (eval_strategy='no'); give it eval_strategy='steps' and an eval_dataset"))
        self.run.explain_refusal(Command.SAMPLE, "a Hugging Face Trainer run takes no sample requests: "
                                                 "the callback has no tokenizer or generation settings")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._owns_run and self.run is not None:
            self.run.finish()

    # --- steering ---
    def _ask(self, what: str) -> None:
        """An eval or checkpoint request (on the training thread, inside
        ``between_steps``): the Trainer does it after the hook returns."""
        if what == "eval":
            self._eval_asked = True
        else:
            self._save_asked = True
        if self.run.paused:  # let the pause go until the Trainer has done it (see _steer)
            self.run.pause_quietly(False)
            self._released = True

    def _steer(self, state: Any, control: Any, can: tuple[str, ...]) -> None:
        """Steering at a point of the Trainer's step, where it can still
        evaluate or save (``can``): a pause waits here.  A request made while
        paused lets the pause go (no resume record: to the world it is still
        paused); the pause is taken up again after the last hook the Trainer
        calls in this step (``_hold``), so no step trains in between.  A
        request it cannot act on from here waits, paused, for the next step."""
        while True:
            self.run.between_steps(state.global_step)
            if self._eval_asked and "eval" in can:
                control.should_evaluate = True
            if self._save_asked and "save" in can:
                control.should_save = True
            if self.run.should_stop:
                control.should_training_stop = True
            if not self._released:
                return
            self._released = False
            self._hold = ("save" if control.should_save else "evaluate" if control.should_evaluate
                          else "log" if control.should_log else None)
            if self._hold is not None:
                return
            self.run.pause_quietly(True)  # nothing the Trainer will do in this step: stay paused here

    def _pause_again(self, hook: str, state: Any, control: Any, can: tuple[str, ...]) -> None:
        if self._hold == hook:
            self._hold = None
            if not self.run.should_stop:
                self.run.pause_quietly(True)
                self._steer(state, control, can)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if control.should_log and not self._after_log:
            self._after_log = True  # the Trainer logs this step next: steer once its record is written
        else:
            self._after_log = False
            self._steer(state, control, ("eval", "save"))
        return control

    # --- records ---
    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if not logs or "loss" not in logs or self.run is None or self.run.ended:
            return  # eval metrics come from on_evaluate; the end-of-training summary is no step
        own = {OWN_KEYS[k]: v for k, v in logs.items() if k in OWN_KEYS and _is_number(v)}
        extra = {k: v for k, v in logs.items()
                 if k not in OWN_KEYS and k not in RESERVED[TrainStep] and _is_number(v)}
        self.run.log(state.global_step, steer=False, **own, **extra)
        if self._after_log:
            self._after_log = False
            self._steer(state, control, ("eval", "save"))
        else:
            self._pause_again("log", state, control, ("eval", "save"))

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None,
                    **kwargs: Any) -> None:
        forced, self._eval_asked = self._eval_asked, False
        if self.run is None or self.run.ended or not metrics:
            return  # (an evaluate() after train() ended the run: its log is closed)
        extra = {k: v for k, v in metrics.items()
                 if k != "eval_loss" and k not in RESERVED[Eval] and _is_number(v)}
        val = metrics.get("eval_loss")
        self.run.log_eval(state.global_step, val_loss=val if _is_number(val) else None, forced=forced, **extra)
        self._pause_again("evaluate", state, control, ("save",))

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        manual, self._save_asked = self._save_asked, False
        if self.run is not None and not self.run.ended:
            path = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
            self.run.log_checkpoint(state.global_step, path, reason="manual" if manual else "scheduled")
            self._pause_again("save", state, control, ())


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _training_config(args: Any, model: Any) -> dict[str, Any]:
    """The training arguments worth showing, and the model's type."""
    try:
        config = dict(args.to_sanitized_dict())
    except Exception:  # an older or newer TrainingArguments
        config = {}
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type:
        config["model_type"] = model_type
    return config

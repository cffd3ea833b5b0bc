"""The built-in loop's live settings: what ``tui-trainer attach RUN --set
KEY=VALUE`` (or the dashboard's command line) may change while it trains.

| key | does, from the next step on |
|---|---|
| ``lr_scale`` | multiplies the whole schedule: lr(t) = lr_scale x schedule(t) |
| ``max_lr``, ``min_lr`` | the schedule's peak and floor |
| ``steps`` | the total; the LR goes on from where it is (``schedule.py``); at or below the current step, the run ends finished |
| ``eval_every``, ``checkpoint_every`` | the cadences |
| ``grad_clip``, ``weight_decay`` | clipping (0: off) and AdamW's decay of the matrices |
| ``pause_at`` | (the run's own) pause once that step has been trained; 0 clears it |

With ``--time``, a ``TimeBudget`` sink (``run/time_budget.py``, added by the
engine) sets ``steps`` itself once it knows the pace: a change with source ``time``.

Each is checked before it is applied (``settings.Settings``).  A change that
moves the next step's LR by more than 5% also writes an ``lr_jump`` record.
The changed values travel in every checkpoint (the config, ``live`` for
lr_scale, ``schedule`` for a change of steps), so a run stopped after a
change and resumed computes what the uninterrupted run would have.
"""
from __future__ import annotations

from typing import Any, Callable

from ..bounds import problem
from ..config import setting_problem

# The built-in loop's keys, in the order --help and status list them (the run adds pause_at).
LIVE_KEYS = ("lr_scale", "max_lr", "min_lr", "steps", "eval_every", "checkpoint_every", "grad_clip",
             "weight_decay")


def define_live_settings(t: Any, run: Any) -> None:
    """Define ``t``'s (an ``engine.Trainer``) live settings on its ``run``'s
    (a ``run.Run``) settings; ``steps`` is the run's plan too.  Each is
    checked as a flag would be (``config.setting_problem``: the range in
    ``bounds.BOUNDS``, and the rules between settings, such as warmup_steps
    <= steps), against the config as it is when the change is applied."""
    cfg, s = t.cfg, run.settings

    def set_cfg(name: str):
        return lambda v: setattr(cfg, name, v)

    def check_cfg(name: str):
        return lambda v: setting_problem(cfg, name, v)

    def set_steps(v: int) -> None:
        t.schedule.refit(t.step, cfg, cfg.steps, v, cfg.schedule)
        cfg.steps = v
        run.plan_steps(v)

    def watched(key: str, get: Callable[[], Any], apply: Callable[[Any], None]) -> Callable[[Any], None]:
        """``apply``, and an ``lr_jump`` record when it moves the next step's LR by more than 5%."""
        def go(v: Any) -> None:
            old, before = get(), t.lr_scale * t.schedule.lr(t.step, cfg)
            apply(v)
            if key == "steps" and v <= t.step:
                return  # the run ends: there is no next step
            after = t.lr_scale * t.schedule.lr(t.step, cfg)
            if (jump := t.schedule.live_change(t.step, key, old, v, before, after, cfg)) is not None:
                t.emit(jump)
        return go

    def set_ckpt_every(v: int) -> None:
        cfg.checkpoint_every = v
        t.ckpts.set_every(v)

    def set_weight_decay(v: float) -> None:
        cfg.weight_decay = v
        t.optimizer.param_groups[0]["weight_decay"] = v  # group 0 decays (optim.build_param_groups)

    def get_lr_scale() -> float:
        return t.lr_scale

    def get_max_lr() -> float:
        return cfg.max_lr

    def get_min_lr() -> float:
        return cfg.lr_floor

    def get_steps() -> int:
        return cfg.steps

    s.define("lr_scale", float, get_lr_scale, watched("lr_scale", get_lr_scale, t.set_lr_scale),
             check=lambda v: problem("lr_scale", v), help="multiply the whole LR schedule from the next step on")
    s.define("max_lr", float, get_max_lr, watched("max_lr", get_max_lr, set_cfg("max_lr")),
             check=check_cfg("max_lr"), help="the schedule's peak")
    s.define("min_lr", float, get_min_lr, watched("min_lr", get_min_lr, set_cfg("min_lr")),
             check=check_cfg("min_lr"), help="the schedule's floor")
    s.define("steps", int, get_steps, watched("steps", get_steps, set_steps), check=check_cfg("steps"),
             help="total steps (the LR goes on from where it is); at or below the current step the run ends, "
                  "finished")
    s.define("eval_every", int, lambda: cfg.eval_every, set_cfg("eval_every"), check=check_cfg("eval_every"),
             help="evaluate and sample every K steps")
    s.define("checkpoint_every", int, lambda: cfg.ckpt_every, set_ckpt_every, check=check_cfg("checkpoint_every"),
             help="checkpoint every N steps")
    s.define("grad_clip", float, lambda: cfg.grad_clip, set_cfg("grad_clip"), check=check_cfg("grad_clip"),
             help="clip the gradient norm to this (0: off)")
    s.define("weight_decay", float, lambda: cfg.weight_decay, set_weight_decay, check=check_cfg("weight_decay"),
             help="AdamW weight decay of matrices and embeddings")

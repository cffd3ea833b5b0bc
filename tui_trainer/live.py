"""The built-in loop's live settings: what ``tui-trainer attach RUN --set
KEY=VALUE`` (or the dashboard's command line) may change while it trains.

| key | does, from the next step on |
|---|---|
| ``lr_scale`` | multiplies the whole schedule: lr(t) = lr_scale x schedule(t) |
| ``max_lr``, ``min_lr`` | the schedule's peak and floor |
| ``steps`` | the total: the cosine reshapes from the current step; at or below it, the run ends as finished |
| ``eval_every``, ``checkpoint_every`` | the cadences |
| ``grad_clip``, ``weight_decay`` | clipping (0: off) and AdamW's decay of the matrices |
| ``pause_at`` | (the run's own) pause once that step has been trained; 0 clears it |

Each is checked before it is applied (``settings.Settings``).  The changed
values travel in every checkpoint (the config, and ``live`` for lr_scale), so
a run stopped after a change and resumed computes what the uninterrupted run
would have.
"""
from __future__ import annotations

from typing import Any

from .bounds import problem
from .config import setting_problem
from .settings import Settings

# The built-in loop's keys, in the order --help and status list them (the run adds pause_at).
LIVE_KEYS = ("lr_scale", "max_lr", "min_lr", "steps", "eval_every", "checkpoint_every", "grad_clip",
             "weight_decay")


def define_live_settings(t: Any, s: Settings) -> None:
    """Define ``t``'s (an ``engine.Trainer``) live settings on ``s``.  Each is
    checked as a flag would be (``config.setting_problem``: the range in
    ``bounds.BOUNDS``, and the rules between settings, such as warmup_steps
    <= steps), against the config as it is when the change is applied."""
    cfg = t.cfg

    def set_cfg(name: str):
        return lambda v: setattr(cfg, name, v)

    def check_cfg(name: str):
        return lambda v: setting_problem(cfg, name, v)

    def set_steps(v: int) -> None:
        cfg.steps = v
        t.run_handle.total_steps = v

    def set_ckpt_every(v: int) -> None:
        cfg.checkpoint_every = v
        t.ckpts.every = v

    def set_weight_decay(v: float) -> None:
        cfg.weight_decay = v
        t.optimizer.param_groups[0]["weight_decay"] = v  # group 0 decays (optim.build_param_groups)

    s.define("lr_scale", float, lambda: t.lr_scale, lambda v: setattr(t, "lr_scale", v),
             check=lambda v: problem("lr_scale", v), help="multiply the whole LR schedule from the next step on")
    s.define("max_lr", float, lambda: cfg.max_lr, set_cfg("max_lr"), check=check_cfg("max_lr"),
             help="the schedule's peak")
    s.define("min_lr", float, lambda: cfg.lr_floor, set_cfg("min_lr"), check=check_cfg("min_lr"),
             help="the schedule's floor")
    s.define("steps", int, lambda: cfg.steps, set_steps, check=check_cfg("steps"),
             help="total steps; at or below the current step the run ends, finished")
    s.define("eval_every", int, lambda: cfg.eval_every, set_cfg("eval_every"), check=check_cfg("eval_every"),
             help="evaluate and sample every K steps")
    s.define("checkpoint_every", int, lambda: cfg.ckpt_every, set_ckpt_every, check=check_cfg("checkpoint_every"),
             help="checkpoint every N steps")
    s.define("grad_clip", float, lambda: cfg.grad_clip, set_cfg("grad_clip"), check=check_cfg("grad_clip"),
             help="clip the gradient norm to this (0: off)")
    s.define("weight_decay", float, lambda: cfg.weight_decay, set_weight_decay, check=check_cfg("weight_decay"),
             help="AdamW weight decay of matrices and embeddings")

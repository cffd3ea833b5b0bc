"""``tui_trainer.init``: a run for a training loop of your own.

    import tui_trainer

    run = tui_trainer.init("outputs/my-run", config={"lr": 3e-4, "layers": 4},
                           on_eval=my_eval, on_checkpoint=my_save)   # callbacks optional
    for step in range(1, total + 1):
        ...                                            # your forward/backward/step
        run.log(step, train_loss=loss.item(), lr=lr)   # one train record; steering happens here
        if run.should_stop:                            # attach's stop, SIGTERM, Ctrl-C
            break
    run.finish()                                       # run_end (also on exceptions, with `with`)

What ``init`` returns is an ``own_loop.OwnLoop``: it has a ``run.Run``, the
very class the built-in trainer reports to: the folder (refused if it holds a
run, unless ``resume``), its lock, the JSONL log, the control socket
``tui-trainer attach`` steers over and the signal handling.

Under ``tui-trainer run -- python train.py`` (``launch.py``) the launcher
names a file in ``TUI_TRAINER_LAUNCH``: ``init`` sends the script's output to
``output.log`` in the run folder (the dashboard has the terminal now) and
writes the folder's path to that file, so the launcher knows what to attach to.
"""
from __future__ import annotations

import atexit
import dataclasses
import math
import os
import stat
import sys
import weakref
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError
from .own_loop import OwnLoop, exit_status
from .values import as_step, callbacks
from ..records import RunStart
from ..run.folder import discard_unstarted, holds_run
from ..run.run import CommandSync, Run
from ..terminal import printable

#: Set by ``tui-trainer run``: the file ``init`` writes the run folder's path to.
LAUNCH_ENV = "TUI_TRAINER_LAUNCH"
LAUNCH_DIR_PREFIX, LAUNCH_FILE = "tui-trainer-run-", "run_dir"  # the launcher's private folder and file in it
OUTPUT_NAME = "output.log"
FLOAT_MAX_INT = int(sys.float_info.max)


def init(path: str | os.PathLike[str] | None = None, config: Any = None, *,
         on_eval: Callable[[int], Any] | None = None, on_checkpoint: Callable[[int], Any] | None = None,
         on_sample: Callable[..., str] | None = None, resume: bool = False, step: int | None = None,
         total_steps: int = 0, name: str | None = None, model: Any = None, keep: int = 2,
         sync: CommandSync | bool | None = None, signals: bool = True, quiet: bool = False,
         batch_shape: tuple[int, int] | None = None, tokens_per_step: int | None = None) -> OwnLoop:
    """Start a run in ``path`` (default: a new ``outputs/run-YYYYmmdd-HHMMSS``)
    and return it, ready for ``run.log``.

    - ``config``: the settings to record (a dict, a dataclass or an argparse
      namespace), shown beside the run; ``run.config`` is a copy.
    - ``on_eval``, ``on_checkpoint``, ``on_sample``: what the loop does when
      attach asks it to (see ``OwnLoop.set_callbacks``); a request with none is refused.
    - ``resume``: continue the run in ``path`` (appending to its log) if it
      holds one; ``step`` is where the loop continues from (default: the
      last checkpoint it recorded, ``run.resumed_from``; records after it are
      superseded).  Without ``resume`` a folder holding a run is refused.
    - ``total_steps``: the planned number of steps (progress and ETA).
    - ``model``: counted for the parameter total and its device; with a
      batch shape it also gives the FLOPs per token for MFU.
    - ``batch_shape``: ``(batch_size, context_length)`` of one optimizer step,
      and ``tokens_per_step``: the tokens of one optimizer step when that is
      not batch x context (gradient accumulation, several processes).  With
      either, ``log`` counts the tokens itself (``step x tokens_per_step``)
      when not given ``tokens=``, so the dashboard shows tokens/s (and MFU,
      with ``model``); steps/s and the ETA (with ``total_steps``) need neither.
    - ``keep``: older ``save_checkpoint`` files kept besides the newest.
    - ``sync``: data-parallel agreement (``distributed.Dist``); by default a
      process group torch.distributed has started is used: rank 0 writes and
      serves, every rank gets the same pauses and stops at the same step.
      False: none.
    - ``signals``: SIGINT/SIGTERM stop after the step (``run.should_stop``),
      a second SIGINT raises KeyboardInterrupt; SIGHUP does not stop it.
    - ``quiet``: no line on stderr saying where the run is.

    Refusals (a folder holding a run, a run still going there) raise
    ``errors.UserError`` with the reason.
    """
    callbacks(on_eval, on_checkpoint, on_sample)  # junk refused before any folder is made
    if step is not None and (step := as_step(step)) < 0:  # an integer, not a bool or 2.5: checked before too
        raise ValueError(f"step is the step the loop continues from (0 or more), not {step}")
    if sync is None:
        sync = torch_process_group()
    sync = sync or None
    main = sync is None or sync.is_main
    folder = Path(path) if path is not None else None
    if main and folder is not None and holds_run(folder) and not resume:
        raise UserError(f"{folder} already holds a run; pass a new folder, or resume=True to continue it")
    kw: dict[str, Any] = dict(name=name, sync=sync, keep=keep)
    reopen = main and folder is not None and resume and holds_run(folder)
    if not main:
        run = Run.unlocked(None, **kw)
    elif reopen:
        run = Run.reopen(folder, **kw)
    else:
        run = Run.create(None if folder is None else os.fspath(folder), **kw)
    made = run.folder if main and not reopen else None
    own = OwnLoop(run)
    try:
        st = own.loop_state
        st.config = plain_config(config)
        start = resume_from(own, step) if run.folder is not None and resume and holds_run(run.folder) else None
        own.set_callbacks(on_eval=on_eval, on_checkpoint=on_checkpoint, on_sample=on_sample)
        run.plan_steps(total_steps)
        run.open(signals=signals)
        run.reached(start or 0)
        n_params, device = describe_model(model)
        st.tokens_per_step = step_tokens(batch_shape, tokens_per_step)
        fpt, peak = model_flops(model, batch_shape) if st.tokens_per_step else (None, None)
        run.emit(RunStart(step=run.step, run_name=run.name, config=dict(st.config), n_params=n_params,
                          device=device + (sync.describe() if hasattr(sync, "describe") else ""),
                          total_steps=run.total_steps, resumed=start is not None, resumed_from=st.resumed_from,
                          flops_per_token=fpt, peak_flops=peak, tokens_per_step=st.tokens_per_step))
        st.began = True
    except BaseException:
        run.close()
        if made is not None:  # a bad argument: no half-made run folder is left (a run's own is kept)
            discard_unstarted(made)
        raise
    atexit.register(_finish_at_exit, weakref.ref(own))
    _note_exit_status()
    if main and run.folder is not None:
        launched = os.environ.pop(LAUNCH_ENV, None)
        if launched and (where := launch_file(launched)) is not None:
            announce(run.folder, where)
        elif not quiet:
            where = printable(run.folder, newlines=False)
            print(f"tui-trainer: run in {where}; watch and steer it with: tui-trainer attach {where}",
                  file=sys.stderr, flush=True)
    return own


def plain_config(config: Any) -> dict[str, Any]:
    """``config`` as a dict a JSON line can hold: values that are not JSON become their str()."""
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    elif not isinstance(config, dict) and hasattr(config, "__dict__"):
        config = vars(config)  # argparse.Namespace, a simple object
    if not isinstance(config, dict):
        raise TypeError(f"config is a dict (or a dataclass, or a namespace), not {type(config).__name__}")
    return {str(k): _plain(v) for k, v in config.items()}


def _plain(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > FLOAT_MAX_INT:
        return f"an integer of {v.bit_length()} bits"  # beyond float range: a line readers would skip
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return str(v)


def describe_model(model: Any) -> tuple[int, str]:
    if model is None:
        return 0, ""
    params = list(model.parameters())
    return sum(p.numel() for p in params), str(params[0].device) if params else ""


def step_tokens(batch_shape: Any, tokens_per_step: Any) -> int | None:
    """The tokens of one optimizer step: ``tokens_per_step``, else batch x context; None: unknown."""
    if tokens_per_step is not None:
        n = int(tokens_per_step)
    elif batch_shape is not None:
        if len(batch_shape) != 2:
            raise ValueError(f"batch_shape is (batch_size, context_length), not {batch_shape!r}")
        n = int(batch_shape[0]) * int(batch_shape[1])
    else:
        return None
    if n <= 0:
        raise ValueError(f"tokens per step must be positive, not {n}")
    return n


def model_flops(model: Any, batch_shape: Any) -> tuple[float | None, float | None]:
    """(training FLOPs per token, the device's peak FLOP/s) for MFU, or Nones:
    6N plus attention's 12 x layers x width x context when the model's config
    names ``n_layer`` and ``n_embd`` (``hardware.flops_per_token``)."""
    n_params, device = describe_model(model)
    if not n_params:
        return None, None
    from ..train.hardware import peak_flops

    fpt = 6.0 * n_params
    cfg = getattr(model, "config", None)
    layers, width = getattr(cfg, "n_layer", None), getattr(cfg, "n_embd", None)
    if isinstance(layers, int) and isinstance(width, int) and batch_shape is not None:
        fpt += 12.0 * layers * width * int(batch_shape[1])
    dtype = str(next(iter(model.parameters())).dtype)
    kind = "bf16" if "bfloat16" in dtype else "fp16" if "float16" in dtype else "fp32"
    try:
        peak = peak_flops(device, kind)
    except (RuntimeError, ValueError, OSError):
        peak = None
    return fpt, peak


def resume_from(run: OwnLoop, step: int | None) -> int:
    """Where a resumed run continues: ``step``, or its last checkpoint's step
    (0 with none).  Sets what the loop needs from the earlier sessions:
    ``resumed_from`` (the checkpoint at that step), the wall time so far, the
    best val loss ``best.pt`` was chosen by."""
    from ..logs import effective_records, read_records
    from ..run.log_writer import LOG_NAME

    log = run.folder / LOG_NAME  # type: ignore[operator]
    records = effective_records(read_records(log)) if log.exists() else []
    ckpts = [r for r in records if r.get("type") == "checkpoint" and isinstance(r.get("step"), int)]
    st = run.loop_state
    start = step if step is not None else ckpts[-1]["step"] if ckpts else 0
    ckpts = [r for r in ckpts if r["step"] <= start]
    at = [r for r in ckpts if r["step"] == start and isinstance(r.get("path"), str)]
    if at and Path(at[-1]["path"]).exists():
        st.resumed_from = at[-1]["path"]
    times = [r["elapsed_s"] for r in records if isinstance(r.get("elapsed_s"), (int, float))
             and isinstance(r.get("step"), int) and r["step"] <= start]
    st.elapsed_before = max(times, default=0.0)
    vals = [r["val_loss"] for r in ckpts if isinstance(r.get("val_loss"), (int, float))]
    run.checkpoints.restore(start, min(vals, default=math.inf))
    return start


def torch_process_group() -> Any:
    """A ``distributed.Dist`` for the process group torch.distributed has
    started (torchrun, accelerate), or None.  torch is not imported for it."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return None
    import torch

    from ..train.distributed import Dist

    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), backend=backend, device=device)


def launch_file(value: str) -> Path | None:
    """The file ``tui-trainer run`` named in ``TUI_TRAINER_LAUNCH`` for this
    script, or None.  The variable is untrusted (inherited by a later script,
    left exported, set by anyone): only a ``run_dir`` not there yet, in a
    folder of this user's that the launcher made (``tui-trainer-run-*``,
    owner-only), is one.  Anything else is ignored: announcing to it would
    replace a file and send the script's output away from the terminal."""
    where = Path(value)
    if where.name != LAUNCH_FILE or not where.parent.name.startswith(LAUNCH_DIR_PREFIX):
        return None
    try:
        st = os.lstat(where.parent)
        if os.path.lexists(where):
            return None  # another script announced already: the launcher attached to that run
    except (OSError, ValueError):
        return None
    mine = getattr(os, "getuid", lambda: st.st_uid)() == st.st_uid
    return where if stat.S_ISDIR(st.st_mode) and mine and not st.st_mode & 0o077 else None


def announce(folder: Path, where: Path) -> None:
    """Under ``tui-trainer run``: from now on this process writes its output
    to the run folder (the dashboard has the terminal), and the launcher is
    told which folder to attach to."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    fd = os.open(folder / OUTPUT_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)
    tmp = where.with_name(where.name + ".tmp")
    tmp.write_text(os.fspath(folder.resolve()) + "\n", encoding="utf-8")
    os.replace(tmp, where)


#: The status the script asked to exit with (``sys.exit(N)`` on the main
#: thread), which atexit handlers are not told: [status] once it was called.
_EXIT_STATUS: list[Any] = []


def _note_exit_status() -> None:
    """Wrap ``sys.exit`` (once) so ``_finish_at_exit`` knows the status the
    script leaves with: ``sys.exit(3)`` must end the run "failed"."""
    if getattr(sys.exit, "_notes_status", False):
        return
    original = sys.exit

    def exit(status: Any = None) -> None:
        import threading

        if threading.current_thread() is threading.main_thread():  # elsewhere it ends a thread only
            _EXIT_STATUS[:] = [status]
        original(status)

    exit._notes_status = True  # type: ignore[attr-defined]
    exit.__doc__ = original.__doc__
    sys.exit = exit


def _finish_at_exit(ref: "weakref.ref[OwnLoop]") -> None:
    """A script that ends without ``finish`` still gets its ``run_end``:
    "failed" (or "killed") when an uncaught exception ended it or it exited
    with a status other than 0.  A forked child (``run.Run.detach``) writes none."""
    run = ref()
    if run is None or run.detached or not run.loop_state.began or run.loop_state.end is not None:
        return
    error = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    if isinstance(error, KeyboardInterrupt):
        run.finish("killed", "interrupted: no final checkpoint")
    elif error is not None and not isinstance(error, SystemExit):
        run.finish("failed", f"{type(error).__name__}: {error}")
    else:
        run.finish(*exit_status(_EXIT_STATUS[0] if _EXIT_STATUS else None))


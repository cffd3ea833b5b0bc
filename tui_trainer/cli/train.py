"""``tui-trainer train``: the settings from the flags and TOML, the run and its
loop put together, headless or under the dashboard, and the lines printed
once it has ended.  ``cli.cmd_train`` chooses which of the two ways."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .parser import EXIT_FAILED, EXIT_OK
from ..config import FIELDS, TrainConfig, UserError, load_toml, make_config


def config_values_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Only the settings the user gave (TOML, then flags), no defaults."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(load_toml(args.config))
    for name in FIELDS:
        if hasattr(args, name):
            values[name] = getattr(args, name)
    return values


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A new run's settings.  A ``--tokenizer`` without ``--data`` is refused:
    the embedded corpus is read as bytes, so it would be silently ignored."""
    cfg = make_config(config_values_from_args(args))
    if cfg.data is None and cfg.tokenizer != "bytes":
        raise UserError(f"--tokenizer {cfg.tokenizer} needs --data: the embedded corpus trains on bytes; "
                        f"pass --data FILE with --tokenizer, or leave --tokenizer out")
    return cfg


def plan_fork_args(args: argparse.Namespace, check_out: bool = True) -> Any:
    """``--fork``: the ``fork.ForkPlan`` (reads the parent only)."""
    from ..run.fork import plan_from_flags

    return plan_from_flags(args.fork, config_values_from_args(args), resume=args.resume, check_out=check_out)


def train_headless(args: argparse.Namespace) -> int:
    """Train without the dashboard: the folder, its lock, log, control socket and
    signals are the run's (``run.Run``); the model, data and steps are the loop's
    (``engine.Trainer`` over ``parts.build_parts``).  Under torchrun every
    rank trains; rank 0 alone has a folder and writes."""
    from ..train.torch_loader import load_torch

    load_torch()
    from ..train import distributed
    from .alerts import alert_sink
    from ..run.console import ConsoleSink
    from ..train.engine import Trainer
    from ..train.hardware import configure
    from ..train.parts import build_parts
    from ..run.resume import find_checkpoint, plan_resume, set_aside_superseded
    from ..run.run import Run
    from ..run.folder import RunLock, check_new_run_dir, create_run_dir, discard_unstarted
    from ..run.log_writer import LOG_NAME
    from ..run.signals import TerminalSink

    world = distributed.from_env()
    main = world.is_main
    lock: RunLock | None = None
    run: Run | None = None
    dist = None
    made: Path | None = None  # a folder this start created: removed if training never begins
    alerts = None
    fork = None
    try:
        plan = None
        if args.fork:
            fork = plan_fork_args(args, check_out=main)  # reads only
            cfg = fork.cfg
            if main:
                check_new_run_dir(cfg.out)
        elif args.resume:
            if main:  # lock first: a run still going in that folder must not get a second writer
                lock = RunLock(find_checkpoint(args.resume)[0]).acquire()
            plan = plan_resume(args.resume, config_values_from_args(args))  # reads only
            cfg = plan.cfg
        else:
            cfg = config_from_args(args)
            if main:
                check_new_run_dir(cfg.out)
        hw = configure(cfg)
        dist = distributed.setup(hw)
        # All fallible preparation happens here, before a new run's folder exists.
        parts = build_parts(cfg, hw, dist)
        folder = None
        if main:
            existed = plan is not None or (cfg.out is not None and Path(cfg.out).exists())
            folder = plan.run_dir if plan is not None else create_run_dir(cfg.out, cfg.name)
            made = None if existed else folder
            lock = lock or RunLock(folder).acquire()
        if fork is not None and main:
            fork.settle(folder)  # the parent's checkpoint, linked into the fork's folder
        run = Run.locked(folder, lock, sync=dist, interactive=False,
                         checkpoint_every=cfg.ckpt_every, keep=cfg.keep)
        lock = None  # the run holds it now
        trainer = Trainer(cfg, run, parts=parts, resume=plan or fork)
        if plan is not None and main:
            set_aside_superseded(plan)
        run.open()  # log (appended to on resume), control socket, signals
        if main:
            run.add_sink(TerminalSink(ConsoleSink(cfg.log_every)))
            alerts = alert_sink(args, run.folder)
            if alerts is not None:
                run.add_sink(alerts)
        made = None  # training begins: the folder is the run's from here on
        end = trainer.run()
    finally:
        if run is not None:
            run.close()
        if lock is not None:
            lock.release()
        if dist is not None:
            dist.close()
        if made is not None:
            if fork is not None:
                fork.unsettle()
            discard_unstarted(made)
        if alerts is not None:
            alerts.close()  # the last --on-event command: waited for at most its timeout
    if not main:
        print(f"rank {dist.rank}: run {end.status} at step {end.step}"
              + (f" | error: {end.error}" if end.error else ""), file=sys.stderr, flush=True)
    else:
        _say_how_it_ended(end, trainer, run, log=run.folder / LOG_NAME, headless=True)
    return EXIT_OK if end is None or end.status in ("finished", "stopped") else EXIT_FAILED


def _say_how_it_ended(end: Any, trainer: Any, run: Any, *, log: Path, headless: bool) -> None:
    """After the dashboard closes (or a headless run ends): where the run is,
    how it ended and how to go on.  A terminal that is gone is not an error."""
    from ..fmt import fmt_loss
    from ..run.resume import how_to_go_on

    lines = []
    if not headless and end is not None:
        best = trainer.best_val
        best_txt = f" | best val {fmt_loss(best)}" if best == best and best != float("inf") else ""
        at = getattr(trainer, "last_val_step", -1)  # the step of the last eval, which the val is from
        last = "no eval yet" if end.val_loss is None or at < 0 else f"val {fmt_loss(end.val_loss)} @ {at:,}"
        lines.append(f"run {end.status} at step {end.step} of {trainer.cfg.steps} | {last}{best_txt}")
        lines.append(f"folder: {run.folder}")
    lines.append(f"log: {log}")
    lines += how_to_go_on(end, run.folder)
    try:
        print("\n".join(lines), flush=True)
        if end is not None and end.status == "failed" and end.error:
            print(f"error: {end.error}", file=sys.stderr, flush=True)
    except OSError:
        pass  # the terminal is gone (SIGHUP); the log is what matters


LEAVE_GRACE_S = 5.0  # after an SSH drop: how long the UI may take to close once the run has ended



def train_live(args: argparse.Namespace) -> int:
    """Train with the dashboard.  The window comes up at once and says what it
    is doing while the slow part (importing torch, loading the data, building
    the model) runs in the training thread; bad input found there closes it
    and is printed as one line, with no run folder left behind."""
    import threading

    from .alerts import alert_sink
    from ..run.resume import find_checkpoint
    from ..run.run import Run
    from ..run.folder import RunLock, check_new_run_dir
    from ..run.log_writer import LOG_NAME
    from ..ui.sources import TrainerSource
    from ..ui.app import run_dashboard

    lock: RunLock | None = None
    if args.fork:
        pass  # planned in prepare (it reads the checkpoint, with torch)
    elif args.resume:  # lock first: a run still going in that folder must not get a second writer
        lock = RunLock(find_checkpoint(args.resume)[0]).acquire()
    else:
        cfg = config_from_args(args)
        check_new_run_dir(cfg.out)
    run = Run.unlocked(interactive=True)  # its folder comes once the loop's parts are built
    built: dict[str, Any] = {}
    alerts = alert_sink(args, None, deferred=True)  # Textual owns the terminal: the app writes them

    def prepare(say: Any, cancelled: Any) -> Any:
        say("loading PyTorch…")
        from ..train.torch_loader import load_torch

        load_torch()
        from ..train.engine import Trainer
        from ..train.hardware import configure
        from ..train.parts import build_parts
        from ..run.resume import plan_resume, set_aside_superseded
        from ..run.folder import create_run_dir

        fork = plan_fork_args(args) if args.fork else None
        plan = plan_resume(args.resume, config_values_from_args(args)) if args.resume and not fork else None
        c = plan.cfg if plan is not None else fork.cfg if fork is not None else cfg
        say("loading the data and building the model…")
        parts = build_parts(c, configure(c), say=say)  # tokenizing a corpus: its progress bar
        if cancelled():
            raise KeyboardInterrupt  # closed while loading: nothing was written
        folder = plan.run_dir if plan is not None else create_run_dir(c.out, c.name)
        if fork is not None:
            fork.settle(folder)
        run.take_folder(folder, lock or RunLock(folder).acquire(), checkpoint_every=c.ckpt_every, keep=c.keep)
        if alerts is not None:
            alerts.run_dir = folder
            run.add_sink(alerts)
        trainer = built["trainer"] = Trainer(c, run, parts=parts, resume=plan or fork)
        if plan is not None:
            set_aside_superseded(plan)
        run.open(signals=False)  # log, control socket (signals: installed below, on the main thread)
        return trainer

    source = TrainerSource(run=run, prepare=prepare)  # the dashboard steers through the run cli holds
    source.alert_out = alerts.out if alerts is not None else None
    try:
        run.install_signals()
        run.signals.on_hangup(lambda: _leave_after_end(lambda: built.get("trainer"), run))
        try:
            end = run_dashboard(mouse=args.mouse, signals=run.signals, source=source)
        except KeyboardInterrupt:
            if source.error is None:
                raise
            return EXIT_FAILED  # closed while loading: nothing to say
        except Exception:
            if not run.hung_up.is_set() or source.error is not None:
                raise
            end = None  # the terminal went away under the dashboard
        if run.hung_up.is_set():
            # SSH dropped: the trainer thread carries on headless; wait for it.
            while not (source.ready.is_set() and source.done) and threading.active_count() > 1:
                time.sleep(0.5)
            end = source.end or end
    finally:
        run.close()
        if lock is not None and run.folder is None:
            lock.release()
        if alerts is not None:
            alerts.out.undefer()  # what the closed window had not written yet
            alerts.close()
    trainer = built.get("trainer")
    if trainer is not None:
        _say_how_it_ended(end, trainer, run, log=run.folder / LOG_NAME, headless=False)
    return EXIT_OK if end is None or end.status in ("finished", "stopped") else EXIT_FAILED


def _leave_after_end(trainer_of: Any, run: Any, grace: float = LEAVE_GRACE_S) -> None:
    """SSH dropped under the dashboard: the run trains on headless.  Once it
    has ended, the process leaves within ``grace`` seconds even if the UI's
    shutdown is stuck writing to the dead terminal (Textual's writer thread
    can block forever there), releasing the lock and the socket first."""
    import os
    import threading

    def watch() -> None:
        while trainer_of() is None:  # the drop came while it was still loading
            time.sleep(0.5)
        trainer = trainer_of()
        trainer.done.wait()
        time.sleep(grace)  # the ordinary way out has had this long
        run.close()
        end = trainer.end
        os._exit(EXIT_OK if end is not None and end.status in ("finished", "stopped") else EXIT_FAILED)

    threading.Thread(target=watch, name="leave-after-end", daemon=True).start()


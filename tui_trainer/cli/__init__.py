"""The ``tui-trainer`` command.

    tui-trainer                      train the demo on the embedded corpus
    tui-trainer train [flags]        train (dashboard, or --headless)
    tui-trainer view PATH... [--follow]
    tui-trainer view [DIR]           browse a folder of runs (default ./outputs)
    tui-trainer view --snap RUN...   the plots printed once as text (CI logs, ssh without a tty)
    tui-trainer export RUN... -o F   records as CSV, curves as PNG/SVG
    tui-trainer attach RUN_DIR       dashboard on a running (headless) run; steer it
    tui-trainer ls [DIR] [--json]    the runs browser's table, printed once (no terminal needed)
    tui-trainer status RUN [--json]  one run's figures; the exit status says how it stands
    tui-trainer mcp [DIR]            an MCP server (stdio): a coding agent reads and steers the runs
    torchrun --nproc_per_node=N -m tui_trainer train --headless ...   data-parallel

Every train flag is generated from ``TrainConfig``'s fields, so a flag, its
TOML key and the config field always share one name.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .parser import _Parser, add_mouse_flag, add_train_flags, build_parser  # noqa: F401 (cli's names)
from ..config import FIELDS, TrainConfig, UserError, load_toml, make_config
from ..terminal import printable, printable_streams, quiet_stdout

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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
    return make_config(config_values_from_args(args))


def plan_fork_args(args: argparse.Namespace, check_out: bool = True) -> Any:
    """``--fork``: the ``fork.ForkPlan`` (reads the parent only)."""
    from ..run.fork import plan_from_flags

    return plan_from_flags(args.fork, config_values_from_args(args), resume=args.resume, check_out=check_out)


def cmd_train(args: argparse.Namespace) -> int:
    """Train: the folder, its lock, log, control socket and signals are the
    run's (``run.Run``); the model, data and steps are the loop's
    (``engine.Trainer`` over ``parts.build_parts``).  Under torchrun every
    rank trains; rank 0 alone has a folder and writes."""
    import os

    several = os.environ.get("WORLD_SIZE", "1") not in ("", "1")  # torchrun: always headless
    if not (args.headless or several or not (sys.stdout.isatty() and sys.stdin.isatty())):
        return _train_live(args)  # the dashboard, up before torch is imported
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


def _train_live(args: argparse.Namespace) -> int:
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


def cmd_attach(args: argparse.Namespace) -> int:
    """Follow a run's log in the dashboard and steer it over its control
    channel; quitting leaves the run going."""
    import json

    from ..control.channel import request
    from ..control.remote import check_attachable, need_terminal, request_sample, send_settings

    if args.send:
        answer = request(args.run_dir, args.send)  # ControlError: one line, exit 2
        print(json.dumps(answer))
        return EXIT_OK if answer.get("ok") else EXIT_FAILED
    if args.settings:
        return send_settings(args.run_dir, args.settings)
    if args.sample is not None:
        return request_sample(args.run_dir, args.sample, tokens=args.tokens, temperature=args.temperature,
                              top_k=args.top_k)
    folder = Path(args.run_dir)
    check_attachable(folder)
    need_terminal("attach", f"tui-trainer status {folder}, tui-trainer view --snap {folder}, "
                            f"tui-trainer attach {folder} --send status")
    from ..ui.attach import run_attach

    return run_attach(folder, mouse=args.mouse, alerts=follow_alerts(args, folder))


def cmd_view(args: argparse.Namespace) -> int:
    from ..control.remote import need_terminal

    if args.snap or args.size:
        if not args.snap:
            raise UserError("--size is for --snap; add --snap (tui-trainer view --snap RUN --size 100x30)")
        from .snapshot import cmd_snap

        return cmd_snap(args)
    from ..ui.viewer import run_viewer

    folder = runs_folder(args.paths)
    if folder is not None:
        need_terminal("view", f"tui-trainer ls {folder}, tui-trainer view --snap {folder}/RUN, "
                              f"tui-trainer status {folder}/RUN")
        from ..ui.browser import run_browser

        return run_browser(folder, mouse=args.mouse)
    # A bad path is named first; then, with no terminal, one line instead of a screen.
    return run_viewer([Path(p) for p in args.paths], follow=args.follow, mouse=args.mouse,
                      alerts=follow_alerts(args, Path(args.paths[0]) if args.paths else None),
                      before_screen=lambda: need_terminal(
                          "view", f"tui-trainer view --snap {' '.join(args.paths)} (the plots as text), "
                                  f"tui-trainer status RUN, tui-trainer export {' '.join(args.paths)} -o curves.csv"))


def follow_alerts(args: argparse.Namespace, run: Path | None) -> Any:
    """``--notify``/``--on-event`` on attach or view: one followed run's alerts (``alerts``)."""
    from .alerts import alert_sink

    if not (args.notify or args.notify_best or args.on_event):
        return None
    if args.command == "view" and not (args.follow and len(args.paths) == 1):
        raise UserError("--notify and --on-event watch one live run: tui-trainer view --follow RUN --notify")
    return alert_sink(args, run, deferred=True)


def runs_folder(paths: list[str]) -> Path | None:
    """The folder of runs ``view`` browses: ./outputs when no path is given, or
    the one path given when it is a folder of run folders (no log of its own)."""
    from ..run.folder import DEFAULT_ROOT, runs_in
    from ..run.log_writer import LOG_NAME

    if not paths:
        if not DEFAULT_ROOT.is_dir():
            raise UserError(f"no ./{DEFAULT_ROOT} here to browse; pass a run folder, a losses.jsonl or a "
                            "folder of runs (tui-trainer view PATH)")
        return DEFAULT_ROOT
    p = Path(paths[0])
    if len(paths) == 1 and p.is_dir() and not (p / LOG_NAME).exists() and runs_in(p, limit=1):
        return p
    return None


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    line = export([Path(p) for p in args.paths], args.output, records=args.records)
    print(line, file=sys.stderr if args.output == "-" else sys.stdout)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    # Everything printed passes terminal.printable: no name, path, prompt or
    # sample can write a control character to the terminal.
    with printable_streams():
        return _main(argv)


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from ..train.threads import apply_wait_policy
    apply_wait_policy(argv)  # before anything loads torch: OpenMP reads its environment once
    parser = build_parser()
    if not argv:
        argv = ["train"]  # the demo: embedded corpus, default config
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed as one line
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from ..run.checkpoint import CheckpointError

    try:
        if args.command == "train":
            from ..run.signals import StartupSignals

            with StartupSignals():  # a stop before the run's own handling leaves at once
                return cmd_train(args)
        if args.command == "view":
            return cmd_view(args)
        if args.command == "attach":
            return cmd_attach(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command in ("ls", "status"):
            from .listing import cmd_ls, cmd_status

            return cmd_ls(args) if args.command == "ls" else cmd_status(args)
        if args.command == "mcp":
            from .mcp_server import cmd_mcp

            return cmd_mcp(args)
        if args.command == "run":
            from ..loops.launch import launch

            return launch(args.script, mouse=args.mouse)
    except UserError as e:  # a bad checkpoint: the flags were right, the file is not (exit 1)
        print(f"error: {printable(e, newlines=False)}", file=sys.stderr)
        return EXIT_FAILED if isinstance(e, CheckpointError) else EXIT_USAGE
    except BrokenPipeError:  # `| head` has what it wanted: leave quietly, as cat does
        quiet_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a tool a closed pipe stopped
    except OSError as e:  # a disk, a folder or a device refused: one line, not a traceback
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {printable(f'{e.strerror or e}{where}', newlines=False)}; check that path, its "
              "permissions and free space", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as e:  # a second Ctrl-C, or a stop while starting (signals.StopBeforeStart)
        print(e if getattr(e, "status", None) else "interrupted", file=sys.stderr)
        return getattr(e, "status", 130)
    return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())

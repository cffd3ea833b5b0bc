"""The ``tui-trainer`` command.

    tui-trainer                      train the demo on the embedded corpus
    tui-trainer train [flags]        train (dashboard, or --headless)
    tui-trainer view PATH... [--follow]
    tui-trainer attach RUN_DIR       dashboard on a running (headless) run; steer it
    torchrun --nproc_per_node=N -m tui_trainer train --headless ...   data-parallel

Every train flag is generated from ``TrainConfig``'s fields, so a flag, its
TOML key and the config field always share one name.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

from .config import FIELDS, TrainConfig, UserError, load_toml, make_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``error:`` line naming the fix."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message}; see {self.prog} --help\n")


def _field_type(f: dataclasses.Field) -> Any:
    ann = str(f.type)
    if "int" in ann:
        return int
    if "float" in ann:
        return float
    return str


def add_train_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training settings (also valid as keys of --config FILE.toml)")
    for name, f in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        if "bool" in str(f.type):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=f"{help_} (default: {f.default})")
        else:
            g.add_argument(flag, type=_field_type(f), default=argparse.SUPPRESS, metavar=name.upper(),
                           help=f"{help_} (default: {f.default})" if f.default is not None else help_)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tui-trainer", description="Train a small GPT and watch and steer it from the terminal.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    t = sub.add_parser("train", help="train a model (opens the dashboard unless --headless)")
    t.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file; flags override it")
    t.add_argument("--headless", action="store_true", help="no dashboard: print plain log lines")
    t.add_argument("--resume", "--resume-from", dest="resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or from one of its ckpt-step*.pt files) from its latest checkpoint")
    t.add_argument("--no-mouse", action="store_true", help="dashboard: leave the mouse to the terminal (copy/paste)")
    add_train_flags(t)
    v = sub.add_parser("view", help="replay, follow or compare run logs")
    v.add_argument("paths", nargs="+", metavar="PATH", help="a losses.jsonl or a run folder holding one")
    v.add_argument("--follow", "-f", action="store_true", help="keep reading as another process appends")
    v.add_argument("--no-mouse", action="store_true", help="leave the mouse to the terminal (copy/paste)")
    a = sub.add_parser("attach", help="open the dashboard on a running (e.g. headless) run and steer it")
    a.add_argument("run_dir", metavar="RUN_DIR", help="the folder the run is writing (outputs/run-...)")
    a.add_argument("--send", metavar="CMD", choices=("pause", "resume", "toggle_pause", "eval", "checkpoint",
                                                     "stop", "status"),
                   help="no UI: send one command (pause, resume, eval, checkpoint, stop, status), print the answer")
    a.add_argument("--no-mouse", action="store_true", help="leave the mouse to the terminal (copy/paste)")
    return p


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


def cmd_train(args: argparse.Namespace) -> int:
    import threading

    from .console import ConsoleSink
    from .control import start_for_run
    from .distributed import from_env, run_worker
    from .engine import Trainer
    from .resume import RunLock, apply_resume, find_checkpoint, plan_resume, set_aside_superseded
    from .rundir import check_new_run_dir, create_run_dir
    from .runlog import LOG_NAME, JsonlSink
    from .signals import RunSignals, TerminalSink

    world = from_env()
    if not world.is_main:
        return run_worker(args)  # torchrun rank > 0: trains in step, writes nothing
    headless = args.headless or world.enabled or not (sys.stdout.isatty() and sys.stdin.isatty())
    lock = None
    try:
        if args.resume:
            # Lock first: a run still going in that folder must not get a second writer.
            lock = RunLock(find_checkpoint(args.resume)[0]).acquire()
            plan = plan_resume(args.resume, config_values_from_args(args))
            cfg = plan.cfg
            trainer = Trainer(cfg, interactive=not headless)
            apply_resume(plan, trainer)
            run_dir = plan.run_dir
            set_aside_superseded(plan)
        else:
            cfg = config_from_args(args)
            check_new_run_dir(cfg.out)
            # All fallible preparation happens here, before a run folder exists.
            trainer = Trainer(cfg, interactive=not headless)
            run_dir = create_run_dir(cfg.out, cfg.name)
            lock = RunLock(run_dir).acquire()
        trainer.run_dir, trainer.run_name = run_dir, run_dir.name
        log = JsonlSink(run_dir / LOG_NAME)  # appends on resume; never rewrites
        trainer.sinks.append(log)
        control = start_for_run(trainer, run_dir)  # tui-trainer attach steers the run through it
        try:
            with RunSignals(trainer) as sig:
                if headless:
                    trainer.sinks.append(TerminalSink(ConsoleSink(cfg.log_every)))
                    end = trainer.run()
                else:
                    from .ui.app import run_dashboard
                    try:
                        end = run_dashboard(trainer, mouse=not args.no_mouse)
                    except Exception:
                        if not sig.hung_up.is_set():
                            raise
                        end = None  # the terminal went away under the dashboard
                    if sig.hung_up.is_set():
                        # SSH dropped: the trainer thread carries on headless; wait for it.
                        while not trainer.done.wait(1.0) and threading.active_count() > 1:
                            pass
                        end = trainer.end or end
        finally:
            if control is not None:
                control.close()
            trainer.dist.close()
            log.close()
    finally:
        if lock is not None:
            lock.release()
    if headless:
        try:
            print(f"log: {run_dir / LOG_NAME}", flush=True)
        except OSError:
            pass  # the terminal is gone (SIGHUP); the log is what matters
    return EXIT_OK if end is None or end.status in ("finished", "stopped") else EXIT_FAILED


def cmd_attach(args: argparse.Namespace) -> int:
    """Follow a run's log in the dashboard and steer it over its control
    channel; quitting leaves the run going."""
    import json

    from .control import request

    if args.send:
        answer = request(args.run_dir, args.send)  # ControlError: one line, exit 2
        print(json.dumps(answer))
        return EXIT_OK if answer.get("ok") else EXIT_FAILED
    from .ui.attach import run_attach

    return run_attach(Path(args.run_dir), mouse=not args.no_mouse)


def cmd_view(args: argparse.Namespace) -> int:
    from .ui.viewer import run_viewer

    return run_viewer([Path(p) for p in args.paths], follow=args.follow, mouse=not args.no_mouse)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
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
    try:
        if args.command == "train":
            return cmd_train(args)
        if args.command == "view":
            return cmd_view(args)
        if args.command == "attach":
            return cmd_attach(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())

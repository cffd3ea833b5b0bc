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
from pathlib import Path
from typing import Any, Sequence

from .parser import EXIT_FAILED, EXIT_OK, EXIT_USAGE  # noqa: F401 (cli's names)
from .parser import _Parser, add_mouse_flag, add_train_flags, build_parser  # noqa: F401 (cli's names)
from .train import (LEAVE_GRACE_S, _say_how_it_ended, config_from_args, config_values_from_args,  # noqa: F401 (cli's names)
                    plan_fork_args, train_headless, train_live)
from ..config import UserError
from ..terminal import printable, printable_streams, quiet_stdout


def cmd_train(args: argparse.Namespace) -> int:
    """Train (``cli.train``): the dashboard when both ends are a terminal,
    else plain log lines.  Under torchrun every rank trains, always headless."""
    import os

    several = os.environ.get("WORLD_SIZE", "1") not in ("", "1")  # torchrun: always headless
    terminal = sys.stdout.isatty() and sys.stdin.isatty()
    if not (args.headless or several or not terminal or _in_background()):
        return train_live(args)  # the dashboard, up before torch is imported
    if not (args.headless or several) and sys.stdout.isatty():  # a screen, but no keyboard: say why no dashboard
        why = ("it was started in the background (&): a dashboard there is stopped by the shell at once"
               if terminal else "standard input is not a terminal (< /dev/null, a pipe)")
        print(f"note: {why}, so no dashboard: plain lines instead (--headless asks for them; "
              "attach from another terminal to watch and steer)", file=sys.stderr)
    return train_headless(args)


def _in_background() -> bool:
    """Whether this process is a background job of its terminal (``cmd &``):
    a full-screen program there is stopped (SIGTTOU) before it draws anything."""
    import os

    try:
        return os.tcgetpgrp(sys.stdin.fileno()) != os.getpgrp()
    except (OSError, AttributeError, ValueError):
        return False


def cmd_attach(args: argparse.Namespace) -> int:
    """Follow a run's log in the dashboard and steer it over its control
    channel; quitting leaves the run going."""
    import json

    from ..control.channel import request
    from .remote import check_attachable, need_terminal, request_sample, send_settings

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
    from .remote import need_terminal

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

"""The ``tui-trainer`` command line: every subcommand and its flags
(``build_parser``); ``cli`` runs what it parses.

Every train flag is generated from ``TrainConfig``'s fields, so a flag, its
TOML key and the config field always share one name.
"""
from __future__ import annotations

import argparse

from .. import __version__
from ..control.commands import PLAIN
from ..config import FIELDS, choices, flag_type
from ..control.channel import COMMANDS
from ..terminal import printable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``error:`` line naming the fix."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {printable(message, newlines=False)}; see {self.prog} --help\n")


def add_train_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training settings (also valid as keys of --config FILE.toml)")
    for name, f in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        shown = f.metadata.get("show_default", f.default)
        if shown is not None:
            help_ = f"{help_} (default: {shown})"
        kind = flag_type(name)
        if kind is bool:
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_)
        else:
            parse = f.metadata.get("parse")
            g.add_argument(*f.metadata.get("flags", ()), flag, dest=name, default=argparse.SUPPRESS,
                           type=_typed(parse) if parse else kind, metavar=f.metadata.get("metavar", name.upper()), choices=choices(name),
                           help=help_)


def _typed(parse):
    """An argparse ``type`` from a parser whose ValueError says what the value must be."""
    def go(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    go.__name__ = parse.__name__
    return go


def add_mouse_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mouse", action=argparse.BooleanOptionalAction, default=False,
                   help="let the dashboard take the mouse (clicks, wheel scrolling); off by default, so "
                        "your terminal's copy and paste work, over SSH too")


MAX_EVENT_TIMEOUT_S = 7 * 86400  # a week; past ~1e9 s the waits on the command overflow (an OverflowError at the end)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= MAX_EVENT_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"--on-event-timeout takes seconds above 0 and at most "
                                         f"{MAX_EVENT_TIMEOUT_S} (a week), not {text!r}")
    return value


def add_alert_flags(p: argparse.ArgumentParser) -> None:
    """``--notify`` and ``--on-event`` (``alerts``): train, attach, view --follow."""
    g = p.add_argument_group("alerts (when the run ends, diverges or a step goes non-finite)")
    g.add_argument("--notify", action="store_true",
                   help="ring the terminal bell and send a desktop notification (OSC 9/777; tmux and most "
                        "terminals pass it on)")
    g.add_argument("--notify-best", action="store_true",
                   help="also alert on each new best val (implies --notify; --on-event gets event=best too)")
    g.add_argument("--on-event", metavar="CMD",
                   help="run CMD through the shell on each event, with TUI_TRAINER_EVENT, TUI_TRAINER_RUN, "
                        "TUI_TRAINER_STEP, TUI_TRAINER_STATUS, TUI_TRAINER_VAL_LOSS, ... in its environment")
    g.add_argument("--on-event-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                   help="kill a --on-event command still running after this long (default: 30)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tui-trainer", description="Train a small GPT and watch and steer it from the terminal.")
    p.add_argument("--version", action="version", version=f"tui-trainer {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    t = sub.add_parser("train", help="train a model (opens the dashboard unless --headless)")
    t.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file; flags override it")
    t.add_argument("--headless", action="store_true", help="no dashboard: print plain log lines")
    t.add_argument("--resume", "--resume-from", dest="resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or from one of its ckpt-step*.pt files) from its latest checkpoint")
    t.add_argument("--fork", metavar="RUN[@STEP]",
                   help="start a new run from RUN's checkpoint at STEP (default: its latest), with any flags "
                        "a resume may change plus --max-lr, --min-lr, --warmup-steps, --grad-clip, "
                        "--weight-decay; RUN is only read (new folder: --out, or next to RUN)")
    add_mouse_flag(t)
    add_alert_flags(t)
    add_train_flags(t)
    v = sub.add_parser("view", help="replay, follow or compare run logs; browse a folder of runs")
    v.add_argument("paths", nargs="*", metavar="PATH",
                   help="a losses.jsonl or a run folder holding one; a folder of runs (default: ./outputs) "
                        "opens the runs browser")
    v.add_argument("--follow", "-f", action="store_true", help="keep reading as another process appends")
    v.add_argument("--snap", action="store_true",
                   help="no screen: print the loss and lr plots once as text (ASCII when piped) and exit")
    v.add_argument("--size", metavar="COLSxROWS", help="--snap: the text's size (default: the terminal's, or 100x30)")
    add_mouse_flag(v)
    add_alert_flags(v)
    x = sub.add_parser("export", help="write runs' records as CSV, or their curves as a PNG/SVG figure")
    x.add_argument("paths", nargs="+", metavar="RUN", help="a run folder or a losses.jsonl")
    x.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="FILE.csv (one row per step: each run's train/val loss, lr, tokens, time; - for "
                        "stdout), FILE.png or FILE.svg (loss, val and lr curves with change, resume and fork "
                        "markers; needs matplotlib: pip install 'tui-trainer[plot]')")
    x.add_argument("--records", action="store_true", help="CSV: every record, flattened, one row per record")
    a = sub.add_parser("attach", help="open the dashboard on a running (e.g. headless) run and steer it")
    a.add_argument("run_dir", metavar="RUN_DIR", help="the folder the run is writing (outputs/run-...)")
    sendable = [c for c in COMMANDS if c in PLAIN or c == "status"]
    a.add_argument("--send", metavar="CMD", choices=sendable,
                   help=f"no UI: send one command ({', '.join(sendable)}), print the answer")
    a.add_argument("--set", metavar="KEY=VALUE", action="append", dest="settings",
                   help="no UI: change a live setting (repeatable), e.g. --set lr_scale=0.5 --set steps=5000; "
                        "keys: lr_scale, max_lr, min_lr, steps, eval_every, checkpoint_every, grad_clip, "
                        "weight_decay, pause_at; prints each JSON answer")
    a.add_argument("--sample", metavar="PROMPT",
                   help="no UI: generate from PROMPT on the run's weights as they are now, print it")
    a.add_argument("--tokens", type=int, metavar="N", help="--sample: tokens to generate (default: the run's)")
    a.add_argument("--temperature", type=float, metavar="T", help="--sample: temperature (default: the run's)")
    a.add_argument("--top-k", type=int, metavar="K", help="--sample: top-k, 0 for all (default: the run's)")
    add_mouse_flag(a)
    add_alert_flags(a)
    r = sub.add_parser("run", help="start your own training script (one that calls tui_trainer.init) "
                                   "and open the dashboard on its run")
    add_mouse_flag(r)
    add_screenless(sub)
    r.add_argument("script", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="the command that trains, after --, e.g. -- python train.py --lr 3e-4")
    return p


def add_screenless(sub: argparse._SubParsersAction) -> None:
    """``ls`` and ``status``: print once, no terminal needed (``listing``)."""
    ls = sub.add_parser("ls", help="list a folder of runs as a table (no terminal needed)")
    ls.add_argument("dir", nargs="?", metavar="DIR", help="a folder of runs (default: ./outputs)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line, per run")
    ls.add_argument("--family", action="store_true",
                    help="group each run with its forks under it (forks of forks under those), not newest first")
    st = sub.add_parser("status", help="one run's figures; exit 0 finished, 3 running or paused, "
                                       "1 any other end, 2 a bad argument")
    st.add_argument("run", metavar="RUN", help="a run folder (outputs/run-...)")
    st.add_argument("--json", action="store_true", help="one JSON object")
    m = sub.add_parser("mcp", help="a Model Context Protocol server (stdio) for a coding agent: read the runs "
                                   "in DIR and steer the live ones (needs pip install 'tui-trainer[mcp]')")
    m.add_argument("dir", nargs="?", metavar="DIR", help="the folder of runs it serves (default: ./outputs)")
    m.add_argument("--read-only", action="store_true", help="no steering tools: read only")

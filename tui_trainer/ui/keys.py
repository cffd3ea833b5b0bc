"""Every key of the dashboard, in one table: the footer, the help screen and
the app's key handling all read it.

A row says what a key does and *where* it works: in a mode (``live``: this
window trains the run, so closing it stops the run; ``attach``: the run is
another process's, steered over its control channel; ``view``: a log,
nothing to steer), optionally only in a state of that mode (``running``: the
run can be steered now; ``stopping``: this window is winding down;
``ended``: the run is over; ``offline``: no live run to reach).  A key may
have several rows (q stops a live run, closes an attached window, quits a
viewer): exactly one applies at a time.  The footer and the help list only
the rows that apply now; a key pressed where none of its rows applies gets a
short reason (``refusal``) instead of silence.

A row may also need something of the run or the window (``needs``, a word of
``NEEDS``): several runs shown (``runs``), a runs table to go back to
(``browser``), a loop that takes sample, eval or checkpoint requests
(``sample``, ``eval``, ``checkpoint``); ``-word``: only without it.  The app
says which it has (``DashboardApp.caps``).
"""
from __future__ import annotations

from dataclasses import dataclass

from textual.actions import parse
from textual.binding import Binding

from . import markers

MODES = ("live", "attach", "view")
STATES = ("running", "stopping", "ended", "offline")
STEER = ("live/running", "attach/running")
QUIT_NOW = ("live/stopping", "live/ended", "live/offline", "view")


@dataclass(frozen=True)
class Key:
    key: str                  # Textual's key name
    show: str                 # the key as the footer and help show it
    action: str               # the app's action, with its arguments
    label: str = ""           # in the footer ("" = not shown there)
    help: str = ""            # in the help screen ("" = not listed)
    where: tuple[str, ...] = MODES  # "mode" or "mode/state" entries
    priority: bool = False
    needs: str = ""           # a word of NEEDS the app must have ("-word": must not have)

    def works(self, mode: str, state: str, caps: frozenset[str] | None = None) -> bool:
        """Whether the row applies; ``caps`` None: whatever the window has."""
        if caps is not None and self.needs and (self.needs.lstrip("-") in caps) == self.needs.startswith("-"):
            return False
        return mode in self.where or f"{mode}/{state}" in self.where


NEEDS = {  # what a row may need, and the words for a key pressed without it
    "runs": "one run shown: nothing to compare",
    "browser": "no runs table to go back to",
    "sample": "this run's loop takes no sample requests (it registered no on_sample)",
    "eval": "this run's loop takes no eval requests (it registered no on_eval)",
    "checkpoint": "this run's loop takes no checkpoint requests (it registered no on_checkpoint)",
}


# In footer order: a narrow terminal cuts the footer's end, so how to quit and
# how to get help come first.
KEYS: tuple[Key, ...] = (
    Key("q", "q", "quit('stop')", "stop run",
        "stop the run (press twice; final checkpoint)", ("live/running",)),
    Key("q", "q", "quit('quit')", "quit", "quit", QUIT_NOW),
    Key("q", "q", "quit('close')", "close", "close this window; the run goes on", ("attach",)),
    Key("question_mark", "?", "help", "help", "this help (escape closes it)"),
    Key("p", "p", "pause", "pause", "pause / resume the run", STEER),
    Key("e", "e", "eval", "eval", "evaluate now (and sample, where the run samples at its evals)", STEER,
        needs="eval"),
    Key("c", "c", "checkpoint", "ckpt", "save a checkpoint now", STEER, needs="checkpoint"),
    # Typing a change, a command or a prompt (command_line.py); a log cannot be steered.
    Key("colon", ":", "command_line", "set", "type a change to one of the run's own settings (KEY=VALUE; "
        "the line lists them) or a command: pause, resume, eval, checkpoint (tab completes, ↑ ↓ history)", STEER),
    Key("x", "x", "stop_run", "stop", "stop the run (press twice; final checkpoint)", ("attach/running",)),
    Key("s", "s", "smooth", "smooth", "smooth the loss curve (EMA)"),
    Key("l", "l", "log_y", "log", "log-scale loss axis"),
    Key("w", "w", "window", "window", "whole run / last steps"),
    Key("left_square_bracket", "[ ]", "sample(1)", "sample", "older / newer sample"),
    Key("right_square_bracket", "]", "sample(-1)"),
    # Last in the footer: shown where the width leaves room for it.
    Key("g", "g", "prompt", "generate", "generate: type a prompt for the live weights; the sample shows below",
        STEER, needs="sample"),
    # Comparing runs and looking closer: in the help, not the footer (80
    # columns are taken).  x stops an attached run, so there the x axis is X;
    # x cycles it where it stops nothing.
    Key("x", "x", "panes('x_axis')", "", "x axis: step / tokens / wall time", ("live", "view")),
    Key("X", "X", "panes('x_axis', 'X')", "", "x axis: step / tokens / wall time (x stops the run)",
        ("attach",)),
    Key("X", "X", "panes('x_axis', 'X')", where=("live", "view")),
    Key("y", "y", "panes('y_range')", "", "y range: without the first steps' spike / everything"),
    Key("left_curly_bracket", "{ }", "panes('sample_run', -1)", "", "samples of the previous / next run",
        needs="runs"),
    Key("right_curly_bracket", "}", "panes('sample_run', 1)", needs="runs"),
    Key("d", "d", "panes('settings_diff')", "", "the settings that differ between the runs shown", needs="runs"),
    Key("m", "m", "panes('metric')", "", "plot another logged number below: grad norm, tokens/s, any field",
        ("view", "attach")),
    Key("left", "← →", "panes('inspect', -1)", "", "inspector: move a cursor along x, values at it "
        "(shift: 10 columns; escape hides it)", priority=True),
    Key("right", "→", "panes('inspect', 1)", priority=True),
    Key("shift+left", "shift+←", "panes('inspect', -10)", priority=True),
    Key("shift+right", "shift+→", "panes('inspect', 10)", priority=True),
    Key("up", "↑ ↓", "panes('evals', 'up')", "", "scroll the eval table (page up/down, home, end too)",
        priority=True),
    Key("down", "↓", "panes('evals', 'down')", priority=True),
    Key("pageup", "pgup", "panes('evals', 'page_up')", priority=True),
    Key("pagedown", "pgdn", "panes('evals', 'page_down')", priority=True),
    Key("home", "home", "panes('evals', 'home')", priority=True),
    Key("end", "end", "panes('evals', 'end')", priority=True),
    Key("minus", "- +", "panes('window_size', 2.0)", "", "recent window: longer / shorter"),
    Key("plus", "+", "panes('window_size', 0.5)"),
    Key("equals_sign", "=", "panes('window_size', 0.5)"),
    Key("escape", "esc", "panes('back')", "", "back to the runs table; hide the inspector", needs="browser"),
    Key("escape", "esc", "panes('back')", needs="-browser"),  # hides the inspector: said on the ← → row
    # ctrl+c is q, wherever; priority, so it is ours and not Textual's "use ctrl+q" hint.
    Key("ctrl+c", "ctrl+c", "quit", help="the same as q", priority=True),
    Key("ctrl+p", "ctrl+p", "command_palette", help="commands (e.g. a light theme)"),  # Textual's own binding
)

_CAPS = [frozenset(w for i, w in enumerate(NEEDS) if n >> i & 1) for n in range(1 << len(NEEDS))]

# Actions the table governs, by (name, arguments): the app's check_action asks here.
_BY_ACTION: dict[tuple[str, tuple[object, ...]], list[Key]] = {}
for _k in KEYS:
    _, _name, _args = parse(_k.action)
    _BY_ACTION.setdefault((_name, _args), []).append(_k)


def bindings() -> list[Binding]:
    """The app's ``BINDINGS``: one per row, then for each key that does not work
    everywhere a hidden fallback binding, ``refuse('key')``, which says why."""
    rows = {(k.key, k.action): k for k in reversed(KEYS) if k.action != "command_palette"}  # the first of each
    out = [Binding(k.key, k.action, k.label, show=bool(k.label), key_display=k.show, priority=k.priority)
           for k in KEYS if rows.get((k.key, k.action)) is k]
    for key in dict.fromkeys(k.key for k in KEYS):
        mine = [k for k in KEYS if k.key == key]
        if not all(any(k.works(m, s, c) for k in mine) for m in MODES for s in STATES for c in _CAPS):
            out.append(Binding(key, f"refuse({key!r})", show=False))
    return out


def works(action: str, args: tuple[object, ...], mode: str, state: str,
          caps: frozenset[str] | None = None) -> bool:
    """Whether a table action applies now; actions outside the table always do."""
    rows = _BY_ACTION.get((action, args))
    return rows is None or any(k.works(mode, state, caps) for k in rows)


def active(mode: str, state: str, caps: frozenset[str] | None = None) -> list[Key]:
    """The rows that apply now, in table order."""
    return [k for k in KEYS if k.works(mode, state, caps)]


MODE_NAMES = {"live": "in the live dashboard", "attach": "when attached to a run", "view": "in the viewer"}
STATE_REASONS = {
    "ended": "the run has ended",
    "stopping": "the run is stopping",
    "offline": "no live run to steer: view only",
}


def refusal(key: str, mode: str, state: str, caps: frozenset[str] | None = None) -> str:
    """Why ``key`` does nothing now, in a few words."""
    rows = [k for k in KEYS if k.key == key]
    if not rows:
        return f"{key}: not a key here; ? lists them"
    k = rows[0]
    what = f"{k.show} ({k.label or k.help})"
    lacking = [r.needs for r in rows if r.works(mode, state) and not r.works(mode, state, caps)]
    if lacking and not lacking[0].startswith("-"):
        return f"{what}: {NEEDS[lacking[0]]}"
    modes = list(dict.fromkeys(w.split("/")[0] for r in rows for w in r.where))
    if mode == "view" and "view" not in modes:
        return f"{what}: a log cannot be steered (view only)"
    if mode not in modes:
        return f"{what} works only {' or '.join(MODE_NAMES[m] for m in modes)}"
    return f"{what}: {STATE_REASONS.get(state, 'not now')}"


MODE_NOTES = {
    "live": "This window trains the run: q stops it (asking once more first) with a final checkpoint.",
    "attach": "Attached to a run in another process: p, e, c and x x (stop) go over its control channel; "
              "answers show as toasts and on the status line. q only closes this window: the run goes on.",
    "view": "Viewing a log: nothing here can be steered.",
}

# Paragraphs, not fixed lines: the help box wraps them to the terminal's width.
READING = (
    "The loss line is each step's train loss (min and max per column, so spikes stay visible; "
    "its EMA with s); dots are the validation loss at each eval; * in the eval log marks a new best.\n"
    "DIVERGED: the loss was NaN/inf several steps in a row. The run is paused and no bad step "
    "touched the weights.{diverged}\n"
    "The mouse is off by default, so your terminal's copy and paste work (over SSH too); "
    "--mouse lets the dashboard take it (clicks, wheel scrolling)."
)
DIVERGED_KEYS = {"live": " p resumes, q stops.", "attach": " p resumes, x x stops."}


def reading(mode: str) -> str:
    """How to read the screen, naming only keys that exist in ``mode``."""
    return READING.format(diverged=DIVERGED_KEYS.get(mode, "")) + (
        f"\nMarks along the top of the loss plot show where the run was steered: {markers.legend()} "
        "(changes on the lr plot too).")


def help_rows(mode: str, state: str, caps: frozenset[str] | None = None) -> list[tuple[str, str]]:
    """(key, what it does) for the help screen: the keys that work now."""
    seen: dict[str, str] = {}
    for k in active(mode, state, caps):
        if k.help and k.show not in seen:
            seen[k.show] = k.help
    return list(seen.items())

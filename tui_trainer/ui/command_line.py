"""Typing to a run: the command line (``:``) and the prompt box (``g``).

``:`` opens a one-line input at the bottom of the dashboard (live and
attached; a log cannot be steered) that takes what ``attach --set`` and
``attach --send`` take::

    lr_scale=0.5        set steps=5000        pause_at=900
    sample def parse(   pause   resume   eval   checkpoint

``g`` opens the same line as a prompt box: what is typed is the prompt (``\\n``
for a new line), sampled on the live weights between steps; the sample shows
in the sample pane, titled "requested", when its record arrives.

What is typed becomes the very request the control socket takes
(``{"cmd": "set", "key": K, "value": V}``, with the value as typed, as
``--set`` sends it; ``command_syntax.parse``) and goes through the app's steering capability,
``request(req) -> answer``, on a thread of its own: in-process for the live
dashboard (``control.TrainerControl``, so the checks are the socket's), over
the socket for ``attach``.  The answer shows at once, as a toast and on the
status line: accepted, or the run's one-line refusal.  The keys offered (hint,
completion, command palette) are the run's own, from its ``status`` answer:
nothing here knows which settings a loop defines.
"""
from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path
from typing import Any, Iterable

from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.suggester import Suggester
from textual.widgets import Input, Static

from ..fmt import fmt_int
from ..records import Change, Checkpoint, Record, Sample
from . import safe
from .command_syntax import (USAGE, VERBS, completions, fork_request, in_words,  # noqa: F401 (command_line's names)
                             parse, unescape, value_text)

KEYS_HELP = "enter sends · tab completes · ↑ ↓ history · esc cancels"
PROMPT_HELP = "a prompt for the live weights (\\n: a new line) · enter generates · ↑ ↓ history · esc cancels"
HISTORY = 50
_ids = itertools.count(1)


class _Suggest(Suggester):
    """The first completion, as the input's grey suggestion."""

    def __init__(self, screen: CommandScreen):
        super().__init__(use_cache=False, case_sensitive=True)
        self.screen = screen

    async def get_suggestion(self, value: str) -> str | None:
        if self.screen.kind != "command" or not value:
            return None
        found = completions(value, self.screen.live_settings)
        return found[0] if found else None


class CommandScreen(ModalScreen[None]):
    """A hint line and a one-line input at the bottom, over the panes."""

    BINDINGS = [
        Binding("escape", "cancel", show=False),
        Binding("tab", "complete", show=False),
        Binding("up", "history(-1)", show=False),
        Binding("down", "history(1)", show=False),
    ]

    def __init__(self, kind: str, desk: TypedCommands, text: str = ""):
        super().__init__()
        self.kind, self.desk, self.initial = kind, desk, text
        self.live_settings: dict[str, Any] = dict(desk.settings)
        self._back = 0  # how far back in the history the line is

    def compose(self) -> ComposeResult:
        with Vertical(id="cmd-box"):
            yield Static(self._hint(), id="cmd-hint")
            placeholder = self.desk.examples() if self.kind == "command" else self.desk.prompt_example()
            yield Input(self.initial, placeholder=placeholder, id="cmd-input", compact=True,
                        suggester=_Suggest(self), select_on_focus=False)

    def on_mount(self) -> None:
        self.query_one("#cmd-box").border_title = "command" if self.kind == "command" else "prompt"
        self.query_one("#cmd-hint", Static).update(self._hint())  # the settings may have come meanwhile
        self.query_one(Input).focus()

    def _hint(self) -> Any:
        if self.kind == "prompt":
            return safe.text(PROMPT_HELP)
        if self.desk.settings_note:
            now = self.desk.settings_note
        elif self.live_settings:
            now = "  ".join(f"{k}={value_text(v)}" for k, v in sorted(self.live_settings.items()))
        else:
            now = "asking the run for its settings…"
        return safe.text(f"{now}\n{self.desk.usage()} · {KEYS_HELP}", limit=2000)

    def show_settings(self, settings: dict[str, Any]) -> None:
        """The run's settings arrived (its status answer): hint and completion use them."""
        self.live_settings = dict(settings)
        for hint in self.query("#cmd-hint").results(Static):  # none yet: compose shows them
            hint.update(self._hint())
        if self.kind == "command":
            for box in self.query("#cmd-input").results(Input):
                box.placeholder = self.desk.examples()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss()
        self.desk.submit(self.kind, event.value)

    def action_cancel(self) -> None:
        self.dismiss()

    def action_complete(self) -> None:
        inp = self.query_one(Input)
        found = completions(inp.value, self.live_settings) if self.kind == "command" else []
        if found:
            inp.value = found[0]
            inp.cursor_position = len(inp.value)

    def action_history(self, delta: int) -> None:
        past = self.desk.history[self.kind]
        back = max(0, min(len(past), self._back - delta))
        if back == self._back:
            return
        self._back = back
        inp = self.query_one(Input)
        inp.value = past[-back] if back else ""
        inp.cursor_position = len(inp.value)


class TypedCommands:
    """The app's command line and prompt box: opens them, sends what is typed
    through ``app.steering.request`` (off the UI thread) and shows the answers."""

    def __init__(self, app: Any):
        self.app = app  # the DashboardApp: its steering, say, set_note and sample pane
        self.settings: dict[str, Any] = {}  # the run's live settings, from its last status answer
        self.settings_note = ""             # why there are none to show
        self.offers: frozenset[str] | None = None  # the requests its loop takes (status); None: not said
        self.history: dict[str, list[str]] = {"command": [], "prompt": []}
        self.fork: dict[str, str] | None = None  # the settings of a :fork waiting for its checkpoint
        self.fork_commands: list[str] = []       # the commands that start the forks asked for

    # --- what the run offers ---
    def ask_status(self) -> None:
        """Ask the run (quietly) for its settings and the requests its loop takes."""
        self._send({"cmd": "status"}, quiet=True)

    def examples(self) -> str:
        """The command line's placeholder: the run's own settings, then what else it takes."""
        shown = [f"{k}={value_text(v)}" for k, v in sorted(self.settings.items())[:2]] or ["KEY=VALUE"]
        return " · ".join([*shown, *(["sample PROMPT"] if self._samples() else []), "pause"])

    def own_prompt(self) -> str | None:
        """The run's own sample prompt (its config's, from its data), if it names one."""
        runs = getattr(self.app, "runs", None) or []
        prompt = runs[0].config.get("sample_prompt") if runs and isinstance(runs[0].config, dict) else None
        return prompt if isinstance(prompt, str) and prompt.strip() and len(prompt) <= 10_000 else None

    def prompt_example(self) -> str:
        """The prompt box's placeholder: the run's own sample prompt, else a line of code."""
        prompt = self.own_prompt()
        return safe.plain(prompt, 60, newlines=False) if prompt is not None else "def parse("

    def usage(self) -> str:
        return USAGE if self._samples() else USAGE.replace(" · sample PROMPT", "")

    def _samples(self) -> bool:
        return self.offers is None or "sample" in self.offers

    # --- opening ---
    def open(self, kind: str, text: str = "") -> None:
        if isinstance(self.app.screen, CommandScreen):
            return
        self.app.push_screen(CommandScreen(kind, self, text))
        if kind == "command":
            self.ask_status()  # the keys and their values, for the hint

    # --- sending ---
    def submit(self, kind: str, text: str) -> None:
        if text.strip():
            past = self.history[kind]
            if not past or past[-1] != text:
                past.append(text)
                del past[:-HISTORY]
        if kind == "prompt":  # enter on an empty box: the run's own prompt, the one its placeholder shows
            prompt = unescape(text) if text else self.own_prompt()
            req: dict[str, Any] | None = {"cmd": "sample", "prompt": prompt} if prompt else None
            why = None if prompt else "no prompt typed: nothing sent"
        else:
            req, why = parse(text)
        if req is None:
            if why:
                self.app.say(why, warn=True)
                self.app.set_note(f"✗ {why}"[:60])
            return
        if req["cmd"] == "sample":
            req["id"] = f"ui-{os.getpid()}-{next(_ids)}"
        if "fork" in req:
            self.fork = req.pop("fork")  # said with the checkpoint's record (``record``)
        self.app.set_note(f"{in_words(req)}: asking…")
        self._send(req)

    def _send(self, req: dict[str, Any], quiet: bool = False) -> None:
        steering = self.app.steering
        if steering is None:
            return

        def ask() -> None:
            try:
                answer = steering.request(req)
            except Exception as e:  # noqa: BLE001 - a steering that fails answers as a refusal
                answer = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            try:
                self.app.call_from_thread(self.answered, req, answer, quiet)
            except RuntimeError:
                pass  # the app has closed meanwhile

        # A daemon thread, not a worker: a run stopped with SIGSTOP must not hold up closing the window.
        threading.Thread(target=ask, name=f"typed-{req['cmd']}", daemon=True).start()

    # --- answers ---
    def answered(self, req: dict[str, Any], answer: Any, quiet: bool = False) -> None:
        """The run's answer (UI thread): a toast and the status line."""
        if not isinstance(answer, dict):
            answer = {"ok": False, "error": "a malformed answer"}
        if req["cmd"] == "status":
            offers = answer.get("offers")
            if isinstance(offers, list):
                self.offers = frozenset(o for o in offers if isinstance(o, str))
            live = answer.get("settings")
            if isinstance(live, dict):
                self.settings = {k: v for k, v in live.items() if isinstance(k, str)}
                self.settings_note = "" if self.settings else "this run has no live settings"
            elif answer.get("ok"):
                self.settings_note = "this run lists no live settings (an older version?): type KEY=VALUE"
            else:
                self.settings_note = f"no answer from the run: {safe.plain(answer.get('error'), 200)}"
            if isinstance(self.app.screen, CommandScreen):
                self.app.screen.show_settings(self.settings)
            if not quiet:
                self.app.say(", ".join(f"{k}={value_text(v)}" for k, v in sorted(self.settings.items()))
                             or self.settings_note)
            return
        what = in_words(req)
        if answer.get("ok"):
            step = answer.get("step")
            at = f" at step {fmt_int(step)}" if isinstance(step, int) and not isinstance(step, bool) else ""
            then = {"set": "applies from the next step", "sample": "it shows in the sample pane when drawn"}.get(
                req["cmd"], "the run applies it after that step")
            again = " (already asked)" if answer.get("coalesced") else ""
            self.app.say(f"✓ {what} accepted{at}{again}: {then}")
            self.app.set_note(f"✓ {what} accepted{at}")
        else:
            error = safe.plain(answer.get("error", "no answer"), 300, newlines=False)
            self.app.say(f"✗ {what} refused: {error}", ok=False)
            self.app.set_note(f"✗ {what} refused: {error}")

    def record(self, r: Record) -> None:
        """A record of the steered run that answers a typed request, from any window."""
        step = fmt_int(r.step)
        if isinstance(r, Change):
            key = safe.plain(r.key, 40, newlines=False)
            change = f"{key} {value_text(r.old)} → {value_text(r.new)}"
            self.app.say(f"{change} at step {step} (from {safe.plain(r.source, 12)})")
            self.app.set_note(f"{change} at step {step}")
            if isinstance(r.key, str) and r.key in self.settings:
                self.settings[r.key] = r.new
        elif isinstance(r, Checkpoint) and r.reason == "manual" and self.fork is not None:
            settings, self.fork = self.fork, None
            self.forked(r, settings)
        elif isinstance(r, Sample) and r.requested is True:
            self.app.samples.newest()  # the newest, of the steered run: this one
            prompt = safe.plain(r.prompt, 24, newlines=False)
            self.app.say(f"sample for {prompt!r} at step {step}: in the sample pane")
            self.app.set_note(f"requested sample at step {step}")

    def forked(self, r: Checkpoint, settings: dict[str, str]) -> None:
        """The checkpoint a :fork asked for is saved: keep it from pruning and
        say the command that starts the fork.  Not started here: on one GPU two
        runs would halve each one's speed; the original goes on as it was."""
        from ..run.fork import fork_command, keep_fork_point

        folder = getattr(self.app.source, "run_dir", None)
        kept = keep_fork_point(Path(folder) if folder is not None else None, r.path, r.step)
        command = fork_command(kept.parent if kept is not None else Path(r.path).parent, r.step, settings)
        self.fork_commands.append(command)
        self.app.say(f"fork point saved at step {fmt_int(r.step)}; start the fork when you like (not started: "
                     f"two runs on one GPU halve each one's speed): {command}", timeout=30)
        self.app.set_note(f"fork: {command}")

    def print_forks(self) -> None:
        """After the window closes: each fork asked for, as a command to copy."""
        for command in self.fork_commands:
            try:
                print(f"fork point kept; start the fork with: {command}", flush=True)
            except OSError:
                pass  # the terminal is gone

    # --- the command palette (ctrl+p) ---
    def palette(self, screen: Screen) -> Iterable[SystemCommand]:
        app = self.app
        if not app.check_action("command_line", ()):
            return
        if not self.settings and app.mode == "live":  # in-process: asking costs nothing
            self.answered({"cmd": "status"}, app.steering.request({"cmd": "status"}), quiet=True)
        yield SystemCommand("Change a live setting…", "the command line (:): KEY=VALUE, sample, pause…",
                            lambda: self.open("command"))
        for key, value in sorted(self.settings.items()):
            name = safe.plain(key, 40, newlines=False)
            yield SystemCommand(f"Set {name}", f"now {value_text(value)}",
                                lambda k=key: self.open("command", f"{k}="))
        if self._samples():
            yield SystemCommand("Sample a prompt on the live weights…", "the prompt box (g)",
                                lambda: self.open("prompt"))
        for title, verb in (("Pause or resume the run", "pause"), ("Evaluate now", "eval"),
                            ("Checkpoint now", "checkpoint")):
            yield SystemCommand(title, f"as the key {verb[0]}", lambda v=verb: app.run_action(v))

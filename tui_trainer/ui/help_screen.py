"""The help screen: the keys that work now, what the mode means, how to read the plots.

Attributes down: the app hands the widget the runs and calls ``show(...)``; it
never reads the engine, the source or another widget.  Every string from a run
goes through ``safe``; every number through ``fmt``.
"""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from . import keys


def key_table(title: str, rows: list[tuple[str, str]]) -> Text:
    """A help screen's table of keys: the title, then each key and what it does."""
    t = Text()
    t.append(f"{title}\n", style="bold")
    width = max((len(k) for k, _ in rows), default=0)
    for k, what in rows:
        t.append(f"  {k:<{width}}", style="bold")
        t.append(f"  {what}\n")
    return t


class HelpScreen(ModalScreen[None]):
    """The keys that work now (``keys.help_rows``), what the mode means, how to read the plots."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close", show=False)]

    def __init__(self, mode: str = "view", state: str = "ended", caps: frozenset[str] | None = None) -> None:
        super().__init__()
        self.mode, self.state, self.caps = mode, state, caps

    def compose(self) -> ComposeResult:
        t = key_table("Keys", keys.help_rows(self.mode, self.state, self.caps))
        t.append("\n" + keys.MODE_NOTES[self.mode] + "\n\n")
        t.append("Reading the screen\n", style="bold")
        t.append(keys.reading(self.mode))
        with VerticalScroll(id="help-box") as box:
            box.border_title = "help"
            box.border_subtitle = "escape or ? closes"
            yield Static(t, id="help-text")


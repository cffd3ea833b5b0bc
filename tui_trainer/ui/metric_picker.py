"""The metric picker (m): what the bottom plot shows, the learning rate or
another number the logs hold (``metrics.fields``)."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from . import safe

LR = "learning rate"


class MetricPicker(ModalScreen["str | None"]):
    """Pick a field; dismissed with its name (``LR`` for the learning rate), or None."""

    BINDINGS = [Binding("escape,m,q", "dismiss(None)", "close", show=False)]

    def __init__(self, names: list[str], current: str | None) -> None:
        super().__init__()
        self.names = [LR] + [n for n in names if n != "lr"]
        self.current = current or LR

    def compose(self) -> ComposeResult:
        with Vertical(id="metric-box") as box:
            box.border_title = "plot in the bottom pane"
            box.border_subtitle = "enter picks, escape closes"
            yield OptionList(*[Option(safe.plain(n, 40, newlines=False), id=f"m{i}")
                               for i, n in enumerate(self.names)], id="metric-list")

    def on_mount(self) -> None:
        lst = self.query_one(OptionList)
        lst.highlighted = self.names.index(self.current) if self.current in self.names else 0
        lst.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(self.names[int(str(event.option.id)[1:])])

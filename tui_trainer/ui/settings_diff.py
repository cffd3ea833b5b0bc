"""The settings that differ between runs, as a table one key away (d)."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from ..runs.rows import setting_text
from . import safe
from .plot import rich_colour


# A setting as written, short (``fmt.fit`` for a number given a width): the
# one formatter ``ls`` and the runs table use too.
fmt_setting = setting_text


class SettingsDiff(ModalScreen[None]):
    """One row per setting that differs, one column per run (its label and colour)."""

    BINDINGS = [Binding("escape,d,q", "dismiss", "close", show=False)]

    def __init__(self, labels: list[str], diff: dict[str, list[Any]], colours: list[int] | None = None) -> None:
        super().__init__()
        self.labels, self.diff = labels, diff
        self.colours = colours if colours is not None else list(range(len(labels)))

    def compose(self) -> ComposeResult:
        with Vertical(id="diff-box") as box:
            box.border_title = f"settings that differ ({len(self.diff)})"
            box.border_subtitle = "escape closes"
            if not self.diff:
                what = "one run: nothing to compare" if len(self.labels) < 2 else \
                    "every setting is the same in these runs (or their logs have none)"
                yield Static(Text(what, style="dim"), id="diff-none")
                return
            table = DataTable(id="diff-table", cursor_type="row", zebra_stripes=True)
            table.add_column("setting", key="setting")
            for i, lab in enumerate(self.labels):
                table.add_column(Text.assemble(("■ ", rich_colour(self.colours[i])), safe.name(lab, 12)),
                                 key=f"run{i}")
            for k, values in self.diff.items():
                table.add_row(safe.text(k, limit=30, newlines=False), *[Text(fmt_setting(v)) for v in values])
            table.fixed_columns = 1
            yield table

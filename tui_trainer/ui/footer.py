"""The footer: Textual's, less the keys the width cannot show whole.

Textual's footer cuts its last key at the screen's edge: attached at 80
columns it ended ``[ ] sa``, at 90 ``g generat``, a word that reads as
another.  Here a key that does not fit whole is hidden, and the keys after
it; a wider screen shows them again.  The order is the key table's
(``keys.py``), so how to quit and how to get help are always the first.
"""
from __future__ import annotations

from textual import events
from textual.widgets import Footer
from textual.widgets._footer import FooterKey


class KeysFooter(Footer):
    """A footer whose keys are shown whole or not at all."""

    async def recompose(self) -> None:
        await super().recompose()  # the keys of a new mode or state: fitted again once laid out
        self.call_after_refresh(self._fit)

    def on_resize(self, event: events.Resize) -> None:
        for key in self.query_children(FooterKey):  # laid out whole again, then fitted
            key.display = True
        self.call_after_refresh(self._fit)

    def _fit(self) -> None:
        width = self.size.width
        cut = False
        for key in self.query_children(FooterKey):
            cut = cut or key.virtual_region.right > width
            key.display = not cut

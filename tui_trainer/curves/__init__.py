"""A run's numbers made ready to draw, with no Textual: bounded curves
(``curve``), one run's state (``series``), EMA ``smoothing``, the x axis
(``xaxis``) and plot coordinates (``axes``).

``from tui_trainer.curves import X`` still gives what ``tui_trainer/curves.py``
held before it became this folder (from ``curve``, imported on first use)."""

from .. import forward

_FROM_CURVE = ('BUCKETS', 'RECENT', 'Buckets', 'Ring', 'Curve', 'columns')


def __getattr__(name: str):
    if name in _FROM_CURVE:
        from . import curve

        return getattr(curve, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


forward(__name__, "curve", _FROM_CURVE)  # setting one of them sets it where it lives

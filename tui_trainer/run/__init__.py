"""One run: its folder and lock (``folder``), its log (``log_writer``), checkpoints
(``checkpoint``, ``checkpoint_writer``, ``checkpoint_schema``), ``resume`` and ``fork``,
signals, the headless printer (``console``) and the ``Run`` that owns them (``run``).

``from tui_trainer.run import X`` still gives what ``tui_trainer/run.py``
held before it became this folder (from ``run``, imported on first use)."""

from .. import forward

_FROM_RUN = ('PAUSE_POLL_S', 'Sink', 'CommandSync', 'Run')


def __getattr__(name: str):
    if name in _FROM_RUN:
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


forward(__name__, "run", _FROM_RUN)  # setting one of them sets it where it lives

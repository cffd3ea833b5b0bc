"""Steering a running loop from elsewhere: the socket (``server``, ``limits``), what
it carries (``channel``, ``commands``), the live settings (``settings``, ``live``) and
``attach``'s side of it (``remote``).

``from tui_trainer.control import X`` still gives what ``tui_trainer/control.py``
held before it became this folder (from ``channel``, imported on first use)."""

from .. import forward

_FROM_CHANNEL = ('MAX_PENDING', 'QUERIES', 'SOCKET_SOURCES', 'COMMANDS', 'find_socket', 'TrainerControl', 'overdue', 'MAX_PROMPT', 'MAX_SAMPLE_TOKENS', 'sample_args', 'serve_trainer', 'request', 'ControlClient', 'start_for_run')


def __getattr__(name: str):
    if name in _FROM_CHANNEL:
        from . import channel

        return getattr(channel, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


forward(__name__, "channel", _FROM_CHANNEL)  # setting one of them sets it where it lives

"""The one exception a person sees as a line rather than a traceback."""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the person at the keyboard: shown as one ``error:`` line
    naming the problem and the fix (``cli.main``), exit status 2."""

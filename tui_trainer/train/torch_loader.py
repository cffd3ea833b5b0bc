"""Loading PyTorch, or one line saying why it cannot load.

The usual reason is a memory limit (``ulimit -v``, RLIMIT_AS): the import
then fails with ``ImportError`` ("failed to map segment from shared
object"), ``MemoryError`` or ``OSError``, and below some size PyTorch's
libraries abort the process outright (``std::bad_alloc``, OpenBLAS giving
up), which no ``except`` can catch; so a limit that small is refused before
trying.
"""
from __future__ import annotations

from ..errors import UserError

#: Bytes of address space below which PyTorch cannot even map its libraries
#: (measured: 488 MB aborts inside OpenBLAS, 586 MB raises MemoryError).
MIN_ADDRESS_SPACE = 512 << 20
LIFT = "raise the address-space limit (ulimit -v unlimited)"


def address_space_limit() -> int | None:
    """The soft RLIMIT_AS in bytes, or None when there is none."""
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        return None if limit == resource.RLIM_INFINITY or limit < 0 else limit
    except (ImportError, ValueError, OSError, AttributeError):  # not on Windows
        return None


def load_torch() -> None:
    """Import torch, or raise a ``UserError``: "PyTorch could not load: <reason>; <the fix>"."""
    limit = address_space_limit()
    if limit is not None and limit < MIN_ADDRESS_SPACE:
        raise UserError(f"PyTorch could not load: the address-space limit (ulimit -v) is {limit >> 20} MB, "
                        f"below the {MIN_ADDRESS_SPACE >> 20} MB it needs; {LIFT}")
    try:
        import torch  # noqa: F401
    except (ImportError, OSError, MemoryError) as e:
        text = str(e).strip().splitlines()
        reason = text[0][:200] if text else type(e).__name__
        fix = f"{LIFT}; it is {limit >> 20} MB now" if limit is not None else \
            "check the install with: python -c 'import torch'"
        raise UserError(f"PyTorch could not load: {reason}; {fix}") from None

"""Helpers shared by the tests that drive Textual apps with a Pilot."""
from __future__ import annotations


async def until(pilot, cond, what: str, timeout: float = 60.0) -> None:
    """Let the app run until ``cond()`` holds (a deadline, not a timing assertion)."""
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")

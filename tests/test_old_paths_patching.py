"""Old import paths mixed with new ones in one process: a module reached by
its old name is the very module at its new place, and a name of an old
module that became a room (``control``, ``curves``, ``run``) is set where it
lives when set through the room (``monkeypatch``, as tests and scripts did
before the rooms), and restored there when the patch is undone."""
from __future__ import annotations

import importlib

import pytest

import tui_trainer

ROOMS = [("control", "channel", "MAX_PENDING"), ("control", "channel", "request"), ("curves", "curve", "RECENT"),
         ("run", "run", "PAUSE_POLL_S"), ("run", "run", "Run")]


@pytest.mark.parametrize("room, home, name", ROOMS)
def test_a_name_patched_through_its_old_module_is_patched_where_it_lives(monkeypatch, room, home, name):
    pkg = importlib.import_module(f"tui_trainer.{room}")
    where = importlib.import_module(f"tui_trainer.{room}.{home}")
    before, marker = getattr(where, name), object()
    with monkeypatch.context() as m:
        m.setattr(pkg, name, marker)
        assert getattr(where, name) is marker and getattr(pkg, name) is marker
    assert getattr(where, name) is before and getattr(pkg, name) is before
    with monkeypatch.context() as m:
        m.setattr(f"tui_trainer.{room}.{name}", marker)  # by its dotted name
        assert getattr(where, name) is marker
    assert getattr(where, name) is before


@pytest.mark.parametrize("old", sorted(tui_trainer.MOVED))
def test_an_old_path_is_the_module_at_its_new_place(old):
    assert importlib.import_module(f"tui_trainer.{old}") is importlib.import_module(
        f"tui_trainer.{tui_trainer.MOVED[old]}")

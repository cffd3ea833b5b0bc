"""A stop is never refused as busy: whatever floods the run's command queue
first (16 requests waiting, ``channel.MAX_PENDING``), a ``stop`` from the
socket is queued (or already waiting), so a run can always be ended; the
queue stays bounded (one stop past the bound at most)."""
from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings, strategies as st

from tui_trainer.control.channel import MAX_PENDING, TrainerControl
from tui_trainer.control.commands import Command, CommandQueue

FLOOD = st.lists(st.sampled_from([{"cmd": "pause"}, {"cmd": "resume"}, {"cmd": "eval"}, {"cmd": "checkpoint"},
                                  {"cmd": "toggle_pause"}, {"cmd": "stop"}]), min_size=0, max_size=60)


@settings(max_examples=60, deadline=None)
@given(flood=FLOOD, gets=st.lists(st.integers(0, 3), max_size=60))
def test_a_stop_after_any_flood_is_taken(flood, gets):
    t = SimpleNamespace(commands=CommandQueue(), step=7, paused=False, stopping=False, total_steps=100)
    control = TrainerControl(t)
    for req, taken in zip(flood, gets + [0] * len(flood)):
        for _ in range(min(taken, t.commands.qsize())):
            t.commands.get_nowait()  # the loop takes some between floods
        control.handle(req)
        assert t.commands.qsize() <= MAX_PENDING + 1
    answer = control.handle({"cmd": "stop"})
    assert answer["ok"], answer
    waiting = list(t.commands.queue)
    assert waiting.count(Command.STOP) == 1 and len(waiting) <= MAX_PENDING + 1


def test_a_stop_behind_a_full_queue_is_queued_not_busy():
    t = SimpleNamespace(commands=CommandQueue(), step=7, paused=False, stopping=False, total_steps=100)
    control = TrainerControl(t)
    for i in range(MAX_PENDING):
        assert control.handle({"cmd": "eval" if i % 2 else "checkpoint"})["ok"]
    assert not control.handle({"cmd": "pause"})["ok"]  # the flood guard still holds for the rest
    assert control.handle({"cmd": "stop"})["ok"]
    assert list(t.commands.queue)[-1] is Command.STOP

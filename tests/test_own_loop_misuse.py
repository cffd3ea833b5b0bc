"""An own loop (``tui_trainer.init``) misused: an exception, or a
``sys.exit`` code, whose ``__str__`` raises still ends the run with its
``run_end`` (``failed``), lets the lock go, and leaves the script's own
exception as the one raised."""
from __future__ import annotations

import json

import pytest

import tui_trainer
from tui_trainer.loops.own_loop import exit_status
from tui_trainer.run.folder import is_live


class Unshowable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ raised")


class NotText:
    def __str__(self):  # returns no string: str() raises TypeError
        return 5


def test_an_exception_that_cannot_be_shown_still_ends_the_run_failed(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(Unshowable):
        with tui_trainer.init(folder, quiet=True) as run:
            run.log(1, train_loss=2.0)
            raise Unshowable()
    end = json.loads((folder / "losses.jsonl").read_text().splitlines()[-1])
    assert end["type"] == "run_end" and end["status"] == "failed" and end["step"] == 1
    assert end["error"].startswith("Unshowable: <Unshowable")
    assert not is_live(folder) and run.ended


@pytest.mark.parametrize("code", [Unshowable(), NotText()])
def test_an_exit_code_that_cannot_be_shown_is_a_failure(code):
    status, error = exit_status(code)
    assert status == "failed" and error.startswith("the script exited: <") and "cannot be shown" in error

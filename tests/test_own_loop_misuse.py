"""An own loop (``tui_trainer.init``) misused: an exception, or a
``sys.exit`` code, whose ``__str__`` raises still ends the run with its
``run_end`` (``failed``), lets the lock go, and leaves the script's own
exception as the one raised."""
from __future__ import annotations

import json

import pytest

import tui_trainer
from tui_trainer.logs.formats.ours import typed_record
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


@pytest.mark.parametrize("kw", [{"on_eval": 5}, {"on_sample": "text"}, {"config": 5}, {"total_steps": "x"},
                                {"batch_shape": (1,)}, {"model": 5}])
def test_a_bad_argument_to_init_leaves_no_run_folder(tmp_path, kw):
    folder = tmp_path / "run"
    with pytest.raises((TypeError, ValueError, AttributeError)):
        tui_trainer.init(folder, quiet=True, **kw)
    assert not folder.exists()
    with tui_trainer.init(folder, quiet=True) as run:  # the folder is free for a run
        run.log(1, train_loss=1.0)
    assert json.loads((folder / "losses.jsonl").read_text().splitlines()[-1])["status"] == "finished"


def test_junk_callbacks_are_refused_when_given(tmp_path):
    with tui_trainer.init(tmp_path / "run", quiet=True) as run:
        with pytest.raises(TypeError, match="on_checkpoint is a function"):
            run.set_callbacks(on_checkpoint=[1])
        run.log(1, train_loss=1.0)


def test_a_bad_argument_to_init_keeps_the_run_it_would_resume(tmp_path):
    folder = tmp_path / "run"
    with tui_trainer.init(folder, quiet=True) as run:
        run.log(1, train_loss=1.0)
    before = (folder / "losses.jsonl").read_bytes()
    with pytest.raises(TypeError):
        tui_trainer.init(folder, quiet=True, resume=True, on_eval=5)
    assert (folder / "losses.jsonl").read_bytes() == before


@pytest.mark.parametrize("error", [ValueError("bad batch"), 123, Unshowable(), "a\udcffb"])
def test_finish_with_an_error_that_is_not_text_still_writes_the_run_end(tmp_path, error):
    folder = tmp_path / "run"
    run = tui_trainer.init(folder, quiet=True)
    run.log(1, train_loss=1.0)
    end = run.finish("failed", error=error)
    line = json.loads((folder / "losses.jsonl").read_text().splitlines()[-1])
    assert line["type"] == "run_end" and isinstance(line["error"], str) and line["error"] == end.error
    assert typed_record(line) is not None and not is_live(folder)


@pytest.mark.parametrize("step", ["a", -5, True, 2.5, None.__class__])
def test_a_resume_step_that_is_no_step_is_refused_and_the_log_kept(tmp_path, step):
    folder = tmp_path / "run"
    with tui_trainer.init(folder, quiet=True) as run:
        run.log(1, train_loss=1.0)
    before = (folder / "losses.jsonl").read_bytes()
    with pytest.raises((TypeError, ValueError)):
        tui_trainer.init(folder, quiet=True, resume=True, step=step)
    assert (folder / "losses.jsonl").read_bytes() == before and not is_live(folder)

"""Hugging Face logs, whole (issue 21, item 4): a ``trainer_state.json``, a
``checkpoint-N/`` folder and an output folder holding them read as a run,
with its train and eval curves; a malformed one is one line, never a
traceback or a hang.  And the one decoder of our own lines."""
from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tui_trainer import cli, records
from tui_trainer.loops import own_loop
from tui_trainer.logs import LogError, load_series
from tui_trainer.logs import parsing
from tui_trainer.logs.formats import hugging_face, ours
from tui_trainer.ui.plot import CurvePlot
from tui_trainer.ui.viewer import FileSource, viewer_app
from tui_trainer.ui.eval_log import EvalLog
from uitools import until

BRAILLE = range(0x2801, 0x2900)


def state(global_step: int = 30, **more) -> dict:
    """A trainer_state.json as the Trainer writes it: logging every 10 steps, eval every 20."""
    history = []
    for s in range(10, global_step + 1, 10):
        history.append({"loss": 2.5 - s / 100, "grad_norm": 1.5, "learning_rate": 5e-5 * (1 - s / 100),
                        "epoch": s / 100, "step": s})
        if s % 20 == 0:
            history.append({"eval_loss": 2.4 - s / 100, "eval_accuracy": 0.4 + s / 1000, "eval_runtime": 1.25,
                            "eval_samples_per_second": 80.0, "epoch": s / 100, "step": s})
    doc = {"best_global_step": 20, "best_metric": 2.2, "best_model_checkpoint": "out/checkpoint-20",
           "epoch": global_step / 100, "eval_steps": 20, "global_step": global_step,
           "is_hyper_param_search": False, "is_local_process_zero": True, "is_world_process_zero": True,
           "log_history": history, "logging_steps": 10, "max_steps": 100, "num_input_tokens_seen": 0,
           "num_train_epochs": 1, "save_steps": 10, "stateful_callbacks": {"TrainerControl": {"args": {}}},
           "total_flos": 1.2e12, "train_batch_size": 8, "trial_name": None, "trial_params": None}
    doc.update(more)
    return doc


def write_state(path, doc) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))  # as Trainer.save_state writes it


def output_folder(root):
    """An output folder with checkpoint-5, -10 and -20 (lexically, -5 sorts last)."""
    for n in (10, 20):
        write_state(root / f"checkpoint-{n}" / "trainer_state.json", state(n))
    five = state(5, log_history=[{"loss": 2.45, "learning_rate": 5e-5, "epoch": 0.05, "step": 5}])
    write_state(root / "checkpoint-5" / "trainer_state.json", five)
    return root


async def test_a_trainer_state_shows_its_train_and_eval_curves(tmp_path):
    path = tmp_path / "out" / "checkpoint-30" / "trainer_state.json"
    write_state(path, state(30))
    src = FileSource([path])
    src.prepare()
    app = viewer_app(src)
    async with app.run_test(size=(100, 30)) as pilot:
        run = app.runs[0]
        await until(pilot, lambda: app.query_one(EvalLog).row_count == 1, "the eval row")
        assert run.name == "checkpoint-30" and run.step == 30 and run.total_steps == 100
        assert run.state == "log" and "best 2.2" in run.detail  # a checkpoint short of max_steps: not ended
        x, y = run.loss.points(100)
        assert list(x) == [10, 20, 30] and y[0] == pytest.approx(2.4)
        assert run.lr == pytest.approx(5e-5 * 0.7)
        (ev,) = run.evals
        assert (ev.step, ev.val, ev.train) == (20, pytest.approx(2.2), None)
        assert any(ord(ch) in BRAILLE for ch in app.query_one("#loss", CurvePlot).render().plain)
        await pilot.press("q")
    src.close()


def test_the_eval_metrics_of_an_entry_are_its_extras():
    got = hugging_face.read({"eval_loss": 2.0, "eval_accuracy": 0.75, "epoch": 1.0, "step": 20})
    assert isinstance(got, records.Eval) and got.val_loss == 2.0 and got.train_loss is None
    assert got.extra == {"eval_accuracy": 0.75}
    assert hugging_face.read({"loss": 2.0, "learning_rate": 1e-4, "epoch": 0.5, "step": 10.0}) == (10, 2.0, 1e-4)
    assert hugging_face.read({"loss": "x", "epoch": 0.5, "step": 10}) is hugging_face.BAD
    assert hugging_face.read({"step": 3, "loss": 1.0}) is None  # no epoch: someone else's flat line


def test_an_output_folder_reads_its_newest_checkpoint(tmp_path, capsys):
    out = output_folder(tmp_path / "hf_output")
    series, counts = load_series(out)
    assert series.name == "hf_output" and series.step == 20 and counts.bad == 0
    assert [e.step for e in series.evals] == [20]
    # A checkpoint folder and the file itself name that checkpoint's history.
    assert load_series(out / "checkpoint-10")[0].step == 10
    assert load_series(out / "checkpoint-5" / "trainer_state.json")[0].step == 5
    # The end of training: the output folder's own trainer_state.json, once newer, is the whole run.
    write_state(out / "trainer_state.json", state(100))
    finished, _ = load_series(out)
    assert finished.step == 100 and finished.state == "finished" and finished.total_steps == 100
    assert cli.main(["export", str(out / "checkpoint-20"), "-o", str(tmp_path / "c.csv")]) == 0
    rows = (tmp_path / "c.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 1 + 2  # the curves: steps 10 and 20, val at 20
    assert rows[2].split(",")[:3] == ["20", "2.3", "2.1999999999999997"]
    assert cli.main(["export", str(out / "checkpoint-20"), "-o", str(tmp_path / "c.csv"), "--records"]) == 0
    rows = (tmp_path / "c.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 1 + 3  # two train entries, one eval


def test_view_of_an_output_folder_gets_past_the_path_checks(tmp_path, capsys, monkeypatch):
    out = output_folder(tmp_path / "hf_output")
    monkeypatch.setattr("sys.stdout.isatty", lambda: False, raising=False)
    code = cli.main(["view", str(out)])  # no terminal here: the one line that says so, not a path error
    err = capsys.readouterr().err
    assert code != 0 and "terminal" in err and "hf_output" in err and "trainer_state" not in err


def _fifo(tmp_path):
    path = tmp_path / "fifo" / "trainer_state.json"
    path.parent.mkdir()
    os.mkfifo(path)
    return path


MALFORMED = {
    "not JSON": b"{\"log_history\": [",
    "a list": b"[1, 2, 3]",
    "no log_history": b"{\"global_step\": 3}",
    "log_history a string": b"{\"log_history\": \"many\"}",
    "nested too deep": b"{\"log_history\": " + b"[" * 200_000 + b"]" * 200_000 + b"}",
    "binary": b"\x00\x01\x02",
    "not UTF-8": b"{\"log_history\": [\xff]}",
    "a number of many digits": b"{\"log_history\": [], \"global_step\": " + b"9" * 5000 + b"}",
}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")
@pytest.mark.parametrize("kind", [*MALFORMED, "huge", "a FIFO"])
@pytest.mark.parametrize("command", ["view", "export"])
def test_a_malformed_trainer_state_is_one_line(tmp_path, capsys, monkeypatch, kind, command):
    if kind == "a FIFO":
        path = _fifo(tmp_path)
    else:
        path = tmp_path / "checkpoint-7" / "trainer_state.json"
        path.parent.mkdir()
        path.write_bytes(MALFORMED.get(kind, json.dumps(state(30)).encode()))
    if kind == "huge":
        monkeypatch.setattr(hugging_face, "MAX_STATE", 100)
    args = [command, str(path)] + (["-o", str(tmp_path / "x.csv")] if command == "export" else [])
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and len(err) < 400
    assert not (tmp_path / "x.csv").exists()


def test_entries_of_the_wrong_type_are_bad_lines(tmp_path):
    doc = state(30)
    doc.update(global_step="thirty", max_steps=[100], best_metric="low")
    doc["log_history"][1:1] = ["a string", {"loss": "high", "epoch": 0.1, "step": 11}, 7,
                               {"loss": 2.0, "epoch": 0.1, "step": "12"}, {"loss": float("nan"), "epoch": 0.1,
                                                                          "step": 13, "learning_rate": 1e-5}]
    path = tmp_path / "trainer_state.json"
    write_state(path, doc)
    series, counts = load_series(path)
    assert counts.bad == 4 and series.step == 30 and series.total_steps == 30  # no max_steps: its own length
    x, _ = series.loss.points(100)
    lx, ly = series.lr_curve.points(100)
    assert 13 not in list(x) and 13 in list(lx)  # a NaN loss: no loss point, not a bad line (its lr shows)
    assert ly[list(lx).index(13)] == pytest.approx(1e-5)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25)
entries = st.dictionaries(st.sampled_from(["loss", "learning_rate", "eval_loss", "epoch", "step", "eval_x", "grad_norm"]),
                          json_values, max_size=6)


@settings(max_examples=40, deadline=None)
@given(history=st.lists(entries | json_values, max_size=6), top=st.dictionaries(
    st.sampled_from(["global_step", "max_steps", "best_metric", "best_model_checkpoint"]), json_values))
def test_any_trainer_state_reads_or_says_why(tmp_path_factory, history, top):
    path = tmp_path_factory.mktemp("hyp") / "trainer_state.json"
    path.write_text(json.dumps({**top, "log_history": history}))
    try:
        series, counts = load_series(path)
    except LogError as e:
        assert "\n" not in str(e)
    else:
        assert counts.lines == len(history) and series.total_steps >= 0


# --- one decoder, one reserved-key rule ---------------------------------------------

def test_one_decoder_reads_our_lines_everywhere():
    assert ours.typed_record is records.from_dict and parsing.from_dict is records.from_dict
    assert own_loop.RESERVED is records.RESERVED
    good = {"type": "train", "step": 3, "train_loss": 2.0, "lr": 0.1, "tokens_per_sec": 1.0,
            "grad_norm": 1.0, "elapsed_s": 1.0, "acc": 0.5}
    got = records.from_dict(good)
    assert isinstance(got, records.TrainStep) and got.extra == {"acc": 0.5}
    # Untrusted: a field of the wrong type is no record, for the tests' decoder as for the reader's.
    for bad in ({"train_loss": "2.0"}, {"step": True}, {"lr": [1]}, {"nonfinite": "lr"}):
        assert records.from_dict({**good, **bad}) is None, bad
    assert records.from_dict({"type": "run_end", "step": 1, "status": "exploded", "elapsed_s": 1.0}) is None


def test_following_an_output_folder_moves_to_a_newer_checkpoint(tmp_path):
    from tui_trainer.logs.follow import Feed

    out = tmp_path / "hf_output"
    write_state(out / "checkpoint-10" / "trainer_state.json", state(10))
    feed = Feed(0, out, follow=True)
    assert feed.open() and feed.load().step == 10
    assert feed.read_new() == []  # nothing new
    write_state(out / "checkpoint-20" / "trainer_state.json", state(20))
    assert feed.read_new() is None  # read again: the newer checkpoint holds the whole history
    assert feed.reopen() and feed.load().step == 20 and feed.path.parent.name == "checkpoint-20"
    (out / "checkpoint-20" / "trainer_state.json").unlink()  # a checkpoint rotated away: not a reason to reload
    (out / "checkpoint-10" / "trainer_state.json").unlink()
    assert feed.read_new() == []
    feed.close()

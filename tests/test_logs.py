"""Reading logs back without the UI: formats, bad lines, resume, following."""
import dataclasses
import json
import math
import os
import threading
import time

import numpy as np
import pytest

from tui_trainer.logs import chunks
from tui_trainer.logs.load import apply_items, load_series, preview
from tui_trainer.logs.parsing import LineParser, TrainBlock
from tui_trainer.logs.paths import LogError, resolve
from tui_trainer.logs.source import LogSource
from tui_trainer.logs.tail import Tail
from tui_trainer.records import Eval, RunEnd, RunStart, Sample, TrainStep
from tui_trainer.run.log_writer import JsonlSink, dumps
from tui_trainer.curves.series import RunSeries


def write_run(path, steps=50, eval_every=10, loss=lambda s: 4.0 - s / 100, session=None, end=True):
    """A deterministic run log in our own format (no training needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sink = JsonlSink(path)
    sink.emit(RunStart(step=0, run_name=path.parent.name, config={}, n_params=10, device="cpu",
                       total_steps=steps, time=0.0))
    for s in range(1, steps + 1):
        sink.emit(TrainStep(step=s, train_loss=loss(s), lr=1e-3 * s / steps, tokens_per_sec=1000.0,
                            grad_norm=0.5, elapsed_s=s * 0.1, tokens=s * 64, time=float(s)))
        if s % eval_every == 0:
            sink.emit(Eval(step=s, val_loss=loss(s) + 0.1, train_loss=loss(s), elapsed_s=s * 0.1, time=float(s)))
            sink.emit(Sample(step=s, prompt="def ", text=f"sample at {s}", time=float(s)))
    if end:
        sink.emit(RunEnd(step=steps, status="finished", elapsed_s=steps * 0.1, time=float(steps)))
    sink.close()
    return path


def raw_points(curve):
    return curve.recent.view()


def test_own_log_loads_with_every_figure(tmp_path):
    log = write_run(tmp_path / "run1" / "losses.jsonl")
    series, counts = load_series(tmp_path / "run1")
    assert series.name == "run1" and series.state == "finished"
    x, y = raw_points(series.loss)
    assert list(x) == list(range(1, 51)) and y[0] == pytest.approx(3.99)
    assert [e.step for e in series.evals] == [10, 20, 30, 40, 50]
    assert series.sample() == (50, "sample at 50", 5, 5)
    assert series.tokens_per_sec == 1000.0 and series.step == 50 and series.total_steps == 50
    assert counts.bad == 0 and counts.plottable == 55
    assert resolve(tmp_path / "run1") == log


def test_bulk_load_matches_record_by_record(tmp_path):
    log = write_run(tmp_path / "r" / "losses.jsonl", steps=6000, eval_every=1000,
                    loss=lambda s: 3 + math.sin(s / 50))
    bulk, _ = load_series(log)
    one = RunSeries("r")
    parser = LineParser(bulk=False)
    apply_items(one, parser.feed(log.read_bytes().split(b"\n")))
    for width in (80, 200):
        for a, b in zip(bulk.train_points(width), one.train_points(width)):
            np.testing.assert_allclose(a, b)
        for a, b in zip(bulk.train_points(width, smooth=True), one.train_points(width, smooth=True)):
            np.testing.assert_allclose(a, b)
        for a, b in zip(bulk.lr_points(width), one.lr_points(width)):
            np.testing.assert_allclose(a, b)
    assert bulk.step == one.step == 6000 and len(bulk.evals) == len(one.evals) == 6


def test_lesson_format_plots(tmp_path):
    log = tmp_path / "losses.jsonl"
    log.write_text("".join(json.dumps({"step": s, "train_loss": 5 - s / 10, "lr": 1e-3}) + "\n"
                           for s in range(1, 21)))
    series, counts = load_series(log)
    x, y = raw_points(series.loss)
    assert list(x) == list(range(1, 21)) and y[-1] == pytest.approx(3.0)
    assert series.lr == pytest.approx(1e-3) and counts.bad == 0
    assert series.state == "finished" and series.total_steps == 20  # a whole file, read to its end


def test_hugging_face_log_history_plots(tmp_path):
    lines = [{"loss": 2.5, "grad_norm": 1.2, "learning_rate": 5e-5, "epoch": 0.1, "step": 10},
             {"loss": 2.1, "learning_rate": 4e-5, "epoch": 0.2, "step": 20},
             {"eval_loss": 1.9, "eval_runtime": 3.2, "eval_samples_per_second": 10.0, "epoch": 0.2, "step": 20},
             {"train_runtime": 50.0, "train_samples_per_second": 3.0, "total_flos": 1e12,
              "train_loss": 2.3, "epoch": 0.2, "step": 20}]
    log = tmp_path / "trainer_log.jsonl"
    log.write_text("\n".join(json.dumps(d) for d in lines))  # no final newline: still read
    series, counts = load_series(log)
    x, y = raw_points(series.loss)
    assert list(x) == [10, 20] and list(y) == [2.5, 2.1]  # the summary's average is not a point
    assert [(e.step, e.val) for e in series.evals] == [(20, 1.9)]
    assert series.lr == pytest.approx(4e-5)
    assert counts.ignored == 1 and counts.bad == 0 and not counts.torn_tail


def test_other_step_and_loss_keys(tmp_path):
    log = tmp_path / "x.jsonl"
    log.write_text('{"iter": 1, "loss": 3.0, "extra": [1, 2]}\n'
                   '{"global_step": 2, "learning_rate": 0.1}\n'
                   '{"iter": 3.0, "train_loss": 2.0, "val_loss": 2.5}\n'
                   '{"note": "no step here"}\n')
    series, counts = load_series(log)
    x, y = raw_points(series.loss)
    assert list(x) == [1] and list(y) == [3.0]
    assert list(raw_points(series.lr_curve)[0]) == [2]
    assert [(e.step, e.train, e.val) for e in series.evals] == [(3, 2.0, 2.5)]
    assert counts.ignored == 1


def test_bad_lines_are_skipped_and_counted(tmp_path):
    good = lambda s: json.dumps({"step": s, "train_loss": 1.0, "lr": 0.1})  # noqa: E731
    log = tmp_path / "l.jsonl"
    log.write_bytes("\n".join([
        good(1),
        "not json at all",                                   # 2
        "[1, 2, 3]",                                         # 3 not an object
        '{"step": 4, "train_loss": NaN, "lr": 0.1}',         # 4 NaN literal
        '{"step": 5, "train_loss": Infinity}',               # 5
        '{"step": "6", "train_loss": 1.0}',                  # 6 step of the wrong type
        '{"step": 7, "train_loss": "low"}',                  # 7 loss of the wrong type
        '{"step": true, "loss": 1.0}',                       # 8 a bool is not a step
        '{"type": "train", "step": 9, "train_loss": [1]}',   # 9
        '{"type": "eval", "step": 10, "val_loss": "x", "train_loss": 1, "elapsed_s": 1}',  # 10
        "",
        "   ",
        good(13),
    ]).encode() + b"\n\xff\xfe{garbage\n" + good(15).encode() + b"\n")
    series, counts = load_series(log)
    assert list(raw_points(series.loss)[0]) == [1, 13, 15]
    assert counts.bad == 10
    assert counts.first_bad == [2, 3, 4, 5, 6, 7, 8, 9, 10, 14]
    assert series.bad_lines == 10
    assert "10 bad lines skipped (line 2, 3, 4…)" in counts.describe()


def test_torn_last_line_is_not_a_bad_line(tmp_path):
    log = write_run(tmp_path / "r" / "losses.jsonl", steps=5, end=False)
    with open(log, "a") as f:
        f.write('{"type":"train","step":6,"train_lo')
    series, counts = load_series(log)
    assert series.step == 5 and counts.bad == 0 and counts.torn_tail


def test_resumed_run_supersedes_steps_after_its_checkpoint(tmp_path):
    log = tmp_path / "r" / "losses.jsonl"
    write_run(log, steps=10, eval_every=5, loss=lambda s: 1.0, end=False)  # killed after step 10
    sink = JsonlSink(log)
    sink.emit(RunStart(step=6, run_name="r", config={}, n_params=10, device="cpu", total_steps=12, resumed=True))
    for s in range(7, 13):
        sink.emit(TrainStep(step=s, train_loss=2.0, lr=1e-3, tokens_per_sec=1.0, grad_norm=0.1, elapsed_s=s))
    sink.emit(RunEnd(step=12, status="finished", elapsed_s=12.0))
    sink.close()
    series, _ = load_series(log)
    x, y = raw_points(series.loss)
    assert list(x) == list(range(1, 13))
    assert list(y) == [1.0] * 6 + [2.0] * 6
    assert [e.step for e in series.evals] == [5]  # the eval at 10 belonged to the superseded steps
    assert series.state == "finished"


def test_preview_samples_the_whole_file(tmp_path):
    log = write_run(tmp_path / "r" / "losses.jsonl", steps=3000, eval_every=500)
    pv = preview(log, "r", points=100)
    x, _ = raw_points(pv.loss)
    assert 80 <= len(x) <= 100 and x[0] < 100 and x[-1] > 2900 and np.all(np.diff(x) > 0)


def test_parser_makes_blocks_in_bulk_and_records_otherwise():
    lines = [dumps(TrainStep(step=s, train_loss=1.0, lr=0.1, tokens_per_sec=5.0, grad_norm=1.0,
                             elapsed_s=1.0)).encode() for s in (1, 2, 3)]
    items = LineParser(bulk=True).feed(lines)
    assert len(items) == 1 and isinstance(items[0], TrainBlock)
    assert list(items[0].steps) == [1, 2, 3] and items[0].last.tokens_per_sec == 5.0
    items = LineParser(bulk=False).feed(lines)
    assert [type(i) for i in items] == [TrainStep] * 3



def _train_line(s, loss=1.5, lr=0.01, **extra):
    d = TrainStep(step=s, train_loss=loss, lr=lr, tokens_per_sec=100.0, grad_norm=0.5, elapsed_s=s * 0.1,
                  tokens=s * 8, time=float(s)).to_dict()
    d.update(extra)
    return json.dumps(d, separators=(",", ":")).encode()


def _mixed_lines():
    """Our records, someone else's, and every kind of bad or odd line, interleaved."""
    lines = [dumps(RunStart(step=0, run_name="m", config={}, n_params=1, device="cpu", total_steps=90)).encode()]
    for s in range(1, 91):
        lines.append(_train_line(s, loss=3 - s / 100, lr=1e-3 * s))
        odd = {
            5: dumps(Eval(step=5, val_loss=2.5, train_loss=2.4, elapsed_s=0.5)).encode(),
            7: dumps(Sample(step=7, prompt="p", text="é ünïcode", time=1.0)).encode(),
            9: b"not json",
            11: b"",
            13: b"   ",
            15: b'{"step": 15, "train_loss": 2.0, "lr": 0.1}',                   # the lesson's format
            17: b'{"step": 17, "loss": 2.1, "learning_rate": 0.2, "epoch": 0.5}',  # Hugging Face
            19: b'{"step": 19, "eval_loss": 2.2}',
            21: _train_line(21, loss=None),                                      # a NaN step written as null
            23: b'{"type":"train","step":23.0,"train_loss":1,"lr":1,"time":0}',   # a float step
            25: b'{"type":"train","step":true,"train_loss":1,"lr":1}',           # a bool is not a step
            27: _train_line(27, note=1e300).replace(b"1e+300", b"1e400"),        # inf in an unknown field
            29: _train_line(29, extra="x"),                                      # an unknown field
            31: _train_line(31)[:-1] + b',"bad":"\xff"}',                        # not UTF-8
            33: _train_line(33) + _train_line(34),                               # two objects on one line
            35: b"[1, 2]",
            37: b'{"type":"train","step":37,"train_loss":"low","lr":1}',
            39: _train_line(39, lr=None),
            41: b'{"type":"pause","step":41,"time":1.0,"reason":"user"}',
            42: b'{"type":"resume","step":42,"time":1.0}',
            45: b'{"type":"eval","step":45,"val_loss":"x","train_loss":1,"elapsed_s":1}',
            47: b'{"note": "no step"}',
            49: b'{"type":"train","step":49,"train_loss":1,"lr":1,"grad_norm":1e999}',
            51: b'  ' + _train_line(51),
            53: _train_line(53) + b"\r",
        }.get(s)
        if odd is not None:
            lines.append(odd)
    lines.append(dumps(RunStart(step=60, run_name="m", config={}, n_params=1, device="cpu", total_steps=90,
                                resumed=True)).encode())
    lines += [_train_line(s, loss=1.0) for s in range(61, 80)]
    lines.append(dumps(RunEnd(step=79, status="finished", elapsed_s=7.9)).encode())
    return lines


def _flat(items):
    """Items as comparable tuples: every train point, then records in order."""
    out = []
    for it in items:
        if isinstance(it, TrainBlock):
            out += [("p", float(s), repr(float(l)), repr(float(r))) for s, l, r in zip(it.steps, it.losses, it.lrs)]
        else:
            out.append(repr(it))
    return out


@pytest.mark.parametrize("cutoffs", [None, [60]])
def test_fast_chunks_and_the_per_line_path_agree(cutoffs):
    lines = _mixed_lines()
    clean = (b"\n".join(lines[1:5]) + b"\n")  # train lines of ours only
    assert chunks.decode(clean, at_start=True) is not None  # the fast path is taken where it can be
    for size in (1, 2, 3, 7, 64, len(lines)):
        fast = LineParser(bulk=True, cutoffs=cutoffs)
        slow = LineParser(bulk=True, cutoffs=cutoffs)
        fast_chunks = 0
        for k in range(0, len(lines), size):
            chunk = lines[k:k + size]
            buf = b"".join(line + b"\n" for line in chunk)
            fast_chunks += chunks.decode(buf, at_start=False) is not None if fast.lineno else 0
            got, want = fast.feed_chunk(buf), slow.feed(chunk)
            assert _flat(got) == _flat(want), (size, k)
            assert [repr(i.last) for i in got if isinstance(i, TrainBlock)] == \
                   [repr(i.last) for i in want if isinstance(i, TrainBlock)]
        assert dataclasses.asdict(fast.counts) == dataclasses.asdict(slow.counts)
        assert (fast.lineno, fast.max_step, fast.resumes, fast.supersedes) == \
               (slow.lineno, slow.max_step, slow.resumes, slow.supersedes)
        if size <= 3:
            assert fast_chunks > 5
        assert slow.counts.bad == 9 and slow.counts.ignored == 1


def test_fast_load_keeps_the_last_lines_figures(tmp_path):
    log = write_run(tmp_path / "r" / "losses.jsonl", steps=3000, eval_every=700, end=False)
    series, counts = load_series(log)
    assert series.tokens_per_sec == 1000.0 and series.tokens == 3000 * 64 and series.step == 3000
    assert len(series.loss) == 3000 and counts.plottable == 3004 and counts.bad == 0
    assert [e.step for e in series.evals] == [700, 1400, 2100, 2800]


# --- following ---

def test_tail_holds_a_torn_line_until_complete(tmp_path):
    p = tmp_path / "l.jsonl"
    p.write_bytes(b'{"step": 1, "loss": 1}\n{"step": 2, "lo')
    t = Tail(p)
    assert t.open()
    assert t.read() == [b'{"step": 1, "loss": 1}']
    assert t.read() is None
    with open(p, "ab") as f:
        f.write(b'ss": 2}\n')
    assert t.read() == [b'{"step": 2, "loss": 2}']


def test_tail_notices_truncation_replacement_and_rewrite(tmp_path):
    p = tmp_path / "l.jsonl"
    p.write_bytes(b"a\nb\n")
    t = Tail(p)
    t.open()
    t.read()
    assert not t.changed()
    p.write_bytes(b"a\n")                     # truncated (shorter than what we read)
    assert t.changed()
    t.open()
    t.read()
    p.write_bytes(b"X\nb\nc\nd\n")            # rewritten in place, now longer
    assert t.changed()
    t.open()
    t.read()
    (tmp_path / "new").write_bytes(b"X\nb\nc\nd\n")
    os.replace(tmp_path / "new", p)          # same bytes, another file (log rotation)
    assert t.changed()


def wait_for(cond, source, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        source.poll_into_runs()
        if cond():
            return True
        time.sleep(0.02)
    return False


class Driven(LogSource):
    """A LogSource whose poll results are applied here the way the app applies them."""

    def poll_into_runs(self):
        for i, rec in self.poll():
            self.runs[i].apply(rec)


def test_follow_waits_for_the_file_then_picks_up_appends(tmp_path):
    log = tmp_path / "run" / "losses.jsonl"
    src = Driven([tmp_path / "run"], follow=True)
    src.prepare()
    src.start()
    try:
        assert wait_for(lambda: "waiting for" in src.status_text(), src)
        log.parent.mkdir()
        seen_ten = threading.Event()

        def writer():
            with open(log, "ab", buffering=0) as f:
                for s in range(1, 11):
                    f.write(dumps(TrainStep(step=s, train_loss=1.0 / s, lr=0.1, tokens_per_sec=1.0,
                                            grad_norm=1.0, elapsed_s=s)).encode() + b"\n")
                line = dumps(TrainStep(step=11, train_loss=0.05, lr=0.1, tokens_per_sec=1.0,
                                       grad_norm=1.0, elapsed_s=11)).encode() + b"\n"
                f.write(line[:20])              # a line written in two halves: the second half
                seen_ten.wait(10)               # only once the reader has shown the first ten
                f.write(line[20:])

        th = threading.Thread(target=writer)
        th.start()
        try:
            assert wait_for(lambda: src.runs[0].step == 10, src), (src.runs[0].step, src.status_text(),
                                                                    src.feeds[0].describe(), log.stat().st_size)
            # the half line is held back, not counted as bad and not applied
            assert src.runs[0].bad_lines == 0 and src.runs[0].step == 10
        finally:
            seen_ten.set()
            th.join()
        assert wait_for(lambda: src.runs[0].step == 11, src)
        assert src.runs[0].bad_lines == 0 and src.feeds[0].counts.bad == 0
        x, y = raw_points(src.runs[0].loss)
        assert list(x) == list(range(1, 12)) and y[-1] == 0.05
        assert "waiting" not in src.status_text()
    finally:
        src.close()


def test_follow_a_run_folder_made_while_it_is_looked_for(tmp_path, monkeypatch):
    """The race behind the flaky test above: the folder appears between the
    watcher's first look for it and the next; it must be taken as a run
    folder to wait in, never as the log itself ("... is not a regular file",
    after which the feed was never read again)."""
    run = tmp_path / "run"
    src = Driven([run], follow=True)
    src.prepare()
    real_stat, made = os.stat, []

    def stat(path, *args, **kwargs):
        try:
            return real_stat(path, *args, **kwargs)
        except FileNotFoundError:
            if os.fspath(path) == os.fspath(run) and not made:
                made.append(True)  # made right after the watcher found nothing
                write_run(run / "losses.jsonl", steps=3, end=False)
            raise

    monkeypatch.setattr(os, "stat", stat)
    src.start()
    try:
        assert wait_for(lambda: src.runs[0].step == 3 or src.feeds[0].error, src)
        assert made and src.feeds[0].error is None, src.status_text()
        assert src.runs[0].step == 3 and src.feeds[0].path == run / "losses.jsonl"
    finally:
        src.close()


def test_follow_rereads_a_truncated_file(tmp_path):
    log = write_run(tmp_path / "r" / "losses.jsonl", steps=30, end=False, loss=lambda s: 1.0)
    src = Driven([log], follow=True)
    src.prepare()
    assert src.runs[0].step == 30 and len(src.runs[0].evals) == 3
    src.start()
    try:
        log.write_text("")  # truncated: a rerun writing the same path
        write_run(log, steps=5, eval_every=5, loss=lambda s: 2.0, end=False)
        assert wait_for(lambda: src.runs[0].step == 5, src)
        x, y = raw_points(src.runs[0].loss)
        assert list(x) == [1, 2, 3, 4, 5] and set(y) == {2.0}
        assert [e.step for e in src.runs[0].evals] == [5]
        assert src.resets == 1
    finally:
        src.close()


def test_follow_rereads_when_a_resume_supersedes_steps(tmp_path):
    log = write_run(tmp_path / "r" / "losses.jsonl", steps=10, eval_every=5, loss=lambda s: 1.0, end=False)
    src = Driven([log], follow=True)
    src.prepare()
    src.start()
    try:
        with open(log, "a") as f:
            f.write(dumps(RunStart(step=6, run_name="r", config={}, n_params=1, device="cpu",
                                   total_steps=12, resumed=True)) + "\n")
            f.write(dumps(TrainStep(step=7, train_loss=2.0, lr=1e-3, tokens_per_sec=1.0, grad_norm=0.1,
                                    elapsed_s=7)) + "\n")
        assert wait_for(lambda: src.resets == 1 and src.runs[0].step == 7, src)
        x, y = raw_points(src.runs[0].loss)
        assert list(x) == list(range(1, 8)) and list(y) == [1.0] * 6 + [2.0]
    finally:
        src.close()


# --- paths ---

def test_resolve_names_the_problem(tmp_path):
    with pytest.raises(LogError, match="does not exist"):
        resolve(tmp_path / "nope")
    (tmp_path / "outputs" / "run-a").mkdir(parents=True)
    write_run(tmp_path / "outputs" / "run-b" / "losses.jsonl", steps=2)
    with pytest.raises(LogError, match=r"folder without losses.jsonl; it holds runs \(run-b\)"):
        resolve(tmp_path / "outputs")
    with pytest.raises(LogError, match="folder without losses.jsonl; pass a run folder"):
        resolve(tmp_path / "outputs" / "run-a")
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04\x00\x00binary")
    with pytest.raises(LogError, match="binary file"):
        resolve(tmp_path / "model.pt")


def test_a_log_ending_paused_loads_paused(tmp_path):
    """Train points read before a pause record must not set the run back to running."""
    from tui_trainer.records import Paused, Resumed, Status
    log = write_run(tmp_path / "r" / "losses.jsonl", steps=30, eval_every=30, end=False)
    with open(log, "a") as f:
        f.write(dumps(Paused(step=30)) + "\n")
    series, _ = load_series(log)
    assert series.state == "paused" and series.step == 30 and len(series.loss) == 30
    assert series.tokens_per_sec == 1000.0  # the last train line's own figures still reach the status
    with open(log, "a") as f:
        f.write(dumps(Resumed(step=30)) + "\n")
        f.write(dumps(TrainStep(step=31, train_loss=1.0, lr=0.1, tokens_per_sec=1.0, grad_norm=1.0,
                                elapsed_s=31)) + "\n")
        f.write(dumps(Status(step=31, state="evaluating")) + "\n")
    series, _ = load_series(log)
    assert series.state == "evaluating" and series.step == 31 and len(series.loss) == 31

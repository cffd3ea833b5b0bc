import json
import math

from tui_trainer.records import BadStep, Eval, RunEnd, TrainStep, from_dict
from tui_trainer.logs import ReadCounts, iter_jsonl
from tui_trainer.run.log_writer import JsonlSink, dumps


def strict_loads(line):
    def reject(name):
        raise ValueError(name)

    return json.loads(line, parse_constant=reject)


def test_nan_and_inf_are_written_as_null_with_a_flag(tmp_path):
    sink = JsonlSink(tmp_path / "l.jsonl")
    sink.emit(TrainStep(step=1, train_loss=math.nan, lr=1e-3, tokens_per_sec=1.0, grad_norm=math.inf, elapsed_s=0.1))
    sink.close()
    line = (tmp_path / "l.jsonl").read_text().strip()
    assert "NaN" not in line and "Infinity" not in line
    d = strict_loads(line)
    assert d["train_loss"] is None and d["grad_norm"] is None
    assert sorted(d["nonfinite"]) == ["grad_norm", "train_loss"]
    back = from_dict(d)
    assert isinstance(back, TrainStep) and math.isnan(back.train_loss) and back.lr == 1e-3


def test_every_record_has_type_and_step_and_roundtrips():
    for rec in (Eval(step=3, val_loss=1.5, train_loss=1.4, elapsed_s=2.0),
                BadStep(step=4, train_loss=None, grad_norm=None, consecutive=1),
                RunEnd(step=5, status="finished", elapsed_s=9.0)):
        d = strict_loads(dumps(rec))
        assert d["type"] == rec.type and d["step"] == rec.step
        assert from_dict(d) == rec


def test_reader_tolerates_torn_last_line_and_counts_bad_lines(tmp_path):
    p = tmp_path / "l.jsonl"
    p.write_text('{"type":"train","step":1}\nnot json\n[1,2]\n{"step": NaN}\n\n{"type":"train","step":2}\n{"type":"tr')
    stats = ReadCounts()
    got = list(iter_jsonl(p, stats))
    assert [d["step"] for d in got] == [1, 2]
    assert stats.bad == 3 and stats.torn_tail
    assert stats.first_bad == [2, 3, 4]


def test_sink_appending_after_torn_line_starts_a_new_line(tmp_path):
    p = tmp_path / "l.jsonl"
    p.write_text('{"type":"train","step":1}\n{"type":"tr')
    sink = JsonlSink(p)
    sink.emit(RunEnd(step=2, status="stopped", elapsed_s=1.0))
    sink.close()
    stats = ReadCounts()
    got = list(iter_jsonl(p, stats))
    assert [d["type"] for d in got] == ["train", "run_end"]
    assert stats.bad == 1  # the torn fragment is now a complete bad line, not glued to ours


def test_from_dict_ignores_foreign_and_unknown():
    assert from_dict({"type": "nope", "step": 1}) is None
    assert from_dict({"step": 1, "train_loss": 2.0}) is None
    rec = from_dict({"type": "run_end", "step": 1, "status": "finished", "elapsed_s": 1.0, "extra": 5})
    assert isinstance(rec, RunEnd)

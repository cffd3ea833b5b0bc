"""Settings, data paths and model sizes that cannot train are refused up front:
one ``error:`` line, exit status 2, nothing written (issue 12 items 4, 7, 8;
issue 11 point 5; issue 13 first bullet: defaults that fit a short run)."""
from __future__ import annotations

import errno
import json
import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from tui_trainer import cli
from tui_trainer.config import FIELDS, TrainConfig, UserError, make_config
from tui_trainer.train.data import load_corpus

# Small and short, with every cadence given, so that a setting which wrongly
# passes validation trains for a moment instead of running the demo.
TINY_FLAGS = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--context-length", "16",
              "--batch-size", "4", "--eval-batches", "2", "--sample-tokens", "8", "--steps", "2",
              "--eval-every", "2", "--warmup-steps", "0", "--log-every", "1"]
SHORT_RUN = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--context-length", "16",
             "--batch-size", "4", "--eval-batches", "2", "--sample-tokens", "8"]

FLOAT_FIELDS = ["val_fraction", "dropout", "max_lr", "min_lr", "weight_decay", "beta1", "beta2",
                "grad_clip", "temperature", "time_budget"]


def _tree(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*"))


def assert_refused(argv, tmp_path, monkeypatch, capsys, needle, *, out=True):
    """cli.main(argv) exits 2 with one ``error:`` line holding ``needle`` and
    writes nothing: no --out folder, nothing under the cwd's outputs/."""
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    out_args = ["--out", str(tmp_path / "run")] if out else []
    code = cli.main(["train", "--headless", *TINY_FLAGS, *argv, *out_args])
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "outputs").exists()
    assert _tree(tmp_path) == before
    return lines[0]


# --- every float: NaN and infinities -------------------------------------------------

def test_float_field_list_is_every_float_setting():
    from tui_trainer.config import field_types

    assert sorted(n for n, t in field_types().items() if t.base is float) == sorted(FLOAT_FIELDS)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_nonfinite_float_is_refused_before_anything_is_written(name, value, tmp_path, monkeypatch, capsys):
    flag = "--" + name.replace("_", "-")
    line = assert_refused([f"{flag}={value}"], tmp_path, monkeypatch, capsys, flag)
    assert "Traceback" not in line


def test_nonfinite_float_in_a_toml_config_is_refused(tmp_path, monkeypatch, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text("max_lr = nan\ntemperature = inf\n")
    assert_refused(["--config", str(toml)], tmp_path, monkeypatch, capsys, "--max-lr must be a finite number")
    toml.write_text("beta2 = -inf\n")
    assert_refused(["--config", str(toml)], tmp_path, monkeypatch, capsys, "--beta2")


# --- ranges of the other settings ------------------------------------------------------

CLI_RANGE_CASES = {
    "beta1 above 1": (["--beta1", "2"], "--beta1 must be in [0, 1)"),
    "beta1 exactly 1": (["--beta1", "1"], "--beta1 must be in [0, 1)"),
    "negative beta2": (["--beta2=-1"], "--beta2 must be in [0, 1)"),
    "seed beyond 64 bits": (["--seed", str(2**64)], "--seed"),
    "empty sample prompt": (["--sample-prompt="], "--sample-prompt is empty"),
    "temperature that overflows the logits": (["--temperature", "1e-40"], "--temperature"),
    "empty data path": (["--data="], "--data is empty"),
    "width no machine can hold": (["--n-embd", "1000000"], "parameters"),
}


@pytest.mark.parametrize("case", list(CLI_RANGE_CASES))
def test_out_of_range_setting_is_one_line(case, tmp_path, monkeypatch, capsys):
    args, needle = CLI_RANGE_CASES[case]
    assert_refused(args, tmp_path, monkeypatch, capsys, needle)


def test_empty_out_is_refused_not_the_current_folder(tmp_path, monkeypatch, capsys):
    assert_refused(["--out="], tmp_path, monkeypatch, capsys, "--out is empty", out=False)


# These would hang or kill the process before the fix, so they are checked
# on the config alone.
@pytest.mark.parametrize("values, needle", [
    ({"steps": 10**13}, "--steps"),
    ({"sample_tokens": 10**9}, "--sample-tokens"),
    ({"threads": 100_000}, "--threads"),
    ({"n_embd": 1_000_000, "n_layer": 100, "n_head": 4}, "parameters"),
    ({"vocab_size": 2**40}, "--vocab-size"),
    ({"steps": None}, "steps"),
])
def test_settings_that_can_only_be_typos_are_refused(values, needle):
    with pytest.raises(UserError, match=needle.replace("-", r"\-")) as e:
        make_config(values)
    assert "\n" not in str(e.value)


# --- field types, written once ---------------------------------------------------------

def test_field_types_come_from_the_annotations():
    from tui_trainer.config import FieldType, choices, field_types, flag_type

    types_ = field_types()
    assert set(types_) == set(FIELDS)
    assert types_["min_lr"] == FieldType(float, True, None)
    assert types_["steps"] == FieldType(int, False, None)
    assert types_["bias"] == FieldType(bool, False, None)
    assert types_["data"] == FieldType(str, True, None)
    assert flag_type("dtype") is str and flag_type("top_k") is int and flag_type("beta1") is float
    assert choices("dtype") == ("auto", "fp32", "bf16", "fp16")
    assert choices("device") is None
    assert FIELDS["dtype"].default in choices("dtype")
    assert all(t.base in (bool, int, float, str) for t in types_.values())


def test_closed_set_is_validated_from_its_literal():
    from tui_trainer.config import choices

    for value in choices("dtype"):
        assert make_config({"dtype": value}).dtype == value
    with pytest.raises(UserError, match="auto, fp32, bf16 or fp16"):
        make_config({"dtype": "fp8"})


def test_an_int_for_a_float_setting_becomes_a_float():
    cfg = make_config({"max_lr": 1, "min_lr": 0})
    assert isinstance(cfg.max_lr, float) and isinstance(cfg.min_lr, float)
    with pytest.raises(UserError, match="must be int"):
        make_config({"steps": 3.0})
    with pytest.raises(UserError, match="must be int"):
        make_config({"steps": True})


# --- data paths that are not regular files ---------------------------------------------

def _data_error(path) -> str:
    with pytest.raises(UserError) as e:
        load_corpus(TrainConfig(data=str(path)))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def _guarded(fn, fifo: Path):
    """Run ``fn`` in a thread.  If it opens ``fifo`` for reading (a reader
    shows up while it has not returned), unblock it and fail: --data must
    never open a FIFO.  No timing is asserted: a slow machine just waits."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    while True:
        t.join(2.0)
        if not t.is_alive():
            break
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # succeeds only if a reader is waiting
        except OSError as e:
            if e.errno == errno.ENXIO:
                continue  # no reader: still busy with something else
            raise
        os.close(fd)
        t.join()
        pytest.fail(f"{fifo} was opened for reading; a FIFO as --data must be refused without opening it")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def test_fifo_as_data_is_named_at_once(tmp_path, monkeypatch, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    monkeypatch.chdir(tmp_path)
    code = _guarded(lambda: cli.main(["train", "--headless", *TINY_FLAGS, "--data", str(fifo),
                                      "--out", str(tmp_path / "run")]), fifo)
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and "is a FIFO (named pipe), not a regular file" in lines[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "outputs").exists()


def test_fifo_as_config_is_named_at_once(tmp_path):
    from tui_trainer.config import load_toml

    fifo = tmp_path / "c.toml"
    os.mkfifo(fifo)

    def load():
        with pytest.raises(UserError, match="is a FIFO") as e:
            load_toml(fifo)
        return e

    _guarded(load, fifo)


@pytest.mark.parametrize("dev", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_character_device_as_data_is_named(dev):
    if not os.path.exists(dev) or not stat.S_ISCHR(os.stat(dev).st_mode):
        pytest.skip(f"no {dev} here")
    msg = _data_error(dev)
    assert "is a character device, not a regular file" in msg and "empty" not in msg


def test_socket_as_data_is_named(tmp_path):
    path = tmp_path / "s"
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(path))
    except OSError:
        pytest.skip("cannot bind a unix socket here (path too long?)")
    try:
        assert "is a socket" in _data_error(path)
    finally:
        s.close()


def test_symlink_loops_are_named(tmp_path):
    os.symlink("self", tmp_path / "self")
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    for p in (tmp_path / "self", tmp_path / "a", tmp_path / "a" / "x.txt"):
        msg = _data_error(p)
        assert "symbolic link loop" in msg and "not found" not in msg, msg


def test_dangling_symlink_names_its_target(tmp_path):
    target = tmp_path / "moved-away.txt"
    os.symlink(target, tmp_path / "link")
    msg = _data_error(tmp_path / "link")
    assert f"is a broken symbolic link to {target}" in msg


def test_missing_and_directory_data_keep_their_messages(tmp_path):
    assert "not found" in _data_error(tmp_path / "nope.txt")
    assert "not found" in _data_error(tmp_path / "nope" / "deeper.txt")
    assert "is a directory" in _data_error(tmp_path)
    (tmp_path / "empty.txt").write_bytes(b"")
    assert "is empty" in _data_error(tmp_path / "empty.txt")


def test_proc_file_is_not_called_empty():
    p = Path("/proc/self/status")
    if not p.exists() or p.stat().st_size != 0:
        pytest.skip("no zero-size /proc files here")
    msg = _data_error(p)
    assert "reports no size" in msg and "is empty" not in msg


def test_symlink_to_a_good_file_still_trains_on_it(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("hello world, " * 100)
    os.symlink(real, tmp_path / "link.txt")
    corpus = load_corpus(TrainConfig(data=str(tmp_path / "link.txt"), context_length=16))
    assert corpus.n_tokens == len(real.read_bytes())


# --- memory ---------------------------------------------------------------------------

def test_model_too_big_for_any_machine_is_one_line():
    from tui_trainer.train.memory import check_fits

    cfg = TrainConfig(n_embd=1_000_000, n_layer=100)  # not validated: check_fits alone
    with pytest.raises(UserError) as e:
        check_fits(cfg, 256, "cpu")
    msg = str(e.value)
    assert "\n" not in msg
    assert "parameters" in msg and "memory" in msg and "--n-embd" in msg


def test_check_fits_against_a_given_memory_size():
    from tui_trainer.train.memory import check_fits

    cfg = TrainConfig(n_embd=4096, n_layer=8, n_head=8)  # ~1.6e9 params: ~26 GB with AdamW
    with pytest.raises(UserError, match="lower --n-embd or --n-layer"):
        check_fits(cfg, 256, "cpu", total_bytes=8 << 30)
    check_fits(cfg, 256, "cpu", total_bytes=1 << 40)
    check_fits(cfg, 256, "cuda", total_bytes=8 << 30)  # not RAM: not checked here
    with pytest.raises(UserError, match="4 processes"):
        check_fits(cfg, 256, "cpu", processes=4, total_bytes=64 << 30)
    huge_batch = TrainConfig(batch_size=100_000_000)
    with pytest.raises(UserError, match=r"lower --batch-size \(raise --grad-accum to keep the tokens per step\) "
                                        "or --context-length"):
        check_fits(huge_batch, 256, "cpu", total_bytes=64 << 30)


def test_a_cpu_run_of_a_gigabyte_or_more_says_its_memory_estimate():
    """--preset gpt2-124m on a CPU: the first line says how much memory it
    will take of the machine's, as check_fits counts it; the demo says nothing."""
    from tui_trainer.presets import PRESETS
    from tui_trainer.train.memory import memory_note

    big = TrainConfig(**{k: v for k, v in PRESETS["gpt2-124m"].items() if k in TrainConfig.__dataclass_fields__})
    note = memory_note(big, 256, "cpu", total_bytes=24 << 30)
    assert note is not None and note.startswith("memory: at least ") and "of this machine's 24.0 GiB" in note, note
    assert "1.3 GiB weights, gradients and AdamW state" in note and "\n" not in note, note
    assert "2 processes" in memory_note(big, 256, "cpu", processes=2, total_bytes=24 << 30)
    assert memory_note(big, 256, "cuda", total_bytes=24 << 30) is None  # not RAM
    assert memory_note(TrainConfig(), 256, "cpu", total_bytes=24 << 30) is None


def test_demo_model_fits_this_machine():
    from tui_trainer.train.memory import check_fits

    check_fits(make_config({}), 256, "cpu")


def test_parameter_estimate_matches_the_model():
    from tui_trainer.train.memory import estimate_params
    from tui_trainer.train.model import GPT, GPTConfig

    cfg = make_config({})
    model = GPT(GPTConfig(vocab_size=256, context_length=cfg.context_length, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd))
    real = sum(p.numel() for p in model.parameters())
    assert abs(estimate_params(cfg, 256) - real) / real < 0.05


# --- defaults that fit the run ---------------------------------------------------------

def test_three_step_run_trains_with_fitted_defaults(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code = cli.main(["train", "--headless", "--steps", "3", *SHORT_RUN, "--out", str(out_dir)])
    _, err = capsys.readouterr()
    assert code == 0, err
    recs = [json.loads(l) for l in (out_dir / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["type"] == "train"] == [1, 2, 3]
    assert recs[-1]["type"] == "run_end" and recs[-1]["status"] == "finished"
    assert any(r["type"] == "sample" for r in recs)


@pytest.mark.parametrize("steps", [1, 3, 30, 100, 1000])
def test_short_runs_get_defaults_that_fit(steps):
    cfg = make_config({"steps": steps})
    assert cfg.warmup_steps < steps or cfg.warmup_steps == 0
    assert 1 <= cfg.log_every <= 10 and 1 <= cfg.eval_every <= steps
    assert cfg.ckpt_every == cfg.eval_every
    if steps >= 10:
        assert steps // cfg.eval_every >= 2  # at least two evals, each with a sample
        assert steps // cfg.log_every >= 10


def test_demo_defaults_are_unchanged():
    cfg = make_config({})
    assert (cfg.steps, cfg.eval_every, cfg.warmup_steps, cfg.log_every, cfg.checkpoint_every) == \
        (1300, 260, 60, 10, None)
    long = make_config({"steps": 100_000})
    assert (long.eval_every, long.warmup_steps, long.log_every) == (260, 60, 10)


def test_explicit_cadence_is_kept_and_checked():
    with pytest.raises(UserError, match=r"--warmup-steps \(50\) is larger than --steps \(30\)"):
        make_config({"steps": 30, "warmup_steps": 50})
    cfg = make_config({"steps": 100, "eval_every": 500, "log_every": 50, "warmup_steps": 0})
    assert (cfg.eval_every, cfg.log_every, cfg.warmup_steps) == (500, 50, 0)


def test_resumed_config_keeps_its_saved_cadence():
    saved = make_config({"steps": 100}).to_dict()  # every key present, as in a checkpoint
    resumed = make_config({**saved, "steps": 2000})
    assert (resumed.eval_every, resumed.warmup_steps, resumed.log_every) == \
        (saved["eval_every"], saved["warmup_steps"], saved["log_every"])


# --- help text ---------------------------------------------------------------------------

def test_help_names_no_internal_function(capsys):
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "evaluate_model" not in out
    assert all("evaluate_model" not in f.metadata["help"] for f in FIELDS.values())


def test_defaults_that_help_cannot_show_plainly_have_show_default():
    assert FIELDS["sample_prompt"].metadata["show_default"].startswith("'def '")  # quoted: the space shows
    for name in ("eval_every", "warmup_steps", "log_every"):
        shown = FIELDS[name].metadata["show_default"]
        assert str(FIELDS[name].default) in shown and "steps" in shown


def test_a_wider_model_gets_a_learning_rate_that_suits_its_width():
    from tui_trainer.config import make_config

    assert make_config({}).max_lr == 1e-2  # the demo is unchanged
    assert make_config({"n_embd": 128}).max_lr == 5e-3
    assert make_config({"n_embd": 768, "n_head": 12}).max_lr == 8.3e-4
    assert make_config({"n_embd": 128, "max_lr": 1e-2}).max_lr == 1e-2  # given: kept
    assert make_config({"n_embd": 32}).max_lr == 1e-2  # narrower: the demo's


def test_help_says_how_the_learning_rate_follows_the_width(capsys):
    from tui_trainer import cli

    assert cli.main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "1e-2 x 64 / n_embd" in text

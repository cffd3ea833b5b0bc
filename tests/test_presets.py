"""--preset NAME: a named shape, overridden by any flag or TOML key given with it."""
from __future__ import annotations

import numpy as np
import pytest

from tui_trainer import cli
from tui_trainer.config import UserError, make_config
from tui_trainer.train.data import load_corpus
from tui_trainer.presets import PRESETS, WARMUP_FRACTION, Preset

GPT2 = dict(n_layer=12, n_head=12, n_embd=768, context_length=1024, max_lr=6e-4)


def from_argv(*argv):
    return cli.config_from_args(cli.build_parser().parse_args(["train", *argv]))


def test_gpt2_124m_sets_the_shape_lr_and_a_2_percent_warmup():
    c = make_config({"preset": "gpt2-124m", "steps": 5000})
    assert {k: getattr(c, k) for k in GPT2} == GPT2
    assert c.warmup_steps == 100 and c.preset == "gpt2-124m"
    assert from_argv("--preset", "gpt2-124m").warmup_steps == 26  # 2% of the default 1300 steps


def test_vocab_applies_to_token_data_and_byte_data_keeps_256(tmp_path):
    tokens = tmp_path / "tokens.bin"
    ids = np.arange(20_000, dtype=np.uint16) % 1000
    ids.tofile(tokens)
    c = make_config({"preset": "gpt2-124m", "data": str(tokens), "context_length": 64})
    assert c.vocab_size == 50304 and load_corpus(c).vocab_size == 50304
    text = tmp_path / "text.txt"
    text.write_bytes(b"hello world\n" * 2000)
    c = make_config({"preset": "gpt2-124m", "data": str(text), "context_length": 64})
    assert c.vocab_size is None and load_corpus(c).vocab_size == 256
    assert make_config({"preset": "gpt2-124m"}).vocab_size is None  # the embedded corpus is bytes too
    big = tmp_path / "big.bin"
    np.array([1, 2, 60000] * 10_000, dtype=np.uint16).tofile(big)
    with pytest.raises(UserError, match=r"token id 60000, outside --vocab-size 50304; pass --vocab-size 60001"):
        load_corpus(make_config({"preset": "gpt2-124m", "data": str(big), "context_length": 64}))


def test_flags_and_toml_override_the_preset(tmp_path):
    c = from_argv("--preset", "gpt2-124m", "--n-layer", "6", "--max-lr", "1e-3", "--warmup-steps", "5")
    assert (c.n_layer, c.max_lr, c.warmup_steps, c.n_embd) == (6, 1e-3, 5, 768)
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "gpt2-124m"\nn-head = 6\ncontext_length = 256\n')
    c = from_argv("--config", str(toml), "--n-embd", "384")
    assert (c.n_head, c.context_length, c.n_embd, c.n_layer, c.max_lr) == (6, 256, 384, 12, 6e-4)


def test_an_unknown_preset_is_one_line(tmp_path, capsys):
    assert cli.main(["train", "--headless", "--preset", "gpt9", "--out", str(tmp_path / "r")]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "gpt9" in err and "gpt2-124m" in err
    toml = tmp_path / "bad.toml"
    toml.write_text('preset = "gpt9"\n')
    assert cli.main(["train", "--headless", "--config", str(toml), "--out", str(tmp_path / "r")]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "gpt2-124m" in err
    assert not (tmp_path / "r").exists()


def test_help_lists_the_presets(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name, values in PRESETS.items():
        assert name in out and f"n_embd {values['n_embd']}" in out
    assert "warmup_steps 2% of steps" in out


def test_the_preset_names_agree():
    from typing import get_args

    from tui_trainer.config import choices

    assert set(get_args(Preset)) == set(PRESETS) == set(WARMUP_FRACTION) == set(choices("preset"))

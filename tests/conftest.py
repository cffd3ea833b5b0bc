from __future__ import annotations

import pytest

from tui_trainer.config import make_config

TINY = dict(n_layer=1, n_head=2, n_embd=32, context_length=16, batch_size=4, eval_batches=2,
            sample_tokens=8, steps=40, eval_every=20, warmup_steps=5, log_every=10)


@pytest.fixture
def tiny_cfg(tmp_path):
    """A model small enough that a few dozen steps take well under a second."""

    def make(**overrides):
        values = dict(TINY, out=str(tmp_path / "run"))
        values.update(overrides)
        return make_config(values)

    return make


@pytest.fixture(autouse=True)
def _token_cache(tmp_path_factory, monkeypatch):
    """Token ids made in a test are cached in a folder of its own, never in
    the user's ~/.cache/tui-trainer."""
    monkeypatch.setenv("TUI_TRAINER_CACHE", str(tmp_path_factory.mktemp("token-cache")))


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """A test that trains may move torch's thread count (the governor): the
    next test starts at the count this one found."""
    import sys

    torch = sys.modules.get("torch")  # only where a test imported it: the UI tests stay torch-free
    n = torch.get_num_threads() if torch is not None else None
    yield
    if n is not None:
        torch.set_num_threads(n)

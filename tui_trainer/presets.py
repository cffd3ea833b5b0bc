"""Named model shapes: ``--preset gpt2-124m`` (or ``preset = "gpt2-124m"`` in
a TOML) fills in the settings a common shape needs; a flag or TOML key given
alongside still wins, as the preset only supplies values that were not given.

Plain data and one function: nothing here imports torch or the config.
"""
from __future__ import annotations

from typing import Any, Literal

Preset = Literal["gpt2-124m"]

# GPT-2 small as nanoGPT trains it: 12 layers, 12 heads, 768 wide, 1024 tokens of
# context, the GPT-2 vocabulary padded to 50304 (a multiple of 128: faster kernels).
PRESETS: dict[str, dict[str, Any]] = {
    "gpt2-124m": {"n_layer": 12, "n_head": 12, "n_embd": 768, "context_length": 1024,
                  "vocab_size": 50304, "max_lr": 6e-4},
}
WARMUP_FRACTION = {"gpt2-124m": 0.02}  # warmup as a share of --steps


def describe() -> str:
    """The presets as ``--help`` lists them (``%%``: argparse formats help with %)."""
    return "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in values.items())
                     + f", warmup_steps {WARMUP_FRACTION[name] * 100:g}%% of steps"
                     for name, values in PRESETS.items())


def preset_values(values: dict[str, Any], default_steps: int) -> dict[str, Any]:
    """The settings ``values["preset"]`` supplies that ``values`` does not
    give itself ({} without a preset); the warmup is a share of ``values``'
    steps, else of ``default_steps``.  ``vocab_size`` applies to a ``.bin``
    of token ids only: byte-level data has 256 ids, and 50048 embedding rows
    no byte can reach would be ~38M parameters that never train.  An unknown
    name is left to ``config.validate``, which names the presets."""
    name = values.get("preset")
    if not isinstance(name, str) or name not in PRESETS:
        return {}
    out = dict(PRESETS[name])
    data = values.get("data")
    if not (isinstance(data, str) and data.endswith(".bin")):
        out.pop("vocab_size")
    steps = values.get("steps", default_steps)
    if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0:
        out["warmup_steps"] = round(WARMUP_FRACTION[name] * steps)
    return {k: v for k, v in out.items() if k not in values}

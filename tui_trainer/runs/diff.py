"""The settings that differ between runs."""
from __future__ import annotations

from typing import Any

from ..config import RESUMABLE_CHANGES
from .summary import RunSummary

NOT_SETTINGS = frozenset({"out", "name"})  # differ between any two runs: not a setting that made them differ


def settings_diff(summaries: list[RunSummary]) -> dict[str, list[Any]]:
    """The settings that differ between these runs (those that are runs, ``ok``)."""
    return config_diff([s.config for s in summaries if s.ok])


def config_diff(configs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The settings that differ: {key: [value in each config]} (None where a
    config does not have the key).  Those that change what is learned (model,
    data, optimiser) come first, then the ones a resume may change (cadences,
    sampling, device: ``config.RESUMABLE_CHANGES``), each in the order the
    configs list them.  Keys that name the run itself (``out``, ``name``) are
    left out."""
    keys: dict[str, None] = {}
    for c in configs:
        keys.update(dict.fromkeys(c))
    out: dict[str, list[Any]] = {}
    for k in keys:
        if k in NOT_SETTINGS:
            continue
        values = [c.get(k) for c in configs]
        if any(_differs(values[0], v) for v in values[1:]):
            out[k] = values
    return dict(sorted(out.items(), key=lambda kv: kv[0] in RESUMABLE_CHANGES))


def _differs(a: Any, b: Any) -> bool:
    return type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))) or a != b

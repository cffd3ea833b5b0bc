"""Hugging Face Trainer ``log_history``, written one entry per line.

Its train entries (``loss``, ``grad_norm``, ``learning_rate``, ``epoch``,
``step``) and eval entries (``eval_loss`` and other ``eval_*`` metrics) are
flat records: ``flat`` reads them (its key lists name ``loss``,
``learning_rate`` and ``eval_loss``).  What is Hugging Face's own is the
end-of-training summary (``train_runtime``, ``total_flos``, ...): its
``train_loss`` is the average over the run, not a point at its ``step``.
"""
from __future__ import annotations

from .base import IGNORED, Reading

SUMMARY_KEYS = ("train_runtime",)


def read(d: dict) -> Reading | None:
    if any(k in d for k in SUMMARY_KEYS):
        return IGNORED
    return None

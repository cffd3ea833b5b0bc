"""The log formats the viewer reads, one module each; adding a format is adding a file.

``ours`` (our own records), ``hugging_face`` (Trainer ``log_history`` entries,
one per line or in a ``trainer_state.json``: it also finds and reads those
files and ``checkpoint-N/`` folders) and ``flat`` (any flat JSONL with a step-like and a loss-like key, such as the
lesson's ``{"step", "train_loss", "lr"}``).
``nanogpt`` reads nanoGPT's printed log, text lines turned into objects first
(``nanogpt.from_text``).  Each line's object is offered to
them in ``FORMATS`` order; the first that answers reads it (see ``base.py``).
"""
from __future__ import annotations

from . import flat, hugging_face, nanogpt, ours
from .base import BAD, IGNORED, Point, Reading

FORMATS = (ours, hugging_face, nanogpt, flat)  # flat answers every object: it comes last

__all__ = ["BAD", "FORMATS", "IGNORED", "Point", "Reading", "read"]


def read(d: dict) -> Reading:
    """What the first format that knows ``d`` makes of it."""
    for fmt in FORMATS:
        got = fmt.read(d)
        if got is not None:
            return got
    return IGNORED

"""Reading run logs back: find them, parse them, follow them as they grow.

No Textual, no torch.  The modules, in reading order:

- ``paths``: which file a path names, and why it cannot be read (``LogError``);
- ``formats/``: one module per log format (ours, Hugging Face, flat JSONL);
- ``parsing``: lines to items (blocks of train points, records), bad lines counted;
- ``chunks``: the fast path of a big load, a chunk decoded at once by msgspec;
- ``resumes``: the one rule for records a resumed run supersedes;
- ``tail``: reading a file incrementally;
- ``load``: a whole log into a ``RunSeries``, and a quick preview of a big one;
- ``follow``: a per-file state machine and the watcher thread that follows them;
- ``source``: ``LogSource``, what the viewer shows;
- ``jsonl``: a log as plain dicts, for scripts and tests.
"""
from __future__ import annotations

from .jsonl import iter_jsonl, read_records
from .load import load_series
from .parsing import ReadCounts
from .paths import LogError
from .resumes import effective_records
from .source import LogSource

__all__ = ["LogError", "LogSource", "ReadCounts", "effective_records", "iter_jsonl", "load_series",
           "read_records"]

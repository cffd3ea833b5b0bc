"""A folder of runs at a glance: each run folder summarised from a few reads.

No Textual here.  ``scan(folder)`` lists the run folders directly inside
``folder`` as ``RunSummary`` rows (what the runs browser shows); a
``Scanner`` does the same again and again, cheaply, for a browser that keeps
its table up to date.

What is read of a log, never all of it:

- the head: its first line, the ``run_start`` (name, settings, start date);
- the tail: the last 64 KiB, more only when it holds no train line (step,
  last train loss, tokens, wall time, how it ended);
- the lines that can hold an eval, a ``run_start`` or a ``change`` (best val
  loss and its step, resumes, a changed total), found by a byte search for
  their keys; only those lines are parsed.  This pass is the only one that
  touches the whole file, it is separate (``Scanner.scan(evals=False)`` lists
  without it) and it is incremental: a log that grew is searched from where
  the last search stopped.

A run's status is ``running`` (or ``paused``) only when a process holds its
lock (``run.folder.is_live``), never guessed from the log; otherwise how its last
session ended (``run_end.status``: finished, stopped, diverged, failed,
killed), or ``crashed`` when that session wrote no ``run_end``.  A log that is
not ours (no ``run_start``) is ``log``; a log with no record yet is ``empty``.

A folder that cannot be listed as a run (no log, unreadable, a binary file)
is still returned, with ``problem`` saying why, so the browser can say what
it skipped; a folder name that is not UTF-8 is shown with its odd bytes as
``\\xNN`` (``records.clean_text``) and still read.

The modules, in reading order: ``summary`` (``RunSummary``), ``scanner`` (the
folder, each log's head), ``tail`` (its last records), ``evals`` (the best val
loss, from the eval lines alone), ``labels`` (short distinct names), ``diff``
(the settings that differ).
"""
from __future__ import annotations

from .diff import config_diff, settings_diff
from .labels import label, short_labels
from .scanner import Scanner, scan, summarise
from .summary import RunSummary

__all__ = ["RunSummary", "Scanner", "config_diff", "label", "scan", "settings_diff", "short_labels", "summarise"]

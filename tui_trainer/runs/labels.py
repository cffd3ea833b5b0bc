"""Short distinct labels for runs: the same in the runs table, the legend,
the eval table and the status lines."""
from __future__ import annotations

import re
from pathlib import Path

from .summary import RunSummary

LABEL_MAX = 12           # characters of a label: the eval table shows 12 of a run's name
# A name is untrusted (a log's run_start): its parts are the runs of at most PART_WORDS
# consecutive words among its last NAME_WORDS, so a name of thousands of words costs a
# few hundred parts, not millions (every run of words of 1500 words was 4 GB and a MemoryError).
PART_WORDS, NAME_WORDS = 8, 64
# A separator between the words of a name: - _ space /, but not the minus of 3e-4.
_SEP = re.compile(r"[_ /]+|(?<![0-9]e)-+")


def short_labels(names: list[str], limit: int = LABEL_MAX) -> list[str]:
    """The shortest distinct part of each name, in whole words.

    Each name gets the shortest run of its consecutive words that no other
    name holds (the later one when two are as short; a short number keeps the
    word before it): ``run-20261201-153012`` and
    ``run-20261201-160233`` become ``153012`` and ``160233``;
    ``gpt-lr3e-4-bs32`` and ``gpt-lr1e-3-bs32`` become ``lr3e-4`` and
    ``lr1e-3``; ``run-3`` and ``run-4`` stay as they are.  Two labels can
    never be the same, since each is a part no other name has; a name with
    no such part (the start of another name) gets its shortest ending that
    is no other's label, and a duplicate is kept whole.  A label longer than ``limit``
    keeps its end; labels that are still the same get ``#2``, ``#3``.
    """
    if len(names) < 2:
        return [_cut(n, limit) for n in names]
    parts = [_parts(n) for n in names]
    count: dict[str, int] = {}
    for ps in parts:
        for p in set(ps):
            count[p] = count.get(p, 0) + 1
    out: list[str | None] = []
    for name, ps in zip(names, parts):
        mine = [(_cost(p), -k, p) for k, p in enumerate(ps) if count[p] == 1]
        out.append(min(mine)[2] if mine else None)
    used = set(out)
    for i, (name, ps) in enumerate(zip(names, parts)):
        if out[i] is None:  # every part is in another name too (it is a prefix of one): any part not a label
            ends = [p for p in ps if name.endswith(p)]
            free = [(_cost(p), -k, p) for k, p in enumerate(ends) if p not in used]
            out[i] = min(free)[2] if free else name
            used.add(out[i])
    out = [_cut(x, limit) for x in out]
    seen: dict[str, int] = {}
    for k, x in enumerate(out):
        if x in seen:
            seen[x] += 1
            out[k] = f"{_cut(x, limit - 1 - len(str(seen[x])))}#{seen[x]}"
        else:
            seen[x] = 1
    return out


def _parts(name: str) -> list[str]:
    """Every run of at most ``PART_WORDS`` consecutive words among the last
    ``NAME_WORDS`` of ``name``, as written (separators kept), in order of their end."""
    spans = (_words(name) or [(0, len(name))])[-NAME_WORDS:]
    return [name[spans[i][0]:spans[j][1]] for j in range(len(spans)) for i in range(j, max(-1, j - PART_WORDS), -1)]


_NUMBER = re.compile(r"[0-9.eE+-]+")


def _cost(part: str) -> int:
    """Shorter is better, but a short number alone (``3``, ``3e-4``, ``0.1``)
    says little without the word before it (``run-3``, ``lr-3e-4``); a long one
    (a date, a time) is fine alone."""
    return len(part) + (10 if len(part) < 6 and _NUMBER.fullmatch(part) else 0)


def _words(name: str) -> list[tuple[int, int]]:
    spans, at = [], 0
    for m in _SEP.finditer(name):
        if m.start() > at:
            spans.append((at, m.start()))
        at = m.end()
    if at < len(name):
        spans.append((at, len(name)))
    return spans


def _cut(s: str, limit: int) -> str:
    return s if len(s) <= limit else "…" + s[len(s) - limit + 1:]


def label(summaries: list[RunSummary]) -> None:
    """Set each run's ``label`` from the names of the runs listed with it."""
    runs = [s for s in summaries if s.ok]
    for s, lab in zip(runs, short_labels([s.run_name or s.folder for s in runs])):
        s.label = lab
    for s in summaries:
        if not s.ok:
            s.label = _cut(s.folder, LABEL_MAX)
    forks = [s for s in runs if s.parent]
    listed = {_resolved(s.path): s for s in runs} if forks else {}
    for s in forks:  # a fork's parent: by its label when it is listed too
        p = listed.get(_resolved(Path(s.parent)))
        s.parent_label = p.label if p is not None else _cut(s.parent_name or s.parent, LABEL_MAX)
    for s in runs:
        chain, at = [s.label.lower()], s
        while at.parent and len(chain) < 32 and (at := listed.get(_resolved(Path(at.parent)))) is not None:
            chain.append(at.label.lower())
        s.family = "\0".join(reversed(chain))


def _resolved(p: Path) -> str:
    try:
        return str(p.resolve())
    except (OSError, RuntimeError, ValueError):
        return str(p)


def lineage(s: RunSummary) -> str:
    """The run's label, and for a fork its parent and the step: ``lr-half ← base@400``."""
    return f"{s.label} ← {s.parent_label or s.parent_name}@{s.fork_step}" if s.parent else s.label

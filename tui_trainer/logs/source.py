"""N log files as the dashboard's record source (no Textual here).

``ui/viewer.py`` shows what this reads; tests and the benchmark drive it
directly.  ``prepare()`` checks every path (``LogError`` for the user) and
loads small files at once, so the first frame is complete; big files show a
sampled preview first and load in the watcher thread (``follow.py``).
``poll()`` (UI thread) swaps in loaded series and returns the records
appended since.
"""
from __future__ import annotations

import queue
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..records import Record, TrainStep
from ..curves.series import RunSeries
from .follow import Feed, Watcher
from .formats.flat import STEP_KEYS, TRAIN_KEYS, VAL_KEYS
from .load import PREVIEW_POINTS, apply_items, has_plottable, preview
from .parsing import ReadCounts, TrainBlock
from .paths import LogError, is_loop, locate, resolve


class LogSource:
    """The viewer's source: the runs, their status, and what changed since the last poll."""

    can_steer = False
    SYNC_BYTES = 8 << 20  # files up to this size load before the first frame

    def __init__(self, paths: list[Path], follow: bool = False):
        self.follow = follow
        self.feeds = [Feed(i, Path(p), follow) for i, p in enumerate(paths)]
        self.runs: list[RunSeries] = [RunSeries(f.name) for f in self.feeds]
        self.queue: queue.Queue = queue.Queue()
        self.watcher: Watcher | None = None
        self.swapped = False   # a whole series was replaced since the UI last looked
        self.resets = 0        # series replaced by a re-read (truncation, replacement, resume)
        self.on_reset: Callable[[int], None] | None = None  # called (UI thread) before such a swap shows
        self._loaded_once = [False] * len(self.feeds)
        _unique_names(self.runs)

    def prepare(self) -> None:
        for feed in self.feeds:
            if locate(feed.arg) is not None or not self.follow or is_loop(feed.arg):
                resolve(feed.arg)  # a LogError naming what is wrong and the fix
                feed.open()
        for feed in self.feeds:
            if feed.tail is None:
                continue  # follow: waited for by the watcher
            if feed.tail.size <= self.SYNC_BYTES:
                try:
                    series = feed.load()
                except Exception as e:  # noqa: BLE001 - this file's error in the status line, as in the watcher
                    feed.fail(e)
                    continue
                assert series is not None
                self._install(feed.index, series)
            else:
                if not self.follow and not has_plottable(feed.tail.path):
                    raise nothing_to_plot(feed.tail.path, None)
                # Several big logs overlaid share one plot's columns: fewer points each.
                pv = preview(feed.tail.path, feed.name, max(250, PREVIEW_POINTS // len(self.feeds)))
                if pv is not None:
                    self._install(feed.index, pv, final=False)
            if not self.follow and feed.loaded and not feed.counts.plottable:
                raise nothing_to_plot(feed.tail.path, feed.counts)

    def start(self) -> None:
        if self.watcher is None:
            self.watcher = Watcher(self.feeds, self.queue, self.follow)
            self.watcher.start()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    def close(self) -> None:
        self.stop()
        if self.watcher is not None:
            self.watcher.join(timeout=2)
        for f in self.feeds:
            f.close()

    @property
    def done(self) -> bool:
        """Nothing is being read: without --follow, once every file is loaded
        (the watcher only looks whether they are still there)."""
        w = self.watcher
        return w is None or not w.is_alive() or (not self.follow and w.loaded)

    @property
    def result(self) -> Any:
        return None

    def send(self, command: Any) -> None:
        pass  # a log cannot be steered

    def _install(self, i: int, series: RunSeries, final: bool = True) -> None:
        old = self.runs[i]
        # Widgets redraw when a version moves: never let a fresh series repeat one.
        series.version += old.version + 1
        series.evals_version += old.evals_version + 1
        series.samples_seen += old.samples_seen + 1
        if final and self._loaded_once[i] or len(series.evals) < len(old.evals):
            self.resets += 1
            if self.on_reset is not None:
                self.on_reset(i)
        self._loaded_once[i] |= final
        self.runs[i] = series
        self.swapped = True
        _unique_names(self.runs)

    def poll(self) -> list[tuple[int, Record]]:
        out: list[tuple[int, Record]] = []
        while len(out) < 50_000:
            try:
                kind, i, payload = self.queue.get_nowait()
            except queue.Empty:
                break
            if kind == "look":
                self._looked(i)
            elif kind == "series":
                # Records queued before the swap are part of the old series.
                self._install(i, payload)
                out = [(j, r) for j, r in out if j != i]
            elif kind == "items":
                for it in payload:
                    if isinstance(it, TrainBlock):  # a big append: apply it directly
                        apply_items(self.runs[i], [it])
                        self.swapped = True
                    else:
                        if isinstance(it, TrainStep) and self.runs[i].state == "starting":
                            self.runs[i].state = "running"
                        out.append((i, it))
            self.runs[i].bad_lines = self.feeds[i].counts.bad
        return out

    def _looked(self, i: int) -> None:
        """Feed ``i``'s log came or went, or a process took or left its run's lock."""
        self.runs[i].version += 1
        self.swapped = True  # the status line and the banner say it at once

    def status_text(self) -> str:
        bits = [d for f in self.feeds if (d := f.describe())]
        n = sum(not f.gone for f in self.feeds)
        if self.follow and n:
            bits.insert(0, "following" + (f" {n} files" if n > 1 else ""))
        return " · ".join(bits)


def _unique_names(runs: list[RunSeries]) -> None:
    seen: dict[str, int] = {}
    for r in runs:
        if r.name in seen:
            seen[r.name] += 1
            r.name = f"{r.name}#{seen[r.name]}"
        else:
            seen[r.name] = 1


def nothing_to_plot(path: Path, counts: ReadCounts | None) -> LogError:
    detail = ""
    if counts is not None:
        detail = f" ({counts.lines:,} lines: {counts.bad:,} unreadable, {counts.ignored:,} without a step and a loss)"
    return LogError(f"{path} has no plottable record{detail}; expected JSON lines with a step "
                    f"({', '.join(STEP_KEYS)}) and a loss ({', '.join(TRAIN_KEYS + VAL_KEYS)}) or lr")

"""The headless printer: the lines the lesson's script prints, as a sink.

Plain lines only, no carriage returns, so a redirected log greps cleanly; to
a file or pipe the lines are ASCII (a sample's newlines and any non-ASCII
character as backslash escapes), to a terminal a sample's newlines show as ⏎.
Every line passes ``terminal.printable``: a control character in a sample, a
run name or a path shows as its escape (``\x1b``) and never drives the terminal.
The rate, ETA and MFU are the same smoothed figures the dashboard shows (a
``RunSeries`` is fed alongside), of training time only: an eval's and a
checkpoint's own time are on their lines ("took 0.40 s", "blocked 0.21 s,
write 1.3 s").
"""
from __future__ import annotations

import sys
from typing import TextIO

from ..fmt import fmt_count, fmt_duration, fmt_loss, fmt_mfu, fmt_value
from ..records import Ack, BadStep, Change, Checkpoint, Eval, LrJump, Paused, Record, Resumed, RunEnd, RunStart, Sample, Status, TrainStep
from ..curves.pauses import compile_failed, fmt_seconds
from ..curves.series import RunSeries
from ..terminal import printable


class ConsoleSink:
    def __init__(self, log_every: int = 10, stream: TextIO | None = None):
        self.log_every = max(1, log_every)
        self.stream = stream or sys.stdout
        try:
            self.terminal = self.stream.isatty()
        except (AttributeError, ValueError, OSError):
            self.terminal = False
        self.series = RunSeries()

    def _print(self, line: str) -> None:
        line = printable(line).replace("\n", "\\n")  # one line, whatever a name or an error holds
        if not self.terminal:
            line = line.encode("ascii", "backslashreplace").decode("ascii")
        print(line, file=self.stream, flush=True)

    def _sample_text(self, text: str) -> str:
        return text.replace("\n", "⏎") if self.terminal else text.replace("\\", "\\\\").replace("\n", "\\n")

    def emit(self, r: Record) -> None:
        compiling = self.series.pauses.going_on
        self.series.apply(r)
        if compiling is not None and compiling.state == "compiling" and compiling.ended is not None:
            # The compile's end (its step's record, or the status that says it failed): its own time.
            if not compiling.failed:  # a failed one is said by its status (below)
                self._print(f"compile | compiled in {fmt_seconds(compiling.seconds)}")
        if isinstance(r, Status) and compile_failed(r):
            self._print(f"note: {r.detail}")
        if isinstance(r, TrainStep):
            if r.step % self.log_every == 0 or r.step == 1:
                s = self.series
                total = f"/{s.total_steps}" if s.total_steps else ""
                sps, tps = s.rates()
                mfu = s.mfu()
                bits = [f"step {r.step:>6}{total}", f"loss {fmt_loss(r.train_loss)}", f"lr {r.lr:.2e}",
                        f"{fmt_count(tps)} tok/s" if tps == tps or sps != sps else f"{fmt_count(sps)} steps/s"]
                if mfu == mfu:
                    bits.append(f"MFU {fmt_mfu(mfu)}")
                bits.append(f"grad {fmt_value(r.grad_norm)}")
                eta = s.eta_s()
                if eta == eta:
                    bits.append(f"ETA {fmt_duration(eta)}")
                self._print(" | ".join(bits))
        elif isinstance(r, Eval):
            tag = " (forced)" if r.forced else ""
            train = fmt_loss(r.train_loss) if r.train_loss is not None or self.terminal else "-"  # absent: ASCII
            bpb = "" if r.val_bpb is None else f" | bpb {fmt_loss(r.val_bpb)}"
            took = self.series.pauses.so_far("evaluating", r.time)  # since its status record: its own time
            took_txt = "" if took is None else f" | took {fmt_seconds(took)}"
            self._print(f"eval {r.step:>6} | train {train} | val {fmt_loss(r.val_loss)}{bpb}{took_txt} | "
                        f"{r.elapsed_s:.1f}s{tag}")
        elif isinstance(r, Sample):
            tag = " (requested)" if r.requested else ""
            self._print(f"sample {r.step:>4}{tag} | " + self._sample_text(r.text))
        elif isinstance(r, Change):
            self._print(f"change {r.step:>4} | {r.key} {_said(r.old)} -> {_said(r.new)} ({r.source})")
        elif isinstance(r, RunStart):
            verb = "fork" if r.parent else "resuming" if r.resumed else "run"
            per_step = f" | {fmt_count(self.series.tokens_per_step)} tokens/step" if self.series.tokens_per_step else ""
            self._print(f"{verb} {r.run_name} | {r.n_params:,} params | {r.device} | "
                        f"step {r.step} of {r.total_steps}{per_step}")
            if isinstance(r.parent, dict):
                got = r.parent.get("changes")
                changed = ", ".join(f"{k} {_said(v[0])} -> {_said(v[1])}" for k, v in got.items()
                                    if isinstance(v, list) and len(v) == 2) if isinstance(got, dict) else ""
                self._print(f"forked from {r.parent.get('name')}@{r.parent.get('step')} ({r.parent.get('folder')})"
                            + (f" | {changed}" if changed else " | no changes"))
            if r.inexact:
                self._print(f"note: resumed with {', '.join(r.inexact)} changed: from step {r.step} on, the "
                            "losses are not bit-identical to an uninterrupted run")
        elif isinstance(r, LrJump):
            self._print(f"note: {r.message}")
        elif isinstance(r, Checkpoint):
            took = "" if r.blocked_s is None else f" | blocked {fmt_seconds(r.blocked_s)}"
            if r.write_s is not None and took:
                took += f", write {fmt_seconds(r.write_s)}"
            self._print(f"checkpoint {r.step:>4} | {r.path} ({r.reason}){took}")
        elif isinstance(r, BadStep):
            self._print(f"bad step {r.step:>4} | loss {fmt_loss(r.train_loss)} | grad {fmt_loss(r.grad_norm)} | "
                        f"skipped ({r.consecutive} in a row)")
        elif isinstance(r, Paused):
            self._print(f"paused at step {r.step} ({r.reason})")
        elif isinstance(r, Resumed):
            self._print(f"resumed at step {r.step}")
        elif isinstance(r, Ack) and not r.ok:
            self._print(f"{r.command}: {r.message}")
        elif isinstance(r, RunEnd):
            extra = f" | error: {r.error}" if r.error else ""
            val = "no eval yet" if r.val_loss is None else f"val {fmt_loss(r.val_loss)}"
            self._print(f"run {r.status} at step {r.step} | {val} | {fmt_duration(r.elapsed_s)}{extra}")


def _said(v: object) -> str:
    """A setting's value in a line: a whole number whole (``steps 1300 -> 2605``, not ``1.3e+03``), another
    number short (``fmt_value``), anything else as it is."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) < 10**12:
        return str(v)
    return fmt_value(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)[:40]

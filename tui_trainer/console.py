"""The headless printer: the lines the lesson's script prints, as a sink.

Plain lines only, no carriage returns, so a redirected log greps cleanly.
"""
from __future__ import annotations

import sys
from typing import TextIO

from .fmt import fmt_loss
from .records import (Ack, BadStep, Checkpoint, Eval, Paused, Record, Resumed, RunEnd, RunStart,
                      Sample, TrainStep)


class ConsoleSink:
    def __init__(self, log_every: int = 10, stream: TextIO | None = None):
        self.log_every = max(1, log_every)
        self.stream = stream or sys.stdout

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def emit(self, r: Record) -> None:
        if isinstance(r, TrainStep):
            if r.step % self.log_every == 0 or r.step == 1:
                self._print(f"step {r.step:>6} | loss {fmt_loss(r.train_loss)} | lr {r.lr:.2e} | "
                            f"{r.tokens_per_sec:,.0f} tok/s | grad {r.grad_norm:.2f}")
        elif isinstance(r, Eval):
            tag = " (forced)" if r.forced else ""
            self._print(f"eval {r.step:>6} | train {fmt_loss(r.train_loss)} | val {fmt_loss(r.val_loss)} | "
                        f"{r.elapsed_s:.1f}s{tag}")
        elif isinstance(r, Sample):
            self._print(f"sample {r.step:>4} | " + r.text.replace("\n", "⏎"))
        elif isinstance(r, RunStart):
            verb = "resuming" if r.resumed else "run"
            self._print(f"{verb} {r.run_name} | {r.n_params:,} params | {r.device} | "
                        f"step {r.step} of {r.total_steps}")
            if r.inexact:
                self._print(f"note: resumed with {', '.join(r.inexact)} changed: from step {r.step} on, the "
                            "losses are not bit-identical to an uninterrupted run")
        elif isinstance(r, Checkpoint):
            self._print(f"checkpoint {r.step:>4} | {r.path} ({r.reason})")
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
            self._print(f"run {r.status} at step {r.step} | val {fmt_loss(r.val_loss)} | "
                        f"{r.elapsed_s:.1f}s{extra}")

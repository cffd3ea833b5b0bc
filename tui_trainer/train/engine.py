"""The training loop.  It knows nothing of any UI.

``Trainer`` trains the parts ``parts.build_parts`` assembled and talks to its
run (``run.Run``) only: it emits typed records (``records``) there, applies
the run's commands at each step's safe point (``Run.between_steps``), and
asks the run's ``checkpoint.CheckpointManager`` after each step or eval
(``after``), which alone decides when to save.  The lesson's functions are public here
under their names: ``calc_loss_batch``, ``evaluate_model``,
``generate_and_print_sample`` and ``train``.
"""
from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any, Iterable

import torch

from ..run import checkpoint as ckpt
from ..run import resources
from ..control.commands import Command  # noqa: F401  (re-exported as engine.Command)
from ..config import INEXACT_CHANGES, TrainConfig, UserError
from .hardware import flops_per_token, peak_flops
from .lesson import calc_loss_batch, evaluate_model, generate_and_print_sample  # noqa: F401 (public here too)
from ..control.live import define_live_settings
from .model import pin_gradient_threads, weights_finite
from .optim import set_lr
from .rng import rng_state, set_rng_state
from .parts import Parts, build_parts
from ..records import Eval, Resources, RunEnd, RunStart, Sample, Status
from ..run.run import Run, Sink
from ..run.time_budget import TimeBudget
from .schedule import LRSchedule
from .guard import Launched, StepGuard
from .step import accumulate_gradients
from ..text.tokenizer import keep_in
from .threads import ThreadGovernor, idle_at_start


class Trainer:
    """The built-in loop: trains ``parts`` and reports to its run.

    ``run`` is the ``run.Run`` it reports to (records, steering, checkpoint
    policy); whoever made it holds it too (``cli``: the dashboard steers
    through it), and the trainer keeps it to itself.  Given a folder or None
    instead (the lesson's ``Trainer(cfg, "outputs/x")``), ``Run.unlocked``
    makes one from ``sinks``, ``commands`` and ``interactive`` (no lock, log,
    socket or signals).  Nothing is set on a Trainer from outside after
    construction: a resumed run passes the ``resume.ResumePlan`` it continues.
    """

    def __init__(self, cfg: TrainConfig, run: Run | str | Path | None = None, sinks: Iterable[Sink] = (),
                 commands: queue.Queue | None = None, *, interactive: bool = False,
                 run_name: str | None = None, parts: Parts | None = None, resume: Any = None):
        self.cfg = cfg
        p = parts if parts is not None else build_parts(cfg)
        if not isinstance(run, Run):
            run = Run.unlocked(run, name=run_name, sinks=sinks, commands=commands, interactive=interactive,
                               sync=p.dist, checkpoint_every=cfg.ckpt_every, keep=cfg.keep)
        self._run = run  # not re-exported: who needs the run holds it (trainer.run() is the loop)
        self.emit = run.emit
        self.ckpts = run.checkpoints
        # What a checkpoint holds and whether the model is sound; when to save is the manager's (``after``).
        # Guarding the optimizer: a background snapshot's copy overlaps the next forward/backward.
        self.ckpts.bind(self.state_dict, check=weights_finite, healthy=lambda: not self.diverged,
                        background=not cfg.sync_checkpoints, optimizer=p.optimizer)
        self.parts = p
        self.hw, self.dist, self.corpus, self.model = p.hw, p.dist, p.corpus, p.model
        self.train_model, self.optimizer, self.scaler, self.sampler = p.train_model, p.optimizer, p.scaler, p.sampler
        self.val_batches, self.train_eval_batches = p.val_batches, p.train_eval_batches
        self._compile_pending = self.hw.compile  # torch.compile is lazy: the first step compiles
        self.params = [q for q in self.model.parameters() if q.requires_grad]
        # The CPU thread count follows the load (threads.py); one process only:
        # under torchrun each rank's count is pinned (torchrun sets OMP_NUM_THREADS).
        # The numbers stay those of the full count: model.pin_gradient_threads.
        self.governor = None
        if self.hw.threads_auto and not self.dist.enabled:
            self.governor = ThreadGovernor(self.hw.threads, torch.set_num_threads, idle=idle_at_start())
            pin_gradient_threads(self.model, self.hw.threads)

        self.step = 0
        self.tokens = 0
        self.elapsed_before = 0.0  # wall time of earlier sessions of a resumed run
        self.last_val: float | None = None
        self.last_val_step = -1
        self.bad_in_row = 0
        self.guard = StepGuard(self.optimizer, self.scaler, self.dist, self.sampler)  # the NaN guard, on the device
        self.diverged = False
        self.resumed, self.parent = False, None  # parent: a fork's (fork.ForkPlan.parent)
        self.resumed_from: str | None = None  # the checkpoint continued from
        self.config_changes: dict[str, Any] | None = None  # resume: {key: [old, new]}
        self.done = threading.Event()  # set once run() has emitted its run_end
        self.end: RunEnd | None = None
        self._t0 = time.perf_counter()
        self.lr_scale, self.schedule = 1.0, LRSchedule()  # lr(t) = lr_scale (a live setting) x schedule.lr(t)
        run.set_handlers(on_eval=self._forced_probe, on_checkpoint=self._manual_save,
                         on_sample=self._requested_sample, on_resume=self._on_resume,
                         check_prompt=self.corpus.tokenizer.check, on_pause=self._settled_step,
                         lagging=self.guard.lagging)
        define_live_settings(self, run)
        if cfg.time_budget:  # --time: a sink that sets steps once it knows the pace
            run.add_sink(TimeBudget(cfg.time_budget, run.commands, floor=cfg.warmup_steps))
        if resume is not None:  # a resume.ResumePlan: load every state it holds
            from ..run.resume import apply_resume

            apply_resume(resume, self)
            self.resumed_from, self.parent = str(resume.ckpt_path), getattr(resume, "parent", None)
            self.config_changes = resume.changes or None

    @property
    def best_val(self) -> float:
        return self.ckpts.best_val

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self._t0)

    # --- the loop ---
    def run(self) -> RunEnd:
        cfg, run = self.cfg, self._run
        self._t0 = time.perf_counter()
        run.plan_steps(cfg.steps)
        fpt, peak = self._flops()
        self.emit(RunStart(step=self.step, run_name=run.name, config=cfg.to_dict(),
                           n_params=self.model.num_params(), device=self.hw.describe() + self.dist.describe(),
                           total_steps=cfg.steps, resumed=self.resumed, resumed_from=self.resumed_from,
                           changes=self.config_changes, live=dict(run.changed) or None,
                           inexact=[k for k in INEXACT_CHANGES if k in (self.config_changes or {})] or None,
                           flops_per_token=fpt, peak_flops=peak, tokens_per_step=self._tokens_per_step(),
                           tokenizer=keep_in(run.folder, self.corpus.tokenizer), parent=self.parent))
        self.schedule.announce(self.emit)  # a jump of the LR at this resume
        self._sampled_at = time.perf_counter()
        status, error = "finished", None
        try:
            while self.step < cfg.steps:
                run.between_steps(self.step)
                if run.stopping:
                    status = "stopped"
                    break
                if self.step >= cfg.steps:
                    break  # steps set at or below the step trained: finished
                if not (self._compile_step() if self._compile_pending else self._train_step()):
                    if self.bad_in_row >= cfg.max_bad_steps:
                        self.diverged = True
                        if not run.interactive:
                            status = "diverged"
                            break
                        run.pause("diverged")
                    continue
                if not self.guard.pending and time.perf_counter() - self._sampled_at >= resources.EVERY_S:
                    self._sample_resources()  # once the steps before it are in the log: never ahead of them
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    self._probe(forced=False)
                self.ckpts.after(self.step, val_loss=self._val_at_step())  # scheduled, best or nothing
        except Exception as e:  # shown in the UI and written to the log, never lost
            status, error = "failed", f"{type(e).__name__}: {e}"
        except KeyboardInterrupt:  # a second Ctrl-C (signals.py): leave now, but say so in the log
            self._end_killed()
            raise
        if self.diverged and status == "stopped":
            status = "diverged"
        if run.failure is not None:
            status, error = "failed", run.failure
        try:  # the steps in flight are logged, the write in flight ends (and is logged), then the final save
            self._settle()
            self.ckpts.after(self.step, "end", val_loss=self._val_at_step(),
                             clean=status != "failed" or run.failure is not None)
        except KeyboardInterrupt:
            self._end_killed()
            raise
        except Exception as e:
            if run.failure is None and status != "failed":  # a save failing fails the run
                status, error = "failed", f"{type(e).__name__}: {e}"
        end = RunEnd(step=self.step, status=status, elapsed_s=self.elapsed,  # type: ignore[arg-type]
                     val_loss=self.last_val, error=error)
        self.end = end
        try:
            self.emit(end)
        finally:
            self.done.set()
        return end

    def _end_killed(self) -> None:
        self._settle()  # the steps in flight are in the log before the end
        self.end = RunEnd(step=self.step, status="killed", elapsed_s=self.elapsed, val_loss=self.last_val,
                          error="interrupted twice: no final checkpoint")
        try:
            self.emit(self.end)
        finally:
            self.done.set()

    def _train_step(self) -> bool:
        """Launch one step; its numbers reach the host (``_settle``) at the log interval or a stop."""
        cfg = self.cfg
        lr = self.lr_scale * self.schedule.lr(self.step, cfg)
        set_lr(self.optimizer, lr)
        t = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        drawn_from = self.sampler.state_dict()
        loss, n = accumulate_gradients(self.train_model, self.sampler, cfg.grad_accum, self.scaler, self.hw.autocast,
                                       calc_loss_batch)
        stats = self.guard.step(loss, self.params, cfg.grad_clip, cfg.max_bad_steps)  # skipped on device if NaN/inf
        self.step += 1  # counted until settled
        dt = time.perf_counter() - t
        if self.governor is not None:  # CPU only, where the host's time is the step's: told as each step ends
            self.governor.step_done(dt)
        self.guard.launched(Launched(stats, lr, n * self.dist.world_size, dt, self.elapsed, drawn_from, t,
                                     wall=time.time()))
        # settled before a save the manager has scheduled (it asks, it does not decide)
        due = self.guard.due(self.step, cfg, self.ckpts.due(self.step, cfg.steps), self._run)
        return self._settle() if due else True

    def _settle(self) -> bool:
        """Log the steps in flight, read in one copy.  False: the last was skipped, or steps were dropped."""
        done, launched = self.guard.settle()
        self.step -= launched
        for d in done:
            self.bad_in_row = self.bad_in_row + 1 if d.skipped else 0
            if not d.skipped:  # a good step after a human resumed a diverged run: checkpoints allowed again
                self.diverged, self.step, self.tokens = False, self.step + 1, self.tokens + d.tokens
            self.emit(d.record(self.step, self.bad_in_row, self.tokens))
        return len(done) == launched and not (done and done[-1].skipped)

    def _settled_step(self) -> int:
        """Before a pause: the steps in flight are in the log, and the step trained to."""
        self._settle()
        return self.step

    def _compile_step(self) -> bool:
        """The first step of a compiled model is its compile: say so before,
        report how long it took after, and run eagerly if the compiler fails."""
        self._compile_pending = False
        self.emit(Status(step=self.step, state="compiling", detail="torch.compile: the first step compiles the model"))
        t = time.perf_counter()
        try:
            ok = self._train_step()
        except Exception as e:  # no compiler toolchain, an unsupported op...: eager still trains
            self.train_model = getattr(self.train_model, "_orig_mod", self.model)
            self.hw.compile = False
            self.emit(Status(step=self.step, state="running",
                             detail=f"torch.compile failed ({type(e).__name__}); running eagerly"))
            return self._train_step()
        self.emit(Status(step=self.step, state="running", detail=f"compiled in {time.perf_counter() - t:.1f}s"))
        return ok

    def _tokens_per_step(self) -> int:
        cfg = self.cfg
        return cfg.grad_accum * cfg.batch_size * cfg.context_length * self.dist.world_size

    def _flops(self) -> tuple[float | None, float | None]:
        """(training FLOPs per token, peak FLOP/s) for MFU; (None, None) rather
        than ever failing a run over a figure."""
        if not self.dist.is_main:
            return None, None
        try:
            peak = peak_flops(self.hw.device, self.hw.dtype, self.hw.tf32)  # one device's; the rate is every rank's
            return (flops_per_token(self.model.config, self.model.num_params()),
                    peak * self.dist.world_size if peak else peak)
        except Exception:
            return None, None

    def _sample_resources(self) -> None:
        self._sampled_at = time.perf_counter()
        if self.dist.is_main:
            self.emit(Resources(step=self.step, **resources.sample(self.hw.device),
                                threads=torch.get_num_threads() if self.hw.threads else None))

    def _on_resume(self) -> None:
        """A person resumed: a diverged run gets a fresh count of bad steps in
        a row; a run paused mid-streak for any other reason keeps its count."""
        if self.diverged:
            self.bad_in_row = 0
            self.guard.reset()

    def set_lr_scale(self, v: float) -> None:
        """The live setting ``lr_scale`` (``control/live.py``): lr(t) = v x schedule(t) from the next step."""
        self.lr_scale = v

    def _requested_sample(self, prompt: str, tokens: int | None, temperature: float | None,
                          top_k: int | None) -> str:
        """A sample asked for by a person, on the live weights, between steps.
        Its own generator: the training RNG is untouched."""
        cfg = self.cfg
        gen = torch.Generator(device=self.hw.device).manual_seed(cfg.seed + self.step + 1_000_003)
        with self.hw.autocast():
            return generate_and_print_sample(self.model, prompt, tokens or cfg.sample_tokens,
                                             tokenizer=self.corpus.tokenizer,
                                             temperature=temperature or cfg.temperature,
                                             top_k=(top_k or None) if top_k is not None else cfg.top_k,
                                             device=self.hw.device, generator=gen, print_fn=None,
                                             should_stop=self._run.stop_event.is_set)

    def _forced_probe(self) -> None:
        self._settle()
        self._probe(forced=True)
        self.ckpts.after(self.step, "eval", val_loss=self._val_at_step())

    def _manual_save(self) -> None:
        self._settle()
        self.ckpts.after(self.step, "save", val_loss=self._val_at_step())

    def _val_at_step(self) -> float | None:
        """This step's eval, if it had one: what a save here is judged best by."""
        return self.last_val if self.last_val_step == self.step else None

    def _state_word(self) -> str:
        return "paused" if self._run.paused else "running"

    def _probe(self, forced: bool) -> None:
        cfg = self.cfg
        self.emit(Status(step=self.step, state="evaluating"))
        stop = self._run.stop_event.is_set
        # The eager module, not compiled/DDP: eval mode would recompile the graph; evals need no all-reduce.
        val = evaluate_model(self.model, self.val_batches, autocast=self.hw.autocast, should_stop=stop)
        train = evaluate_model(self.model, self.train_eval_batches, autocast=self.hw.autocast, should_stop=stop)
        if self.dist.enabled:  # each rank evaluated its rows of the same batches
            val, train = self.dist.mean([val, train])
        if self._run.stopping:
            return  # a partial eval is not a number worth logging
        self.last_val, self.last_val_step = val, self.step
        self.emit(Eval(step=self.step, val_loss=val, train_loss=train, elapsed_s=self.elapsed, forced=forced,
                       val_bpb=self.parts.val_bpb(val)))
        if not self.dist.is_main:
            return  # only rank 0 writes samples
        # Seeded by step: the sample at step k is the same in a resumed run, and
        # sampling never touches the training RNG.
        gen = torch.Generator(device=self.hw.device).manual_seed(cfg.seed + self.step)
        with self.hw.autocast():
            text = generate_and_print_sample(self.model, cfg.sample_prompt, cfg.sample_tokens,
                                             tokenizer=self.corpus.tokenizer,
                                             temperature=cfg.temperature, top_k=cfg.top_k,
                                             device=self.hw.device, generator=gen, print_fn=None,
                                             should_stop=stop)
        if not self._run.stopping:
            self.emit(Sample(step=self.step, prompt=cfg.sample_prompt, text=text))
        self.emit(Status(step=self.step, state=self._state_word()))  # type: ignore[arg-type]

    # --- checkpoints ---
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": ckpt.FORMAT,
            "step": self.step,
            "world_size": self.dist.world_size,
            "tokens": self.tokens,
            "elapsed_s": self.elapsed,
            "live": {"lr_scale": self.lr_scale, "pause_at": self._run.pause_at, "changed": dict(self._run.changed)},
            "best_val": self.best_val,
            "schedule": self.schedule.state_dict(),
            "last_val": self.last_val,
            "last_val_step": self.last_val_step,
            "config": self.cfg.to_dict(),
            "data_fingerprint": self.corpus.fingerprint,
            "vocab_size": self.corpus.vocab_size,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved_world = state.get("world_size", 1)
        if saved_world != self.dist.world_size:
            raise UserError(f"the checkpoint was written by {saved_world} process(es) and this run has "
                            f"{self.dist.world_size}; resume with torchrun --nproc_per_node={saved_world}"
                            if saved_world > 1 else
                            f"the checkpoint was written by one process and this run has {self.dist.world_size}; "
                            "resume it without torchrun")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        self.step = state["step"]
        self.tokens = state["tokens"]
        self.elapsed_before = state["elapsed_s"]
        self.last_val = state["last_val"]
        self.last_val_step = state["last_val_step"]
        self.ckpts.restore(self.step, state["best_val"])
        live = state.get("live") or {}
        self.lr_scale = float(live.get("lr_scale", 1.0))
        self.schedule.load_state_dict(state.get("schedule"))
        self._run.restore_live(live.get("pause_at", 0), live.get("changed") or {})
        self.resumed = True


def train(cfg: TrainConfig, run_dir: str | Path, sinks: Iterable[Sink] = (),
          commands: queue.Queue | None = None) -> RunEnd:
    """Run a whole training job into ``run_dir`` (its ``losses.jsonl`` included)."""
    parts = build_parts(cfg)  # fails on bad input before anything is written
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    run = Run.unlocked(run_dir, sinks=sinks, commands=commands, sync=parts.dist,
                       checkpoint_every=cfg.ckpt_every, keep=cfg.keep).open(control=False, signals=False)
    try:
        return Trainer(cfg, run, parts=parts).run()
    finally:
        run.close()

"""``tui-trainer train --resume RUN_DIR``: continue a run where it stopped.

What is continued.  RUN_DIR's ``latest.pt`` (or a ``ckpt-step*.pt`` file
named instead of the folder) restores the model, the optimizer, the grad
scaler, the step and token counts, the best val loss, the data sampler's
generator and every RNG (Python, NumPy, torch CPU and CUDA).  On CPU with the
same settings, the resumed run computes exactly the losses the uninterrupted
run would have, step for step.

Settings.  The run's settings come from the checkpoint; flags (and --config)
given with --resume override them.  Only ``RESUMABLE_CHANGES`` (config.py:
total steps, eval and checkpoint cadence, sampling, device, ...) may differ;
they are recorded in the ``run_start`` record as ``changes``.  Anything that
changes what the run computes (model shape, data, vocabulary, batch size,
learning-rate settings, seed, ...) is refused with a one-line error naming
each difference.  Changing ``--steps`` refits the LR schedule at the resume
point (``schedule.py``): the LR goes on from where it was, down to min_lr at
the new end (``--schedule restart``: the cosine over the new total, a jump
the console and the dashboard name).

The log (README text).  A resumed run appends to RUN_DIR/losses.jsonl; the
file is never rewritten or truncated.  The resumed session starts with a
``run_start`` record with ``"resumed": true``, ``step`` = the checkpoint's
step S and ``resumed_from`` = the checkpoint file.  Records an earlier session
wrote with a step above S (steps trained after its last checkpoint, before a
crash or ``kill -9``) are *superseded*: the resumed session trains those
steps again and writes them anew.  Readers apply the rule with
``logs.effective_records``: in file order, each resumed ``run_start`` drops
the earlier records whose step is greater than its own.  A line torn by a
kill mid-write is closed with a newline and stays as one unreadable line that
readers skip and count.

One writer.  A run folder is locked while a process trains in it
(``run.folder.RunLock``), so resuming a run that is still going is refused.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import checkpoint as ckpt
from .checkpoint_schema import SchemaError, check_trainer_state
from .folder import is_live
from ..config import FIELDS, MAX_STEPS, RESUMABLE_CHANGES, TrainConfig, UserError, make_config


@dataclass
class ResumePlan:
    run_dir: Path
    ckpt_path: Path
    state: dict[str, Any]
    cfg: TrainConfig
    changes: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return self.state["step"]


def find_checkpoint(target: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(run folder, checkpoint file) for a ``--resume`` argument: a run folder
    (its latest save) or one ``.pt`` file inside it."""
    p = Path(target)
    if not p.exists():
        raise UserError(f"--resume {p} not found; pass the folder of an earlier run")
    if p.is_file():
        return p.parent, p
    steps = ckpt.list_step_checkpoints(p)
    latest = p / ckpt.LATEST
    if not latest.exists():
        if steps:
            raise UserError(f"--resume {p} has no {ckpt.LATEST}; pass --resume {steps[-1][1]} to continue "
                            "from its newest checkpoint")
        if is_live(p):  # not a run that failed early: one still training, before its first save
            raise UserError(f"--resume {p}: that run is still training and has saved no checkpoint yet; "
                            f"watch it with tui-trainer attach {p}, and resume it once it has ended")
        raise UserError(f"--resume {p} holds no checkpoint (no {ckpt.LATEST}); it cannot be resumed, "
                        "start a new run instead")
    return p, latest


def _newer_step_file(run_dir: Path, ckpt_path: Path, step: int) -> Path | None:
    """A step file newer than latest.pt: the save finished but a kill came
    before latest.pt was repointed.  Being renamed into place, it is whole."""
    if ckpt_path.name != ckpt.LATEST:
        return None
    newer = [p for s, p in ckpt.list_step_checkpoints(run_dir) if s > step]
    return newer[-1] if newer else None


def load_trainer_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint the built-in trainer wrote, read and checked field by field
    (``checkpoint_schema``) before anything of it is used."""
    state = ckpt.load_checkpoint(path)
    try:
        check_trainer_state(state)
    except SchemaError as e:
        raise ckpt.CheckpointError(f"checkpoint {path}: {e}; {ckpt.HINT}") from None
    return state


def _sound_alternative(run_dir: Path, bad: Path) -> Path | None:
    """The newest step file other than ``bad`` that loads and passes the schema."""
    for _, p in reversed(ckpt.list_step_checkpoints(run_dir)):
        try:
            if bad.exists() and p.samefile(bad):
                continue
            load_trainer_checkpoint(p)
        except (OSError, ckpt.CheckpointError):
            continue
        return p
    return None


def _with_alternative(e: Exception, run_dir: Path, bad: Path) -> ckpt.CheckpointError:
    """``e`` with its hint made exact: the sound checkpoint to resume from,
    or, when there is none, that the run must start again."""
    alt = _sound_alternative(run_dir, bad)
    fix = (f"pass --resume {alt} to continue from the newest sound checkpoint" if alt is not None else
           f"no other checkpoint in {run_dir} is sound; start a new run (tui-trainer train --out NEW_FOLDER)")
    return ckpt.CheckpointError(str(e).replace(ckpt.HINT, fix))


def load_resume_state(run_dir: Path, ckpt_path: Path) -> tuple[Path, dict[str, Any]]:
    try:
        state = load_trainer_checkpoint(ckpt_path)
    except ckpt.CheckpointError as e:
        raise _with_alternative(e, run_dir, ckpt_path) from None
    newer = _newer_step_file(run_dir, ckpt_path, state["step"])
    if newer is not None:
        try:
            return newer, load_trainer_checkpoint(newer)
        except ckpt.CheckpointError:
            pass  # keep latest.pt, which did load
    return _step_file_of(run_dir, ckpt_path), state


def _step_file_of(run_dir: Path, path: Path) -> Path:
    """latest.pt is a link that moves on: name the step file it points at."""
    try:
        for _, p in ckpt.list_step_checkpoints(run_dir):
            if p.samefile(path):
                return p
    except OSError:
        pass
    return path


def plan_resume(target: str | os.PathLike[str], values: dict[str, Any]) -> ResumePlan:
    """Load the checkpoint and merge settings: the checkpoint's config,
    overridden by ``values`` (only the settings the user gave).  Refuses a
    change that matters with one line naming every difference."""
    run_dir, ckpt_path = find_checkpoint(target)
    ckpt_path, state = load_resume_state(run_dir, ckpt_path)
    values = dict(values)
    out = values.pop("out", None)
    if out is not None and Path(out).resolve() != run_dir.resolve():
        raise UserError(f"--out {out} cannot be used with --resume: the run continues in {run_dir}; drop --out")
    values.pop("name", None)  # a name only picks a new folder
    cfg, changes = merge_settings(run_dir, ckpt_path, state, values, {"out": str(run_dir), "name": run_dir.name})
    return ResumePlan(run_dir=run_dir, ckpt_path=ckpt_path, state=state, cfg=cfg, changes=changes)


def merge_settings(run_dir: Path, ckpt_path: Path, state: dict[str, Any], values: dict[str, Any],
                   here: dict[str, Any], allowed: frozenset[str] | set[str] = RESUMABLE_CHANGES,
                   verb: str = "resume", advice: str = "to continue that run") -> tuple[TrainConfig, dict[str, list[Any]]]:
    """The checkpoint's config overridden by ``values`` and ``here`` (the
    folder's out and name), and the changes {key: [old, new]}; a change of a
    key outside ``allowed`` is refused in one line naming every difference."""
    step = state["step"]
    saved = {k: v for k, v in state["config"].items() if k in FIELDS}  # each value checked by the schema
    try:
        cfg = make_config({**saved, **values, **here})
    except UserError as e:
        try:
            make_config({**saved, **here})
        except UserError as own:
            if str(own) == str(e):  # the checkpoint's own settings break a rule (each value passed the schema)
                fix = (f"pass --steps N with N at least {saved['warmup_steps']} to train it on"
                       if saved["warmup_steps"] > saved["steps"] else ckpt.HINT)
                err = ckpt.CheckpointError(f"checkpoint {ckpt_path} holds settings this version rejects "
                                           f"({own}); {fix}")
                raise _with_alternative(err, run_dir, ckpt_path) from None
        raise e from None  # the flags given are at fault
    before = TrainConfig(**{**saved, **here})
    before.top_k = before.top_k or None
    old, new = before.to_dict(), cfg.to_dict()
    changes = {k: [old[k], new[k]] for k in new if old[k] != new[k]}
    if "tokenizer" in changes:
        from ..text.tokenizer import same_file_tokenizer

        if same_file_tokenizer(*changes.pop("tokenizer"), run_dir):  # the same file by another name
            cfg = dataclasses.replace(cfg, tokenizer=old["tokenizer"])
        else:
            changes["tokenizer"] = [old["tokenizer"], new["tokenizer"]]
    refused = {k: v for k, v in changes.items() if k not in allowed and k != "data"}
    if refused:
        diffs = ", ".join(f"{k} ({a!r} in the checkpoint, {b!r} now)" for k, (a, b) in refused.items())
        flags = " ".join("--" + k.replace("_", "-") for k in refused)
        differ = "differs" if len(refused) == 1 else "differ"
        raise UserError(f"cannot {verb} {run_dir}: {diffs} {differ}; drop {flags} {advice}, "
                        "or start a new run with the new settings")
    if cfg.steps <= step:
        raise UserError(f"run {run_dir} is already at step {step} of --steps {cfg.steps}; "
                        f"pass --steps N with N above {step} to train it longer")
    return cfg, changes


def apply_resume(plan: ResumePlan, trainer: Any) -> None:
    """Check the data against the checkpoint, then load every state into the
    trainer (built from ``plan.cfg``)."""
    st = plan.state
    fp = st.get("data_fingerprint")
    if fp is not None and fp != trainer.corpus.fingerprint:
        raise UserError(f"cannot resume {plan.run_dir}: the data differs from the checkpoint's "
                        f"({trainer.corpus.source}: {trainer.corpus.fingerprint}, checkpoint: {fp}); "
                        "pass --data with the file that run trained on")
    vocab = st.get("vocab_size")
    if vocab is not None and vocab != trainer.corpus.vocab_size:
        raise UserError(f"cannot resume {plan.run_dir}: vocab_size ({vocab} in the checkpoint, "
                        f"{trainer.corpus.vocab_size} now) differs; pass --vocab-size {vocab}")
    try:
        trainer.load_state_dict(st)
        _check_optimizer_shapes(trainer.optimizer)
        trainer.optimizer.param_groups[0]["weight_decay"] = plan.cfg.weight_decay  # a fork may change it
        # A new --steps refits the LR schedule from here (schedule.py: continuous unless --schedule restart).
        trainer.schedule.resumed(plan.step, plan.cfg, st["config"]["steps"], trainer.lr_scale)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        err = ckpt.CheckpointError(f"checkpoint {plan.ckpt_path} does not fit this run ({first[:120]}); "
                                   f"{ckpt.HINT}")
        raise _with_alternative(err, plan.run_dir, plan.ckpt_path) from None


def _check_optimizer_shapes(optimizer: Any) -> None:
    """AdamW's moments must have their parameter's shape (torch does not check
    on load; a mismatch would fail at the first step, after training began)."""
    for p, st in optimizer.state.items():
        for k, v in st.items():
            if getattr(v, "dim", None) is not None and v.dim() > 0 and v.shape != p.shape:
                raise ValueError(f"optimizer state {k} has shape {tuple(v.shape)} for a parameter of shape "
                                 f"{tuple(p.shape)}")


def set_aside_superseded(plan: ResumePlan) -> list[Path]:
    """Step files newer than the checkpoint resumed from (only when an older
    file was named on purpose) belong to the abandoned branch: rename them so
    that pruning, which keeps the highest steps, cannot prefer them over the
    new saves.  Nothing is deleted."""
    moved = []
    for s, p in ckpt.list_step_checkpoints(plan.run_dir):
        if s > plan.step:
            dst = p.with_name(p.stem + ".superseded.pt")
            os.replace(p, dst)
            moved.append(dst)
    return moved


# --- how to go on: the command a person is told -----------------------------

def resume_target(run_dir: Path) -> Path | None:
    """What ``--resume`` takes to continue the run in ``run_dir``: the folder
    when it has ``latest.pt``, else its newest step file, else None (no
    checkpoint was saved: there is nothing to resume)."""
    try:
        if (run_dir / ckpt.LATEST).is_file():
            return run_dir
        steps = ckpt.list_step_checkpoints(run_dir)
    except OSError:
        return None
    return steps[-1][1] if steps else None


def resume_command(run_dir: Path, *more: str, environ: dict[str, str] | None = None,
                   launcher: list[str] | None = None) -> str | None:
    """The command that continues the run in ``run_dir`` (``more``: flags to
    add, such as ``--steps N``), or None when it has no checkpoint.  Under
    torchrun it is the torchrun command this process was started with, since
    a resume needs the same world size (``distributed.from_env`` reads it
    from the same variables)."""
    import shlex

    target = resume_target(run_dir)
    if target is None:
        return None
    tail = ["train", "--headless", "--resume", str(target), *more]
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE") or 1)
        local = int(env.get("LOCAL_WORLD_SIZE") or world)
    except ValueError:
        world = local = 1
    if world <= 1:
        return shlex.join(["tui-trainer", "train", "--resume", str(target), *more])
    words = launcher if launcher is not None else _torchrun_words()
    if words is None:
        nodes = max(1, world // max(1, local))
        words = ["torchrun", "--standalone", f"--nproc_per_node={local}", "-m", "tui_trainer"] if nodes == 1 else \
            ["torchrun", f"--nnodes={nodes}", f"--nproc_per_node={local}", "RENDEZVOUS_OPTIONS", "-m", "tui_trainer"]
    return shlex.join([*words, *tail])


def _torchrun_words() -> list[str] | None:
    """The launcher part of the torchrun command that started this process
    (its parent: torchrun's agent), up to and with the module or script:
    ``torchrun --standalone --nproc_per_node=2 -m tui_trainer``.  None where
    it cannot be read (no /proc, another launcher)."""
    import sys

    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return None
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    return launcher_words(args, sys.argv[0] if sys.argv else "")


def launcher_words(args: list[str], script: str) -> list[str] | None:
    """From a torchrun agent's command line ``args``: the words that start the
    training processes again (``script``: this process's ``sys.argv[0]``)."""
    for i, a in enumerate(args):
        if os.path.basename(a) == "torchrun":
            start, head = i + 1, ["torchrun"]
        elif a == "-m" and args[i + 1:i + 2] in (["torch.distributed.run"], ["torch.distributed.launch"]):
            start, head = i + 2, args[:i + 2]
        else:
            continue
        for j in range(start, len(args)):
            if args[j] in ("-m", "--module") and j + 1 < len(args):
                return [*head, *args[start:j + 2]]
            if script and args[j] == script:
                return [*head, *args[start:j + 1]]
        return None
    return None


def how_to_go_on(end: Any, folder: Path) -> list[str]:
    """The resume (or train-longer) hint: only to a checkpoint that exists,
    with the torchrun command the run was started with, and a --steps that
    the settings' bounds allow."""
    if end is None or not end.step:
        return []
    if end.status in ("stopped", "diverged", "failed", "killed"):
        cmd = resume_command(folder)
        return [f"resume: {cmd}" if cmd is not None else
                "resume: no checkpoint was saved, so there is nothing to resume; start the run again "
                "(the same command, with a new --out)"]
    if end.status == "finished" and end.step < MAX_STEPS:
        cmd = resume_command(folder, "--steps", str(min(2 * end.step, MAX_STEPS)))
        return [f"train longer: {cmd}"] if cmd is not None else []
    return []

"""``tui-trainer train --fork RUN[@STEP]``: a new run from another run's checkpoint.

What a fork is.  A new run folder (``--out NEW``, or next to RUN, named
``--name`` or ``<RUN's name>-fork<STEP>``) whose training starts from RUN's
checkpoint at STEP (RUN's latest without ``@STEP``): the model, the optimizer,
the data sampler's position and every RNG, exactly as a resume restores them
(``resume.apply_resume``).  So a fork given no changes computes, step for
step, what RUN computed after STEP (on CPU with the same settings).

What may differ.  The settings a resume may change (``config.RESUMABLE_CHANGES``:
steps, cadences, sampling, ...) and the ones that steer the optimisation from
here, ``FORK_CHANGES``: max_lr, min_lr, warmup_steps, grad_clip, weight_decay.
The model's shape, the tokenizer, the batch and the seed are the parent's: a
change of one is refused in one line (``resume.merge_settings``).

The parent is only read.  Its checkpoint is hard-linked into the fork's folder
(copied where links are not possible) as ``forked-step<STEP>.pt``, so the fork
keeps its origin when RUN later prunes or deletes it, and a fork of the fork
at its first step finds it.  The fork's ``run_start`` names its parent
(``records.RunStart.parent``); its ``losses.jsonl`` holds only its own steps.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import checkpoint as ckpt
from ..config import RESUMABLE_CHANGES, UserError, choices, flag_type, range_problem
from .folder import is_live
from ..files import checked_folder_name, folder_name_problem
from .resume import ResumePlan, load_resume_state, load_trainer_checkpoint, merge_settings

FORK_CHANGES = frozenset(RESUMABLE_CHANGES | {"max_lr", "min_lr", "warmup_steps", "grad_clip", "weight_decay"})
INHERITED_RE = re.compile(r"^forked-step(\d+)\.pt$")


@dataclass
class ForkPlan(ResumePlan):
    """A ``resume.ResumePlan`` whose state comes from another run; ``run_dir``
    and ``ckpt_path`` become the fork's own once ``settle`` has linked the
    checkpoint into the new folder."""
    parent: dict[str, Any] = field(default_factory=dict)

    def settle(self, folder: Path) -> None:
        """Link (or copy) the parent's checkpoint into the fork's ``folder``."""
        dst = Path(folder) / f"forked-step{self.step:08d}.pt"
        tmp = dst.with_name(dst.name + f".tmp-{os.getpid()}")
        try:
            try:
                os.link(self.ckpt_path, tmp)
            except OSError:  # another filesystem, or none that links: a copy
                shutil.copyfile(self.ckpt_path, tmp)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        self.run_dir, self.ckpt_path = Path(folder), dst
        self.parent["checkpoint"] = dst.name


    def unsettle(self) -> None:
        """Undo ``settle`` (the fork never began): its link goes, the parent's file stays."""
        if self.ckpt_path.name.startswith("forked-step") and self.run_dir != Path(self.parent["folder"]):
            self.ckpt_path.unlink(missing_ok=True)


def split_target(text: str) -> tuple[Path, int | None]:
    """``RUN[@STEP]`` as (folder or file, step or None).  A path that ends in
    ``@`` and digits is a run of that name when it exists and the part
    before the ``@`` does not (a folder named ``r@5``; ``r@5@8`` is its step 8)."""
    head, at, tail = text.rpartition("@")
    if at and tail.isascii() and tail.isdigit() and head:  # "²" is a digit to isdigit, not to int
        try:
            whole = Path(text).exists() and not Path(head).exists()
        except (OSError, ValueError):  # a NUL byte, a name too long: not a folder either way
            whole = False
        if not whole:
            return Path(head), int(tail)
    return Path(text), None


def checkpoint_steps(run_dir: Path) -> dict[int, Path]:
    """The steps of ``run_dir`` that have a checkpoint file: its step files
    and, for a fork, the one it was forked from."""
    found = dict(ckpt.list_step_checkpoints(run_dir))
    for p in run_dir.iterdir():
        m = INHERITED_RE.match(p.name)
        if m:
            found.setdefault(int(m.group(1)), p)
    return dict(sorted(found.items()))


def _pick(target: str) -> tuple[Path, Path, dict[str, Any]]:
    """(parent folder, checkpoint file, its state) for a ``--fork`` argument."""
    where, step = split_target(target)
    if not where.exists():
        raise UserError(f"--fork {where} not found; pass the folder of an earlier run (RUN or RUN@STEP)")
    if where.is_file():
        return where.parent, where, load_trainer_checkpoint(where)
    try:
        steps = checkpoint_steps(where)
    except OSError as e:
        raise UserError(f"cannot read {where} ({e.strerror}); pass the folder of an earlier run") from None
    if step is None:
        if (where / ckpt.LATEST).is_file():
            path, state = load_resume_state(where, where / ckpt.LATEST)
            return where, path, state
        if not steps and is_live(where):
            raise UserError(f"--fork {where}: that run is still training and has saved no checkpoint yet; a fork "
                            f"starts from one: save one now with tui-trainer attach {where} --send checkpoint")
        if not steps:
            raise UserError(f"--fork {where} holds no checkpoint; a fork starts from one: fork a run that saved "
                            "one (--checkpoint-every N)")
        step = max(steps)
    if step not in steps:
        have = ", ".join(str(s) for s in steps) or "none"
        raise UserError(f"--fork {where}@{step}: no checkpoint at step {step}; steps with one: {have}")
    path = steps[step]
    state = load_trainer_checkpoint(path)
    if state["step"] != step:
        raise UserError(f"checkpoint {path} holds step {state['step']}, not {step}; pass --fork {where}@"
                        f"{state['step']}")
    return where, path, state


def fork_folder(parent: Path, step: int, name: str | None) -> Path:
    """A free folder next to ``parent``: ``name`` or ``<parent>-fork<step>``
    (``-2``, ``-3``... when taken); ``name`` is one folder there, never a path."""
    base = (name and checked_folder_name(name)) or f"{parent.resolve().name}-fork{step}"
    for i in range(1, 10_000):
        p = parent.resolve().parent / (base if i == 1 else f"{base}-{i}")
        if not p.exists():
            return p
    raise UserError(f"could not find a free fork name next to {parent}; pass --out")


def plan_fork(target: str, values: dict[str, Any]) -> ForkPlan:
    """Read the parent's checkpoint and merge the settings given (``values``);
    writes nothing.  Refusals are one line, before any folder exists."""
    parent_dir, path, state = _pick(target)
    values = dict(values)
    out, name = values.pop("out", None), values.pop("name", None)
    folder = Path(out) if out is not None else fork_folder(parent_dir, state["step"], name)
    here = {"out": str(folder), "name": name or folder.name}
    cfg, changes = merge_settings(parent_dir, path, state, values, here, allowed=FORK_CHANGES, verb="fork",
                                  advice="(a fork keeps its parent's model, data and tokenizer)")
    own = {k: v for k, v in changes.items() if k not in ("out", "name")}
    parent = {"folder": str(parent_dir.resolve()), "name": state["config"].get("name") or parent_dir.name,
              "fingerprint": state.get("data_fingerprint"), "step": state["step"], "checkpoint": str(path),
              "changes": own}
    return ForkPlan(run_dir=parent_dir, ckpt_path=path, state=state, cfg=cfg, changes=own, parent=parent)


def setting_words(settings: dict[str, str]) -> str | None:
    """Why the typed ``settings`` (``:fork KEY=VALUE``, values as typed) cannot
    be a fork's flags, or None: each value of the setting's type and range
    (``config.range_problem``); the rules between settings are checked when
    the fork starts, against the parent's config.  A ``name`` that makes the
    folder (no ``out``) is one folder name, as ``train --fork`` will check."""
    if "name" in settings and "out" not in settings and (why := folder_name_problem(settings["name"])):
        return f"name={settings['name']} {why}"
    for key, text in settings.items():
        kind = flag_type(key)
        try:
            value: Any = text if kind is str else kind(text) if kind is not bool else _boolean(text)
        except ValueError:
            return f"{key}={text} is not {'an integer' if kind is int else 'a number' if kind is float else 'true or false'}"
        allowed = choices(key)
        if allowed is not None and value not in allowed:
            return f"{key}={text}: use one of {', '.join(map(str, allowed))}"
        if (why := range_problem(key, value)) is not None:
            return why
    return None


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError(text)


def keep_fork_point(folder: Path | None, path: str, step: int) -> Path | None:
    """The checkpoint a ``:fork`` saved (``path``, as the run's record names
    it; ``folder``: the run's folder, where the record's path is relative to
    another working directory), hard-linked as ``forked-step<STEP>.pt`` beside
    it so that the run's pruning (``--keep``) cannot take it before the fork
    starts; the linked file, or the file itself where no link can be made, or
    None when it cannot be found."""
    src = Path(path)
    if folder is not None and not src.is_file():
        src = folder / src.name
    if not src.is_file():
        return None
    dst = src.with_name(f"forked-step{step:08d}.pt")
    try:
        os.link(src, dst)
    except FileExistsError:
        pass
    except OSError:
        return src
    return dst


def plan_from_flags(target: str, values: dict[str, Any], *, resume: str | None = None,
                    check_out: bool = True) -> ForkPlan:
    """``train --fork``'s plan from the flags given; ``check_out``: refuse
    first an --out that holds a run (rank 0 only: it makes the folder)."""
    from .folder import check_new_run_dir

    if resume:
        raise UserError("--fork and --resume cannot be used together; --resume continues a run in place, "
                        "--fork starts a new one from it: drop one")
    if check_out:
        check_new_run_dir(values.get("out"))
    return plan_fork(target, values)


def fork_command(run_dir: Path, step: int, settings: dict[str, Any]) -> str:
    """The command that starts a fork of ``run_dir`` at ``step`` with
    ``settings`` ({key: value}, flags' names with ``_``)."""
    import shlex

    words = ["tui-trainer", "train", "--fork", f"{run_dir}@{step}"]
    for k, v in settings.items():
        flag = "--" + k.replace("_", "-")
        if flag_type(k) is bool and isinstance(v, str):
            v = _boolean(v)
        if isinstance(v, bool):
            words.append(flag if v else "--no-" + k.replace("_", "-"))
        else:
            words += [flag, str(v)]
    return shlex.join(words)

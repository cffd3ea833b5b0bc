"""How long `tui-trainer` takes to put its first frame on the screen, beside
how long `python -c "import torch"` takes, measured in the same run.

    python benchmarks/bench_first_frame.py [--repeat 5] [--code /tmp/base]

Each trial starts `python -m tui_trainer train` in a fresh pseudo-terminal
(80x24) and times the moment its status line (the state badge) appears in
the output; the process is then killed and its folder removed.  Trials of the
app and of the bare torch import alternate, so load on a shared machine hits
both alike.  ``--code DIR`` times another copy of the package too (for
example the tree before the dashboard drew first: ``git worktree add
/tmp/base <commit>``).  Prints medians and the spread.
"""
from __future__ import annotations

import argparse
import os
import pty
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BADGES = (b"STARTING", b"RUNNING")


def first_frame(code: Path, timeout: float = 120.0) -> float:
    out = Path(tempfile.mkdtemp(prefix="ff-"))
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    env = dict(os.environ, PYTHONPATH=str(code), TERM="xterm-256color", COLUMNS="80", LINES="24")
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "tui_trainer", "train", "--steps", "50",
                          "--out", str(out / "run"), "--warmup-steps", "5"], stdin=slave, stdout=slave,
                         stderr=slave, env=env, start_new_session=True,
                         cwd=out)  # not this tree: `python -m` puts the cwd first on sys.path
    os.close(slave)
    seen = b""
    try:
        while time.perf_counter() - t0 < timeout:
            r, _, _ = select.select([master], [], [], 0.05)
            if r:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
                if any(b in seen for b in BADGES):
                    return time.perf_counter() - t0
            if p.poll() is not None:
                break
        raise RuntimeError(f"no frame from {code}: {seen[-300:]!r}")
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        os.close(master)
        shutil.rmtree(out, ignore_errors=True)


def import_torch() -> float:
    """From launch until ``import torch`` has returned (its interpreter's
    slow teardown afterwards is not part of it)."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", "import torch; print('imported', flush=True)"],
                         stdout=subprocess.PIPE)
    assert p.stdout is not None
    p.stdout.readline()
    took = time.perf_counter() - t0
    p.wait()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--code", action="append", default=[], metavar="DIR", help="another copy of the package")
    args = ap.parse_args()
    arms = {"import torch": import_torch, "first frame (this tree)": lambda: first_frame(ROOT)}
    for d in args.code:
        arms[f"first frame ({d})"] = lambda d=d: first_frame(Path(d))
    times: dict[str, list[float]] = {k: [] for k in arms}
    for _ in range(args.repeat):
        for name, fn in arms.items():
            times[name].append(fn())
    print(f"load average: {os.getloadavg()[0]:.1f}   trials: {args.repeat}, alternating")
    base = statistics.median(times["import torch"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<32} median {med:6.2f} s   (min {min(ts):.2f}, max {max(ts):.2f})   "
              f"{med / base:4.2f}x the torch import")


if __name__ == "__main__":
    main()

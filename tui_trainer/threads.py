"""How torch's CPU threads wait for work: chosen before torch loads, never how many.

torch runs its CPU kernels on an OpenMP team (GNU libgomp in the pip builds).
Between two parallel regions a libgomp thread spins before it sleeps (by
default about 300,000 rounds, milliseconds).  On an idle machine that starts
the next region a little sooner.  On a machine shared with busy processes it
can collapse throughput: a thread spinning for a partner the kernel has
descheduled burns the time its partner, or the neighbour, needs, and the
kernel never sees an idle CPU to balance onto.  Two programs that both spin
(another torch job beside a run) are the worst case.  Measured on the 2-core
demo machine (``benchmarks/bench_contention.py``, demo shape, median
tokens/sec; the README's Speed section has the table):

- idle: waiting passively (``OMP_WAIT_POLICY=PASSIVE``) costs 20-30%; a
  short spin (``GOMP_SPINCOUNT=3000``) costs nothing against the default.
- busy at start: passive waits match or beat every other wait setting (with
  another torch job beside the run: 45k tok/s against 40k for the default,
  2k for the default spin set explicitly, and 26k for ``--threads 1``).

No one wait setting is right for both, and OpenMP reads it once, when torch
loads.  So ``apply_wait_policy`` looks at the machine at that moment, at the
command's entry, before anything imports torch: when other processes are
using half a CPU or more of this process's CPUs (``BUSY_CPUS``: sampled from
``/proc/stat`` for ``SAMPLE_S``, and in the 1-minute load average too, so a
passing blip does not count), threads wait passively; otherwise they spin
briefly (``SPIN_COUNT``).  A neighbour that arrives after the start is not
seen: it costs what it costs the default (about half the throughput with one
busy process on 2 cores).  Such a run can be stopped and resumed: the new
process chooses again, and resume is exact.

Only how threads *wait* is chosen, never how many there are or how work is
split among them, so a run computes the same numbers, bit for bit, whatever
the load: the thread count, which does change the last bits of a result, is
torch's default or ``--threads N``, and nothing looks at the load to set it.
(Under load one thread is faster still; pass ``--threads 1`` for that, and
expect different last bits.)

A user's own setting wins: with ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` in
the environment nothing is changed.  Once torch has loaded (a script that
imported it first, the test suite) nothing is changed either: the
environment would only disagree with what OpenMP is doing.  Intel OpenMP
builds read ``OMP_WAIT_POLICY`` but not ``GOMP_SPINCOUNT`` (their spin is
``KMP_BLOCKTIME``): left as they are, unmeasured.

``describe_wait`` names what is in effect, and why, for ``Hardware.describe``
and so for the run-start record.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable, MutableMapping, Sequence

SPIN_COUNT = "3000"  # libgomp spin rounds before a waiting thread sleeps, on an idle machine
BUSY_CPUS = 0.5      # other processes using this many of our CPUs at start: wait passively
SAMPLE_S = 0.2       # how long the CPUs are watched before deciding
WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
TRAINING_COMMANDS = ("train",)  # the others never load torch

_chosen: dict[str, str] = {}  # what apply_wait_policy set in this process, and why


def busy_cpus(sample_s: float = SAMPLE_S, read: Callable[[], str] | None = None,
              cpus: set[int] | None = None) -> float | None:
    """How many of this process's CPUs other processes kept busy over
    ``sample_s`` (this process sleeps meanwhile): 1.0 is one CPU's worth.
    Time stolen by a hypervisor counts as busy.  None where ``/proc/stat``
    cannot be read (not Linux)."""
    if read is None:
        def read() -> str:
            with open("/proc/stat") as f:
                return f.read()
    if cpus is None:
        cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        before = _cpu_times(read(), cpus)
        time.sleep(sample_s)
        after = _cpu_times(read(), cpus)
    except (OSError, ValueError, IndexError):
        return None
    busy, total = after[0] - before[0], after[1] - before[1]
    n = len(cpus) if cpus else (os.cpu_count() or 1)
    return n * busy / total if total > 0 else None


def _cpu_times(stat: str, cpus: set[int] | None) -> tuple[int, int]:
    """Busy and total jiffies over ``cpus`` (all when None) from /proc/stat."""
    busy = total = 0
    for line in stat.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in rest.split()[:8])
        b = user + nice + system + irq + softirq + steal
        busy += b
        total += b + idle + iowait
    if not total:
        raise ValueError("no cpu lines")
    return busy, total


def busy_at_start(sample_s: float = SAMPLE_S) -> float | None:
    """Other processes' sustained use of this process's CPUs: what
    ``busy_cpus`` sees now, but no more than the 1-minute load average, so a
    blip (a shell command, the end of someone's test) is not taken for a
    neighbour that stays.  None where it cannot be read."""
    now = busy_cpus(sample_s)
    try:
        minute = os.getloadavg()[0]
    except (AttributeError, OSError):
        return now
    return None if now is None else min(now, minute)


def choose_wait(busy: float | None) -> tuple[dict[str, str], str]:
    """The environment for OpenMP given how busy the CPUs are, and why."""
    if busy is not None and busy >= BUSY_CPUS:
        return {"OMP_WAIT_POLICY": "PASSIVE"}, f"{busy:.1f} CPUs busy at start"
    why = "CPUs idle at start" if busy is not None else "load unknown"
    return {"GOMP_SPINCOUNT": SPIN_COUNT}, why


def apply_wait_policy(argv: Sequence[str] | None = None, environ: MutableMapping[str, str] | None = None,
                      measure: Callable[[], float | None] = busy_at_start) -> bool:
    """Choose how OpenMP threads wait, for a command that trains (``argv``:
    the command's arguments; none is the demo), unless the user chose or
    torch has loaded.  Returns whether anything was set."""
    env = os.environ if environ is None else environ
    if argv and argv[0] not in TRAINING_COMMANDS:
        return False
    if any(env.get(name) for name in WAIT_VARS):
        return False
    if "torch" in sys.modules:
        return False
    chosen, why = choose_wait(measure())
    env.update(chosen)
    _chosen.clear()
    _chosen.update(chosen, why=why)
    return True


def describe_wait(environ: MutableMapping[str, str] | None = None) -> str:
    """What OpenMP threads do between regions, from the environment they
    loaded with: ``omp spin 3000: CPUs idle at start``, ``omp passive``,
    ``omp default``; the reason when this module chose it."""
    env = os.environ if environ is None else environ
    spin = (env.get("GOMP_SPINCOUNT") or "").strip()
    policy = (env.get("OMP_WAIT_POLICY") or "").strip().lower()
    if spin:
        text = f"omp spin {spin}"
    elif policy in ("passive", "active"):
        text = f"omp {policy}"
    else:
        return "omp default"
    ours = _chosen and all(env.get(k) == v for k, v in _chosen.items() if k != "why")
    return f"{text}: {_chosen['why']}" if ours else text

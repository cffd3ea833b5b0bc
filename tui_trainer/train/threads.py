"""torch's CPU threads on a shared machine: how they wait, and how many.

torch runs its CPU kernels on an OpenMP team (GNU libgomp in the pip builds).
Two things decide how fast that team trains beside other people's jobs, and
this module sets both without the user doing anything:

**How threads wait** (``apply_wait_policy``, before torch loads).  Between two
parallel regions a libgomp thread spins before it sleeps (by default about
300,000 rounds, milliseconds).  On an idle machine that starts the next region
a little sooner; on a busy one a thread spinning for a partner the kernel has
descheduled burns the time its partner, or the neighbour, needs.  Measured on
the 2-core demo machine (``benchmarks/bench_contention.py``; the README's
Speed section has the tables): idle, waiting passively
(``OMP_WAIT_POLICY=PASSIVE``) costs 20-30% and a short spin
(``GOMP_SPINCOUNT=3000``) nothing; busy, passive waits match or beat every
other wait (beside another torch job: 45k tok/s against 40k for the default
and 2k for the default spin set explicitly).  OpenMP reads this once, when
torch loads, so the command looks at the machine at its entry: when other
processes use half a CPU or more of this process's CPUs (``BUSY_CPUS``,
sampled from ``/proc/stat`` for ``SAMPLE_S`` and capped by the 1-minute load
average, so a passing blip does not count) threads wait passively, otherwise
they spin briefly (``SPIN_COUNT``).

**How many threads** (``ThreadGovernor``, between steps).  Beside busy
processes fewer threads are often faster, and which count is best changes
as neighbours come and go, so the engine measures its steps and moves the
count along a ladder (1, 2, 4, ... torch's default).  That changes no number
the run computes: the one kernel of a step whose result follows the thread
count (LayerNorm's weight and bias gradients) keeps running at the full count
(``model.pin_gradient_threads``), so a run gives the same losses, bit for
bit, on a busy machine and on an idle one.

A user's own setting wins: ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` in the
environment leave the wait alone, ``--threads N`` or ``OMP_NUM_THREADS`` pin
the count (``hardware.configure``).  Once torch has loaded (a script that
imported it first, the test suite) the wait is not changed either: the
environment would only disagree with what OpenMP is doing.  Intel OpenMP
builds read ``OMP_WAIT_POLICY`` but not ``GOMP_SPINCOUNT`` (their spin is
``KMP_BLOCKTIME``): left as they are, unmeasured.

``describe_wait`` names the wait in effect, and why; ``Hardware.describe``
adds the count ("1-2 threads (auto)"), and so does the run-start record.
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
_busy_at_start: list[float | None] = []  # what it measured (empty: it did not measure)


def idle_at_start() -> bool:
    """Whether the command saw its CPUs idle when it started (False when it
    did not look: torch loaded first, or a wait set by hand)."""
    return bool(_busy_at_start) and _busy_at_start[0] is not None and _busy_at_start[0] < BUSY_CPUS


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
    busy = measure()
    _busy_at_start[:] = [busy]
    chosen, why = choose_wait(busy)
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


# --- how many threads: the governor ------------------------------------------

def ladder(most: int) -> list[int]:
    """The thread counts a governor moves between: 1, 2, 4, ... and ``most``."""
    rungs, n = [], 1
    while n < most:
        rungs.append(n)
        n *= 2
    return rungs + [max(1, most)]


class ThreadGovernor:
    """Follows the machine's load with torch's CPU thread count, between steps.

    Beside busy processes fewer threads are often faster (on 2 cores with two
    busy neighbours, one thread trains up to 2x faster than two), but which count
    is best depends on the neighbour and changes when it comes and goes.  So
    the governor measures: it trains in windows (``WINDOW_STEPS`` steps and at
    least ``WINDOW_S`` seconds), and every so often it tries the next rung of
    the ``ladder`` down or up for a shorter window (``TRIAL_S``), keeping it
    if it was ``MARGIN`` faster than the window just before.  The first try
    comes after ``FIRST_TRY`` windows (``IDLE_FIRST_TRY`` when the CPUs were
    ``idle`` at start); a try that loses doubles the wait before the next
    (quadruples it when it was ``FAR_WORSE``), up to ``MOST_WINDOWS``, so an
    idle machine pays well under 1%.  Two windows in a
    row far slower or faster than the last decision's (``SHIFT``) mean the
    load changed, and the next window tries at once.

    Changing the count changes no number the run computes: every CPU kernel
    of a step reduces each output element within one thread, except
    LayerNorm's weight and bias gradients, which ``model.LayerNorm`` keeps at
    the full count (``pin_gradient_threads``); ``tests/test_threads.py``
    trains while switching the count every step and compares every loss, bit
    for bit, with a run pinned at the full count.  ``set_threads`` is
    ``torch.set_num_threads``; this module itself never imports torch."""

    WINDOW_STEPS = 3
    WINDOW_S = 0.5
    MARGIN = 0.05     # a tried count must be this much faster to be kept
    SHIFT = 0.2       # two windows in a row this much off the last decision's: the load changed
    FIRST_TRY = 1     # windows before the first try (and after a kept one)
    IDLE_FIRST_TRY = 16  # ... when the CPUs were idle at start: a load, if one comes, shows as a shift
    MOST_WINDOWS = 64  # the longest wait between tries
    TRIAL_S = 0.25    # a try's window is shorter: a bad count costs while it is tried
    FAR_WORSE = 0.2   # a try this much slower waits four times as long for the next, not twice

    def __init__(self, most: int, set_threads: Callable[[int], None], idle: bool = False):
        self.rungs = ladder(most)
        self.current = self.rungs[-1]
        self._set = set_threads
        self._times: list[float] = []
        self._trying: int | None = None   # the count on trial this window
        self._before: float | None = None  # the current count's last window (seconds per step)
        self._decided: float | None = None  # the window time when the count was last confirmed
        self._wait = self.IDLE_FIRST_TRY if idle else self.FIRST_TRY
        self._windows = 0               # windows since the last try
        self._shifted = 0               # windows in a row off the last decision's time
        self._up = False                # which way the next try goes
        self._going_up = False          # which way the try under way went
        self._skip = 1                  # steps not timed: the first, and the first after a change
        self.switches = 0

    @property
    def threads(self) -> int:
        """The count in force now (a trial's, during a trial)."""
        return self._trying or self.current

    def step_done(self, seconds: float) -> None:
        """Call after each training step with the time it took."""
        if self._skip:
            self._skip -= 1
            return
        self._times.append(seconds)
        if len(self._times) < self.WINDOW_STEPS or sum(self._times) < (
                self.WINDOW_S if self._trying is None else self.TRIAL_S):
            return
        times, self._times = sorted(self._times), []
        window = times[len(times) // 2]  # the median step: one slow step (a neighbour's burst) does not decide
        if self._trying is not None:
            self._end_trial(window)
        else:
            self._end_window(window)

    def _end_window(self, window: float) -> None:
        self._before = window
        self._windows += 1
        if self._decided is None:
            self._decided = window
        self._shifted = self._shifted + 1 if abs(window / self._decided - 1) > self.SHIFT else 0
        if (self._windows >= self._wait or self._shifted >= 2) and len(self.rungs) > 1:
            self._try_next()

    def _try_next(self) -> None:
        i = self.rungs.index(self.current)
        up = self._up if 0 < i < len(self.rungs) - 1 else i == 0
        self._up = not up  # a losing try: the other way next time
        self._going_up = up
        self._trying = self.rungs[i + 1] if up else self.rungs[i - 1]
        self._windows = self._shifted = 0
        self._change(self._trying)

    def _end_trial(self, window: float) -> None:
        trying, self._trying = self._trying, None
        assert trying is not None and self._before is not None
        if window < self._before * (1 - self.MARGIN):
            self.current = trying  # kept: try again soon, further the same way
            self._up = self._going_up
            self.switches += 1
            self._wait = self.FIRST_TRY
            self._decided = window
        else:
            self._change(self.current)
            far = window > self._before * (1 + self.FAR_WORSE)
            self._wait = min(self._wait * (4 if far else 2), self.MOST_WINDOWS)
            self._decided = self._before

    def _change(self, n: int) -> None:
        self._set(n)
        self._skip = 1

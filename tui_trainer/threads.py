"""How torch's CPU threads wait for work: chosen before torch loads, never by load.

torch runs its CPU kernels on an OpenMP team (GNU libgomp in the pip and
these machines' builds).  Between two parallel regions a libgomp thread
spins for about 300,000 rounds (milliseconds) before it sleeps.  On an idle
machine that makes the next region start a little sooner.  On a machine
shared with other busy processes it is a disaster: a thread spinning for a
partner that the kernel has descheduled burns the very time slice its
partner needs, and throughput collapses (measured on the 2-core demo
machine with one busy process beside it: 42% of idle; with more, 10x less).

``apply_wait_policy`` sets ``GOMP_SPINCOUNT`` to a short spin (see
``SPIN_COUNT`` for the figures it was chosen from), at the command's entry,
before anything imports torch: libgomp reads its environment once, when it
loads.  It changes how threads *wait*, never how many there are or how work
is split among them, so every number a run computes is the same, bit for
bit, whatever the load (the thread count, which does change the last bits
of a result, is torch's default or ``--threads N``, and nothing here looks
at the load).

A user's own setting wins: with ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``
in the environment, nothing is changed.  Called after torch has loaded (a
script that imported torch first, the test suite), it changes nothing, since
it would only make the environment disagree with what OpenMP is doing.
Intel OpenMP builds (``KMP_BLOCKTIME``) are left as they are: unmeasured.

``describe_wait`` names what is in effect for ``Hardware.describe``, and so
for the run-start record.
"""
from __future__ import annotations

import os
import sys
from typing import MutableMapping

# libgomp spin rounds before a waiting thread sleeps (its default: 300,000).
SPIN_COUNT = "10000"
WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def apply_wait_policy(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set the short spin unless the user chose a wait policy or torch has
    already loaded.  Returns whether anything was set."""
    env = os.environ if environ is None else environ
    if any(env.get(name) for name in WAIT_VARS):
        return False
    if "torch" in sys.modules:
        return False
    env["GOMP_SPINCOUNT"] = SPIN_COUNT
    return True


def describe_wait(environ: MutableMapping[str, str] | None = None) -> str:
    """What the OpenMP threads do between regions, as the environment they
    loaded with says: ``omp spin 10000``, ``omp passive``, ``omp default``."""
    env = os.environ if environ is None else environ
    spin = env.get("GOMP_SPINCOUNT")
    policy = (env.get("OMP_WAIT_POLICY") or "").strip().lower()
    if spin:
        return f"omp spin {spin.strip()}"
    if policy in ("passive", "active"):
        return f"omp {policy}"
    return "omp default"

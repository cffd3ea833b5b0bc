"""The CPU thread count follows the load (threads.ThreadGovernor) and changes
no number a run computes (model.LayerNorm)."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from tui_trainer.engine import Trainer
from tui_trainer.model import GPT, GPTConfig
from tui_trainer.records import TrainStep
from tui_trainer.threads import ThreadGovernor, ladder


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# --- the numbers do not depend on the thread count ---

def test_every_gradient_is_the_same_at_one_and_two_threads(keep_threads):
    """torch's fused LayerNorm kernel sums its weight and bias gradients per
    thread; the model's LayerNorm must not (this failed with nn.LayerNorm)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=256, context_length=64, n_layer=2, n_head=4, n_embd=64))
    x, y = torch.randint(0, 256, (16, 64)), torch.randint(0, 256, (16, 64))
    grads = {}
    for n in (1, 2):
        torch.set_num_threads(n)
        model.zero_grad()
        logits = model(x)
        F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
        grads[n] = (logits.detach(), {k: p.grad.clone() for k, p in model.named_parameters()})
    assert torch.equal(grads[1][0], grads[2][0])
    differ = [k for k in grads[1][1] if not torch.equal(grads[1][1][k], grads[2][1][k])]
    assert differ == []


def _losses(cfg, governor_threads=None):
    records = []

    class Sink:
        def emit(self, rec):
            records.append(rec)

    trainer = Trainer(cfg, None, [Sink()])
    if governor_threads is not None:
        trainer.governor = governor_threads
    end = trainer.run()
    assert end.status == "finished"
    return [r.train_loss for r in records if isinstance(r, TrainStep)]


class Flipper:
    """A governor that changes the thread count after every step."""

    def __init__(self):
        self.seen = []

    def step_done(self, seconds):
        n = 1 if torch.get_num_threads() > 1 else 2
        torch.set_num_threads(n)
        self.seen.append(n)


def test_a_run_computes_the_same_losses_whatever_the_thread_count(tiny_cfg, keep_threads):
    """Trained at 1 thread, at 2, and switching every step: every loss and the
    final weights are equal bit for bit (the promise that lets the count follow
    the load: a busy machine and an idle one give the same run)."""
    shape = dict(n_layer=2, n_head=4, n_embd=64, context_length=32, batch_size=8, steps=12, eval_every=12)
    one = _losses(tiny_cfg(threads=1, **shape))
    two = _losses(tiny_cfg(threads=2, **shape))
    flipper = Flipper()
    torch.set_num_threads(2)
    flipping = _losses(tiny_cfg(**shape), governor_threads=flipper)
    assert len(one) == 12 and set(flipper.seen) == {1, 2}
    assert one == two == flipping


# --- the governor ---

def test_the_ladder():
    assert ladder(1) == [1] and ladder(2) == [1, 2] and ladder(6) == [1, 2, 4, 6] and ladder(8) == [1, 2, 4, 8]


class Machine:
    """Simulated step times per thread count, with noise; ``load`` changes them."""

    def __init__(self, times, noise=0.05, seed=0):
        self.times = times
        self.noise = noise
        self.rng = random.Random(seed)
        self.threads = max(times)
        self.counts: dict[int, int] = {}

    def set(self, n):
        self.threads = n

    def run(self, governor, steps):
        for _ in range(steps):
            self.counts[self.threads] = self.counts.get(self.threads, 0) + 1
            governor.step_done(self.times[self.threads] * (1 + self.rng.uniform(-self.noise, self.noise)))


def test_an_idle_machine_keeps_every_thread_and_pays_little_for_trying():
    m = Machine({1: 0.015, 2: 0.010})  # idle 2 cores: two threads 1.5x faster
    g = ThreadGovernor(2, m.set)
    m.run(g, 6000)  # a minute of training
    assert g.current == 2 and m.threads == 2
    tried = m.counts.get(1, 0)
    lost = tried * (0.015 - 0.010) / (tried * 0.015 + m.counts[2] * 0.010)  # of the time, against 2 throughout
    assert tried > 0 and lost < 0.02  # it does try, and the tries cost little
    m.counts = {}
    m.run(g, 30000)  # five more minutes: tries are rarer still
    assert m.counts[1] * 0.005 / (30000 * 0.010) < 0.006


def test_a_busy_machine_moves_to_fewer_threads_and_back_when_the_load_leaves():
    m = Machine({1: 0.020, 2: 0.030})  # two busy neighbours: one thread 1.5x faster
    g = ThreadGovernor(2, m.set)
    m.run(g, 100)  # two seconds
    assert g.current == 1 and m.threads == 1
    m.counts = {}
    m.run(g, 1000)
    assert m.counts[1] > 0.9 * 1000
    m.times = {1: 0.015, 2: 0.010}  # the neighbours left
    m.counts = {}
    m.run(g, 1000)
    assert g.current == 2 and m.counts[2] > 0.75 * 1000  # back within about three seconds


def test_a_many_core_machine_climbs_down_the_ladder_to_the_best_rung():
    m = Machine({1: 0.05, 2: 0.03, 4: 0.02, 8: 0.04, 16: 0.08})
    g = ThreadGovernor(16, m.set)
    m.run(g, 2000)
    assert g.current == 4 and m.threads == 4


def test_noise_alone_does_not_make_it_wander():
    m = Machine({1: 0.010, 2: 0.010}, noise=0.3, seed=3)  # equal speeds, 30% noise
    g = ThreadGovernor(2, m.set)
    m.run(g, 5000)
    assert g.switches < 12  # a flap costs nothing here, but it must not flap every window


def test_one_slow_step_does_not_decide():
    m = Machine({1: 0.015, 2: 0.010}, noise=0.0)
    g = ThreadGovernor(2, m.set)
    m.run(g, 200)
    calls = []
    g._set = lambda n: calls.append(n) or m.set(n)
    for i in range(400):
        g.step_done(2.0 if i % 50 == 0 else m.times[m.threads])  # a neighbour's burst now and then
    assert g.current == 2 and all(n in (1, 2) for n in calls)


def test_a_single_thread_machine_never_changes_anything():
    calls = []
    g = ThreadGovernor(1, calls.append)
    for _ in range(500):
        g.step_done(0.01)
    assert calls == [] and g.threads == 1


# --- where it is on ---

def test_the_count_is_automatic_on_cpu_unless_pinned(no_cuda, keep_threads, monkeypatch):
    from tui_trainer.config import make_config
    from tui_trainer.hardware import configure

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    hw = configure(make_config({}))
    assert hw.threads_auto and "1-2 threads (auto)" in hw.describe()
    pinned = configure(make_config({"threads": 2}))
    assert not pinned.threads_auto and "2 threads" in pinned.describe() and "auto" not in pinned.describe()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's environment wins
    torch.set_num_threads(2)
    assert not configure(make_config({})).threads_auto


def test_the_trainer_governs_only_an_unpinned_cpu_run(tiny_cfg, no_cuda, keep_threads, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    assert isinstance(Trainer(tiny_cfg()).governor, ThreadGovernor)
    assert Trainer(tiny_cfg(threads=2)).governor is None

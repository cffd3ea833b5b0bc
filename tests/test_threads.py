"""The CPU thread count follows the load (threads.ThreadGovernor) and changes
no number a run computes (model.pin_gradient_threads)."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from tui_trainer.train import threads
from tui_trainer.train.engine import Trainer
from tui_trainer.train.model import GPT, GPTConfig, LayerNorm, pin_gradient_threads
from tui_trainer.records import TrainStep
from tui_trainer.train.threads import ThreadGovernor, ladder


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# --- the numbers do not depend on the thread count in force ---

def _grads(model, x, y):
    model.zero_grad()
    logits = model(x)
    F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
    return logits.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


def test_only_layernorm_gradients_follow_the_thread_count_and_pinning_holds_them(keep_threads):
    """At 1 thread and at 2 every gradient of a step is equal but LayerNorm's
    weight and bias (torch's fused kernel sums them per thread); with their
    thread count pinned, those are equal too."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=256, context_length=64, n_layer=2, n_head=4, n_embd=64))
    x, y = torch.randint(0, 256, (16, 64)), torch.randint(0, 256, (16, 64))
    torch.set_num_threads(2)
    logits2, two = _grads(model, x, y)
    torch.set_num_threads(1)
    logits1, one = _grads(model, x, y)
    assert torch.equal(logits1, logits2)
    differ = {k for k in two if not torch.equal(one[k], two[k])}
    assert differ and all(".ln_" in k for k in differ)  # the LayerNorms' and nothing else
    pin_gradient_threads(model, 2)
    _, pinned = _grads(model, x, y)
    assert torch.get_num_threads() == 1  # restored after each backward
    assert [k for k in two if not torch.equal(pinned[k], two[k])] == []


def test_at_the_pinned_count_the_layernorm_is_torchs_own(keep_threads):
    ln = LayerNorm(8)
    ln.gradient_threads = torch.get_num_threads()
    x = torch.randn(4, 8, requires_grad=True)
    assert type(ln(x).grad_fn).__name__ == "NativeLayerNormBackward0"  # no detour when nothing moved
    torch.set_num_threads(max(1, ln.gradient_threads // 2) if ln.gradient_threads > 1 else 2)
    assert type(ln(x).grad_fn).__name__ != "NativeLayerNormBackward0"
    with torch.no_grad():
        assert torch.equal(ln(x), F.layer_norm(x, (8,), ln.weight, ln.bias))


def _losses(cfg, governor=None):
    records = []

    class Sink:
        def emit(self, rec):
            records.append(rec)

    trainer = Trainer(cfg, None, [Sink()])
    if governor is not None:  # in place of the Trainer's own (which pinned the LayerNorms at 2)
        trainer.governor = governor
    end = trainer.run()
    assert end.status == "finished"
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    return [r.train_loss for r in records if isinstance(r, TrainStep)], weights


class Flipper:
    """A governor that changes the thread count after every step."""

    def __init__(self):
        self.seen = []

    def step_done(self, seconds):
        n = 1 if torch.get_num_threads() > 1 else 2
        torch.set_num_threads(n)
        self.seen.append(n)


def test_a_run_whose_thread_count_moves_computes_what_a_pinned_run_does(tiny_cfg, keep_threads):
    """Switching between 1 and 2 threads every step: every loss and the final
    weights equal a run pinned at 2, bit for bit (so a busy machine and an
    idle one give the same run)."""
    shape = dict(n_layer=2, n_head=4, n_embd=64, context_length=64, batch_size=32, steps=30, eval_every=30)
    pinned, w_pinned = _losses(tiny_cfg(threads=2, **shape))
    flipper = Flipper()
    torch.set_num_threads(2)
    moving, w_moving = _losses(tiny_cfg(**shape), governor=flipper)
    assert len(pinned) == 30 and set(flipper.seen) == {1, 2}
    assert moving == pinned
    assert all(torch.equal(w_moving[k], w_pinned[k]) for k in w_pinned)


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


def test_tries_of_a_far_worse_count_are_short_and_rare():
    """Beside two busy processes two threads can be twice as slow as one:
    each try of it costs, so tries are short and back off faster."""
    m = Machine({1: 0.020, 2: 0.040}, noise=0.02)
    g = ThreadGovernor(2, m.set)
    m.run(g, 50)  # it starts at two, and moves
    assert g.current == 1
    m.counts = {}
    m.run(g, 3000)  # a minute at one thread
    time_at_two = m.counts.get(2, 0) * 0.040
    assert g.current == 1 and time_at_two / (time_at_two + m.counts[1] * 0.020) < 0.025  # 5% before


def test_a_many_core_machine_climbs_down_the_ladder_to_the_best_rung():
    m = Machine({1: 0.05, 2: 0.03, 4: 0.02, 8: 0.04, 16: 0.08})
    g = ThreadGovernor(16, m.set)
    m.run(g, 2000)
    assert g.current == 4 and m.threads == 4


def test_idle_at_start_it_waits_longer_to_try_but_sees_a_load_arrive():
    m = Machine({1: 0.015, 2: 0.010}, noise=0.0)
    g = ThreadGovernor(2, m.set, idle=True)
    m.run(g, 700)  # about 14 windows
    assert m.counts.get(1, 0) == 0
    m.times = {1: 0.020, 2: 0.030}  # a neighbour arrives mid-run
    m.counts = {}
    m.run(g, 500)
    assert g.current == 1 and m.counts[1] > 0.7 * 500


def test_idle_at_start_is_what_the_command_measured(monkeypatch):
    monkeypatch.setattr(threads, "_chosen", {})
    monkeypatch.setattr(threads, "_busy_at_start", [])
    assert not threads.idle_at_start()  # nothing measured: the suite, or torch loaded first
    monkeypatch.delitem(__import__("sys").modules, "torch")  # as before torch loads
    assert threads.apply_wait_policy(["train"], {}, measure=lambda: 0.1)
    assert threads.idle_at_start()
    assert threads.apply_wait_policy(["train"], {}, measure=lambda: 1.5)
    assert not threads.idle_at_start()


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
    from tui_trainer.train.hardware import configure

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
    governed = Trainer(tiny_cfg())
    assert isinstance(governed.governor, ThreadGovernor)
    assert {m.gradient_threads for m in governed.model.modules() if isinstance(m, LayerNorm)} == {2}
    assert Trainer(tiny_cfg(threads=2)).governor is None


def test_the_status_line_shows_the_threads_in_use_and_nothing_odd():
    from tui_trainer.records import Resources
    from tui_trainer.ui.status_line import fmt_memory

    assert fmt_memory(Resources(step=5, rss_mb=412.0, threads=1)) == "mem 412M 1 thread"
    assert fmt_memory(Resources(step=5, rss_mb=412.0, threads=2)) == "mem 412M 2 threads"
    assert fmt_memory(Resources(step=5, rss_mb=412.0)) == "mem 412M"  # a GPU run, or an older log
    for odd in (0, -3, True, 10**9, 2.5, "2"):  # a file's values are untrusted
        assert "thread" not in fmt_memory(Resources(step=5, rss_mb=412.0, threads=odd))


def test_resources_records_carry_the_thread_count(tiny_cfg, keep_threads, monkeypatch):
    from tui_trainer.run import resources
    from tui_trainer.records import Resources

    monkeypatch.setattr(resources, "EVERY_S", 0.0)  # a sample after every step
    records = []

    class Sink:
        def emit(self, rec):
            records.append(rec)

    torch.set_num_threads(2)
    Trainer(tiny_cfg(steps=4, eval_every=4, warmup_steps=1), None, [Sink()]).run()
    counts = {r.threads for r in records if isinstance(r, Resources)}
    assert counts and counts <= {1, 2}

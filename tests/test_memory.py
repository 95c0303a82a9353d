import io

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from forgetless.errors import UsageError
from forgetless.memory import ExemplarSet, ReplayBuffer, check_memory, herding


def stream(buf, n, g, device, batch=7, classes=None):
    """Offer examples 0..n-1 (x = the example's number) in batches, on ``device`` as a run's data;
    the buffer's choices are drawn with the CPU generator ``g``."""
    ids = torch.arange(n, device=device)
    y = ids % classes if classes else torch.zeros(n, dtype=torch.long, device=device)
    for i in range(0, n, batch):
        buf.add(
            ids[i : i + batch].float()[:, None],
            y[i : i + batch],
            torch.zeros(len(ids[i : i + batch]), dtype=torch.long, device=device),
            g,
        )


def test_reservoir_keeps_capacity_and_is_uniform_over_the_stream(device):
    g = torch.Generator().manual_seed(0)
    n, cap, runs = 50, 10, 2000
    counts = np.zeros(n)
    for _ in range(runs):
        buf = ReplayBuffer(cap, "reservoir")
        stream(buf, n, g, device)
        assert len(buf) == cap and buf.seen == n
        kept = buf.tensors()[0][:, 0].long()
        assert len(set(kept.tolist())) == cap  # each stream element at most once
        counts[kept.cpu().numpy()] += 1
    # every element kept with probability cap / n
    assert chisquare(counts, np.full(n, runs * cap / n)).pvalue > 0.01


def test_reservoir_fills_in_order_before_it_is_full(device):
    buf = ReplayBuffer(5)
    stream(buf, 3, torch.Generator().manual_seed(1), device, batch=2)
    assert buf.tensors()[0][:, 0].tolist() == [0, 1, 2] and len(buf) == 3
    assert all(v.device == device for v in buf.tensors())  # stored where the data lives


def test_balanced_keeps_classes_balanced_and_uniform_within_a_class(device):
    g = torch.Generator().manual_seed(0)
    buf = ReplayBuffer(30, "balanced")
    for c, n in ((0, 100), (1, 80), (2, 60)):  # classes arrive one after another
        x = torch.arange(n, device=device).float()[:, None]
        buf.add(x, torch.full((n,), c, device=device), torch.full((n,), c, device=device), g)
        counts = buf.class_counts()
        assert sum(counts.values()) == 30 and max(counts.values()) - min(counts.values()) <= 1
        assert set(counts) == set(range(c + 1))
    assert buf.class_counts() == {0: 10, 1: 10, 2: 10}
    # a small class keeps all of its examples, the others share the rest
    small = ReplayBuffer(20, "balanced")
    for c, n in ((0, 40), (1, 4), (2, 40)):
        small.add(
            torch.zeros(n, 1, device=device),
            torch.full((n,), c, device=device),
            torch.zeros(n, dtype=torch.long, device=device),
            g,
        )
    assert small.class_counts() == {0: 8, 1: 4, 2: 8}
    # within a class, the kept examples are a uniform sample of that class
    counts = np.zeros(50)
    for _ in range(600):
        b = ReplayBuffer(10, "balanced")
        b.add(
            torch.arange(50, device=device).float()[:, None],
            torch.zeros(50, dtype=torch.long, device=device),
            torch.zeros(50, dtype=torch.long, device=device),
            g,
        )
        counts[b.tensors()[0][:, 0].long().cpu().numpy()] += 1
    assert chisquare(counts, np.full(50, 600 * 10 / 50)).pvalue > 0.01


def test_sample_draws_distinct_examples_reproducibly(device):
    buf = ReplayBuffer(20)
    stream(buf, 20, torch.Generator().manual_seed(0), device)
    a = buf.sample(8, torch.Generator().manual_seed(5))[0][:, 0]
    b = buf.sample(8, torch.Generator().manual_seed(5))[0][:, 0]
    assert torch.equal(a, b) and len(set(a.tolist())) == 8
    assert len(buf.sample(100)[0]) == 20


def brute_force_herding(f, m):
    phi = f / np.linalg.norm(f, axis=1, keepdims=True)
    mu = phi.mean(0)
    chosen = []
    for k in range(1, m + 1):
        best, best_d = None, np.inf
        for i in range(len(phi)):
            if i in chosen:
                continue
            d = np.linalg.norm(mu - (phi[i] + sum(phi[j] for j in chosen)) / k)
            if d < best_d:
                best, best_d = i, d
        chosen.append(best)
    return chosen


def test_herding_equals_the_direct_greedy_computation(device):
    rng = np.random.default_rng(0)
    for n, d, m in ((30, 5, 10), (12, 3, 12), (40, 8, 7)):
        f = rng.normal(size=(n, d))
        chosen = herding(torch.tensor(f, device=device), m)  # features as iCaRL gives them: on the device
        assert chosen.device == device and chosen.tolist() == brute_force_herding(f, m)
    assert len(herding(torch.randn(4, 3, device=device), 10)) == 4
    # the first exemplar is the example closest to the mean
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], device=device)
    assert herding(f, 1).tolist() == [2]


def test_exemplar_set_reduce_keeps_the_priority_prefix(device):
    s = ExemplarSet()
    s.set(3, torch.arange(5, device=device).float()[:, None], task=1)
    s.set(1, torch.arange(4, device=device).float()[:, None] + 10, task=0)
    s.reduce(2)
    x, y, t = s.tensors()
    assert x[:, 0].tolist() == [10, 11, 0, 1] and y.tolist() == [1, 1, 3, 3] and t.tolist() == [0, 0, 1, 1]


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf)


@pytest.mark.parametrize("policy", ["reservoir", "balanced"])
def test_buffer_state_dict_round_trip(policy, device):
    g = torch.Generator().manual_seed(0)
    a = ReplayBuffer(12, policy)
    stream(a, 40, g, device, classes=3)
    b = ReplayBuffer(1)
    b.load_state_dict(roundtrip(a.state_dict()))
    for u, v in zip(a.tensors(), b.tensors()):
        assert torch.equal(u, v)
    assert (b.seen, b.class_seen, b.capacity, b.policy) == (a.seen, a.class_seen, a.capacity, a.policy)
    # both continue identically
    ga, gb = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    stream(a, 30, ga, device, classes=4)
    stream(b, 30, gb, device, classes=4)
    for u, v in zip(a.tensors(), b.tensors()):
        assert torch.equal(u, v)


def test_memory_must_be_positive():
    with pytest.raises(UsageError, match="memory"):
        check_memory(0, "er")
    with pytest.raises(UsageError):
        ReplayBuffer(0)
    with pytest.raises(UsageError, match="policy"):
        ReplayBuffer(3, "fifo")

"""NeuralGas (Martinetz & Schulten 1991, 1994) on seeded 2-D points drawn from known shapes.

Neural gas is a geometric algorithm, so these tests use points sampled uniformly from disks and a
square, whose answers are known: the gas must quantise them, its competitive Hebbian edges must stay
inside each of two separated clusters, and single steps must match hand computations.
"""

import itertools
import math

import pytest
import torch

from forgetless.errors import UsageError
from forgetless.neural_gas import NeuralGas, anneal

pytestmark = pytest.mark.usefixtures("one_thread")


def disk(centre, n, seed, radius=1.0, device="cpu"):
    """n points uniform in a disk (seeded)."""
    g = torch.Generator().manual_seed(seed)
    r = radius * torch.rand(n, generator=g).sqrt()
    a = 2 * math.pi * torch.rand(n, generator=g)
    return torch.stack([centre[0] + r * a.cos(), centre[1] + r * a.sin()], 1).to(device)


def two_clusters(device, seed=0, n=300):
    return torch.cat([disk((-4.0, 0.0), n, seed, device=device), disk((4.0, 0.0), n, seed + 1, device=device)])


def test_quantization_error_falls_as_it_trains(device):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(800, 2, generator=g).to(device)  # the unit square
    ng = NeuralGas(16)
    short = NeuralGas(16)
    short.fit(x, epochs=1, seed=0)
    history = ng.fit(x, epochs=8, seed=0, record=True)
    assert ng.centroids.device.type == device.type
    # The gas starts at 16 inputs drawn with the same seed: measure that starting point.
    start = NeuralGas(16)
    start.add_nodes(x[torch.randperm(800, generator=torch.Generator().manual_seed(0))[:16].to(device)], -1)
    e0 = start.quantization_error(x)
    assert history[-1] < 0.5 * e0
    assert ng.quantization_error(x) < short.quantization_error(x)
    # after the first epochs (large lambda pulls the nodes together) the error only falls
    assert all(b <= a + 1e-6 for a, b in itertools.pairwise(history[1:])), history
    # The 4x4 grid, a near-optimal quantiser of the unit square by 16 nodes: each square cell of
    # side 1/4 has mean squared distance 2 * (1/4)^2 / 12 to its centre. The gas comes within 20%.
    assert history[-1] < 1.2 * 2 * (1 / 4) ** 2 / 12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_edge_between_two_separated_clusters(device, seed):
    x = two_clusters(device, seed=10 * seed)
    ng = NeuralGas(20)
    ng.fit(x, epochs=10, seed=seed)
    i, j = ng.edges.nonzero().unbind(1)
    assert len(i) > 0
    side = ng.centroids[:, 0] > 0
    assert torch.equal(side[i], side[j]), "an edge crosses between the two clusters"
    # Every edge is an edge of the Delaunay graph induced by the data: its two nodes are the two
    # nearest nodes of some input (the last CHL step that created it); dead nodes have none.
    nodes_with_data = torch.zeros(ng.size, dtype=torch.bool, device=device)
    nodes_with_data[ng.nearest(x)] = True
    assert nodes_with_data[i].all()
    assert torch.equal(ng.edges, ng.edges.T) and torch.equal(ng.ages, ng.ages.T)
    assert not ng.edges.diagonal().any()
    # Both clusters are modelled by connected nodes
    assert side[i].any() and (~side[i]).any()


def test_a_clusters_edges_connect_its_nodes(device):
    """CHL on fixed nodes: an input's two nearest nodes get an edge, nothing else does."""
    ng = NeuralGas(3)
    ng.add_nodes(torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]], device=device), -1)
    ng.learn_edges(torch.tensor([[0.4, 0.0], [0.6, 0.0]], device=device))
    expected = torch.zeros(3, 3, dtype=torch.bool)
    expected[0, 1] = expected[1, 0] = True
    assert torch.equal(ng.edges.cpu(), expected)


def test_edges_older_than_the_lifetime_disappear(device):
    # Three fixed nodes (eps = 0 keeps them still): A at the origin, B to its right, C above it.
    ng = NeuralGas(3)
    ng.add_nodes(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], device=device), -1)
    near_ab = torch.tensor([0.3, 0.1], device=device)  # winner A, runner-up B
    near_ac = torch.tensor([0.1, 0.3], device=device)  # winner A, runner-up C
    T = 5
    ng.step(near_ab, eps=0.0, lam=1.0, T=T)
    assert ng.edges[0, 1] and ng.ages[0, 1] == 0
    for k in range(1, T + 1):  # each A-C input ages A's other edge, A-B, by one
        ng.step(near_ac, eps=0.0, lam=1.0, T=T)
        assert ng.edges[0, 1] and ng.edges[1, 0] and ng.ages[0, 1] == k == ng.ages[1, 0]
        assert ng.ages[0, 2] == 0  # the refreshed edge stays young
    ng.step(near_ac, eps=0.0, lam=1.0, T=T)  # age T + 1 > T: removed, on both sides
    assert not ng.edges[0, 1] and not ng.edges[1, 0] and ng.ages[0, 1] == 0 == ng.ages[1, 0]
    assert ng.edges[0, 2] and ng.edges[2, 0]
    # B never won: its only edge went when A's did
    assert not ng.edges[1].any()
    # Refreshing: an A-B input after A-B exists resets its age to 0
    ng.step(near_ab, eps=0.0, lam=1.0, T=T)
    ng.step(near_ac, eps=0.0, lam=1.0, T=T)
    ng.step(near_ab, eps=0.0, lam=1.0, T=T)
    assert ng.ages[0, 1] == 0 and ng.ages[0, 2] == 1


def test_one_step_equals_a_direct_computation(device):
    g = torch.Generator().manual_seed(7)
    m = torch.randn(6, 3, generator=g, dtype=torch.float64)
    x = torch.randn(3, generator=g, dtype=torch.float64)
    eps, lam = 0.3, 1.7
    # by hand: the rank of node j = the number of nodes strictly closer to x
    expected = m.clone()
    dist = [sum((x[k] - m[j, k]).item() ** 2 for k in range(3)) for j in range(6)]
    for j in range(6):
        rank = sum(1 for i in range(6) if dist[i] < dist[j])
        expected[j] = m[j] + eps * math.exp(-rank / lam) * (x - m[j])
    ng = NeuralGas(6)
    ng.add_nodes(m.to(device), -1)
    ng.step(x.to(device), eps=eps, lam=lam, T=10)
    torch.testing.assert_close(ng.centroids.cpu(), expected, rtol=0, atol=1e-12)
    i0, i1 = sorted(range(6), key=lambda j: dist[j])[:2]
    assert ng.edges.sum() == 2 and ng.edges[i0, i1] and ng.edges[i1, i0]


def test_fit_anneals_as_the_papers_schedule(device):
    assert anneal(10.0, 0.01, 0, 100) == 10.0
    assert anneal(10.0, 0.01, 50, 100) == pytest.approx(10.0 * (0.001**0.5))
    assert anneal(0.0, 0.0, 5, 10) == 0.0
    # fit = the same steps, by hand, with the annealed parameters and the seeded order
    x = disk((0.0, 0.0), 40, seed=4, device=device)
    ng = NeuralGas(5)
    ng.fit(x, epochs=2, eps_i=0.5, eps_f=0.05, lam_i=3.0, lam_f=0.1, T_i=4, T_f=8, seed=9)
    g = torch.Generator().manual_seed(9)
    by_hand = NeuralGas(5)
    by_hand.add_nodes(x[torch.randperm(40, generator=g)[:5].to(device)], -1)
    t = 0
    for _ in range(2):
        for i in torch.randperm(40, generator=g).tolist():
            by_hand.step(x[i], anneal(0.5, 0.05, t, 80), anneal(3.0, 0.1, t, 80), anneal(4, 8, t, 80))
            t += 1
    torch.testing.assert_close(ng.centroids, by_hand.centroids, rtol=0, atol=0)
    assert torch.equal(ng.edges, by_hand.edges) and torch.equal(ng.ages, by_hand.ages)


def test_seeded_and_deterministic(device):
    x = two_clusters(device, n=100)
    a, b, c = NeuralGas(8), NeuralGas(8), NeuralGas(8)
    a.fit(x, epochs=2, seed=5)
    b.fit(x, epochs=2, seed=5)
    c.fit(x, epochs=2, seed=6)
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.edges, b.edges)
    assert not torch.equal(a.centroids, c.centroids)


def test_labels_variance_and_predict(device):
    x = two_clusters(device, n=200)
    y = torch.cat([torch.zeros(200, dtype=torch.long), torch.ones(200, dtype=torch.long)]).to(device)
    ng = NeuralGas(10)
    ng.fit(x, epochs=5, seed=0, labels=y)
    has_data = ng.var_count > 0
    side = (ng.centroids[:, 0] > 0).long()
    assert torch.equal(ng.labels[has_data], side[has_data])
    assert (ng.labels[~has_data] == -1).all()
    assert (ng.predict(x) == y).all()
    # variance = mean squared deviation of each node's cell from its centroid, per dimension
    near = ng.nearest(x)
    for j in torch.nonzero(has_data).flatten().tolist():
        cell = x[near == j]
        torch.testing.assert_close(ng.variance[j], ((cell - ng.centroids[j]) ** 2).mean(0))
    # a cell of a disk of radius 1 split among ~5 nodes has a variance well below the disk's (1/4)
    assert (ng.variance[has_data] < 0.25).all() and (ng.variance > 0).all()
    # streaming: observing in two halves equals one pass
    whole = ng.variance.clone()
    ng.reset_variance()
    ng.observe(x[:150])
    ng.observe(x[150:])
    torch.testing.assert_close(ng.variance, whole)


def test_add_nodes(device):
    x = two_clusters(device, n=150)
    ng = NeuralGas(8)
    ng.fit(x, epochs=3, seed=0, labels=torch.zeros(300, dtype=torch.long, device=device))
    before = ng.state_dict()
    var_before = ng.variance
    new = torch.tensor([[0.0, 8.0], [0.5, 8.0]], device=device)
    idx = ng.add_nodes(new, torch.tensor([3, 4]))
    assert idx.tolist() == [8, 9] and ng.size == 10 and ng.n_nodes == 10
    assert torch.equal(ng.centroids[:8], before["centroids"]) and torch.equal(ng.centroids[8:], new)
    assert ng.labels[8:].tolist() == [3, 4]
    assert torch.equal(ng.edges[:8, :8], before["edges"]) and not ng.edges[8:].any() and not ng.edges[:, 8:].any()
    assert ng.ages.shape == (10, 10)
    # the new nodes take the old nodes' mean variance until they observe data
    torch.testing.assert_close(ng.variance[8], var_before[ng.var_count[:8] > 0].mean(0))
    torch.testing.assert_close(ng.variance[:8], var_before)
    # predictions go to the new class near its nodes; CHL then connects the new nodes
    assert ng.predict(torch.tensor([[0.1, 8.1], [0.4, 7.9]], device=device)).tolist() == [3, 4]
    ng.learn_edges(torch.tensor([[0.25, 8.0]], device=device))
    assert ng.edges[8, 9] and ng.edges[9, 8]
    ng.add_nodes(torch.tensor([[0.0, -8.0]], device=device), 5, variance=torch.full((1, 2), 0.5, device=device))
    assert ng.variance[10].tolist() == [0.5, 0.5]
    # a gas can also start from add_nodes alone
    fresh = NeuralGas(2)
    fresh.add_nodes(new, torch.tensor([0, 1]))
    assert fresh.predict(new).tolist() == [0, 1]


def test_state_round_trips(device, tmp_path):
    x = two_clusters(device, n=100)
    ng = NeuralGas(6)
    ng.fit(x, epochs=2, seed=1, labels=(x[:, 0] > 0).long())
    ng.add_nodes(torch.tensor([[0.0, 5.0]], device=device), 2)
    torch.save(ng.state_dict(), tmp_path / "ng.pt")
    other = NeuralGas(2)
    other.load_state_dict(torch.load(tmp_path / "ng.pt", weights_only=True))
    for k in NeuralGas.KEYS:
        assert torch.equal(getattr(other, k), getattr(ng, k)), k
    assert other.size == 7 and torch.equal(other.variance, ng.variance)
    # training goes on identically from the restored state
    ng.fit(x, epochs=1, seed=3)
    other.fit(x, epochs=1, seed=3)
    assert torch.equal(other.centroids, ng.centroids) and torch.equal(other.ages, ng.ages)
    # the state is plain tensors: a copy does not alias the gas
    s = ng.state_dict()
    s["centroids"].zero_()
    assert ng.centroids.abs().sum() > 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda ng: ng.fit(torch.zeros(5)), "2-D tensor"),
        (lambda ng: ng.fit(torch.zeros(3, 2)), "only 3 rows"),
        (lambda ng: ng.fit(torch.zeros(10, 2), epochs=0), "epochs"),
        (lambda ng: ng.fit(torch.zeros(10, 2), eps_i=1.5), "eps_i and eps_f"),
        (lambda ng: ng.fit(torch.zeros(10, 2), lam_f=0), "lam_f"),
        (lambda ng: ng.predict(torch.zeros(2, 2)), "no nodes yet"),
        (lambda ng: ng.load_state_dict({"centroids": torch.zeros(2, 2)}), "lacks"),
    ],
)
def test_bad_input_is_a_one_line_usage_error(call, message):
    with pytest.raises(UsageError, match=message) as e:
        call(NeuralGas(4))
    assert "\n" not in str(e.value)


def test_wrong_feature_size_and_labels_are_usage_errors():
    ng = NeuralGas(4)
    ng.fit(torch.rand(20, 2, generator=torch.Generator().manual_seed(0)), epochs=1)
    with pytest.raises(UsageError, match="3 features"):
        ng.nearest(torch.zeros(1, 3))
    with pytest.raises(UsageError, match="one class index"):
        ng.assign_labels(torch.zeros(5, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(UsageError, match="one integer class"):
        ng.add_nodes(torch.zeros(2, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(UsageError, match="corrupt"):
        s = ng.state_dict()
        s["edges"] = torch.zeros(3, 3, dtype=torch.bool)
        NeuralGas(2).load_state_dict(s)
    with pytest.raises(UsageError, match="n_nodes"):
        NeuralGas(1)

"""Importance estimators against plain loops and hand computations, on real sklearn digits."""

import math

import pytest
import torch
import torch.nn.functional as F
from oracles import per_sample_grads_loop
from torch import nn

from forgetless.errors import UsageError
from forgetless.strategies.fisher import fisher_diagonal
from forgetless.strategies.linear_fastpath import choose
from forgetless.strategies.mas import mas_hebbian, mas_importance
from forgetless.strategies.path_integral import PathIntegral, RiemannianWalk, minmax
from forgetless.strategies.scp import scp_importance

N = 48


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits(device):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data[:N], dtype=torch.float32) / 16.0
    y = torch.tensor(d.target[:N], dtype=torch.long)
    return x.to(device), y.to(device)


def tiny(device, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10)).to(device)


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def assert_lists_close(got, want, tol=1e-6):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        assert rel(a, b) < tol, rel(a, b)


# ---- Fisher -----------------------------------------------------------------------------------
BACKENDS = ["vmap", "linear"]  # torch.func per-sample gradients; the outer-product form of nn.Linear


@pytest.mark.parametrize("backend", BACKENDS)
def test_empirical_fisher_equals_loop(digits, backend, device):
    x, y = digits
    m = tiny(device)
    G = per_sample_grads_loop(m, x, y)
    want = [(g * g).mean(0) for g in G]
    assert_lists_close(fisher_diagonal(m, x, y, backend=backend), want)
    assert_lists_close(fisher_diagonal(m, x, y, chunk=5, backend=backend), want)  # chunking


@pytest.mark.parametrize("backend", BACKENDS)
def test_empirical_fisher_with_competing_classes(digits, backend, device):
    x, y = digits
    cls = torch.tensor([1, 3, 5, 7], device=device)  # as a run gives them: on the data's device
    keep = torch.isin(y, cls)
    m = tiny(device)
    G = per_sample_grads_loop(m, x[keep], y[keep], classes=cls)
    got = fisher_diagonal(m, x[keep], y[keep], classes=cls, backend=backend)
    assert_lists_close(got, [(g * g).mean(0) for g in G])
    assert float(got[2][[0, 2, 4, 6, 8, 9]].abs().max()) == 0.0  # non-competing rows of the head
    with pytest.raises(UsageError, match="not among"):
        fisher_diagonal(m, x, y, classes=cls)


def test_fisher_is_not_the_squared_mean_gradient(digits, device):
    x, y = digits
    m = tiny(device)
    fisher = fisher_diagonal(m, x, y)
    loss = F.cross_entropy(m(x), y)
    mean_grad = torch.autograd.grad(loss, list(m.parameters()))
    squared_mean = [g * g for g in mean_grad]
    total_f = sum(float(f.sum()) for f in fisher)
    total_s = sum(float(s.sum()) for s in squared_mean)
    assert total_f > 3 * total_s  # E[g^2] = Var[g] + E[g]^2: much larger at any point
    assert all(rel(f, s) > 0.5 for f, s in zip(fisher, squared_mean))


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_fisher_equals_loop_with_the_same_labels(digits, backend, device):
    x, _ = digits
    m = tiny(device)
    got = fisher_diagonal(m, x, labels="sample", generator=torch.Generator().manual_seed(5), chunk=N, backend=backend)
    with torch.no_grad():
        probs = F.softmax(m(x), -1)
    # drawn on the CPU with the CPU generator, as fisher_targets does: the same labels on every device
    drawn = torch.multinomial(probs.cpu(), 1, generator=torch.Generator().manual_seed(5)).squeeze(1).to(device)
    G = per_sample_grads_loop(m, x, drawn)
    assert_lists_close(got, [(g * g).mean(0) for g in G])


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_fisher_equals_expectation_over_classes(digits, backend, device):
    x, _ = digits
    x = x[:16]
    m = tiny(device)
    with torch.no_grad():
        p = F.softmax(m(x), -1)
    want = None
    for c in range(10):
        Gc = per_sample_grads_loop(m, x, target=c)
        term = [(p[:, c].view(-1, *[1] * (g.dim() - 1)) * g * g).mean(0) for g in Gc]
        want = term if want is None else [w + t for w, t in zip(want, term)]
    assert_lists_close(fisher_diagonal(m, x, labels="exact", backend=backend), want)
    # with competing classes: the expectation runs over those classes only
    cls = torch.tensor([0, 4, 9], device=device)
    with torch.no_grad():
        pc = F.softmax(m(x)[:, cls], -1)
    want = None
    for k in range(3):
        Gc = per_sample_grads_loop(m, x, classes=cls, target=k)
        term = [(pc[:, k].view(-1, *[1] * (g.dim() - 1)) * g * g).mean(0) for g in Gc]
        want = term if want is None else [w + t for w, t in zip(want, term)]
    assert_lists_close(fisher_diagonal(m, x, classes=cls, labels="exact", backend=backend), want)


def test_sampled_fisher_approaches_exact(digits, device):
    x, _ = digits
    m = tiny(device)
    exact = fisher_diagonal(m, x, labels="exact")
    draws = [fisher_diagonal(m, x, labels="sample", generator=torch.Generator().manual_seed(s)) for s in range(40)]
    mean = [torch.stack(d).mean(0) for d in zip(*draws)]
    for a, b in zip(mean, exact):
        assert float((a - b).norm() / b.norm()) < 0.1


def test_samples_cap_takes_a_seeded_subset(digits, device):
    x, y = digits
    m = tiny(device)
    a = fisher_diagonal(m, x, y, samples=10, generator=torch.Generator().manual_seed(3))
    idx = torch.randperm(N, generator=torch.Generator().manual_seed(3))[:10].to(device)
    assert_lists_close(a, fisher_diagonal(m, x[idx], y[idx]))
    assert_lists_close(fisher_diagonal(m, x, y, samples=10 * N), fisher_diagonal(m, x, y))
    with pytest.raises(UsageError, match="labels"):
        fisher_diagonal(m, x, y, labels="true")


# ---- MAS --------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_mas_equals_loop(digits, backend, device):
    x, _ = digits
    m = tiny(device)
    G = per_sample_grads_loop(m, x, target="sqnorm")
    assert_lists_close(mas_importance(m, x, chunk=7, backend=backend), [g.abs().mean(0) for g in G])
    cls = torch.tensor([2, 3], device=device)
    G = per_sample_grads_loop(m, x, classes=cls, target="sqnorm")
    assert_lists_close(mas_importance(m, x, classes=cls, backend=backend), [g.abs().mean(0) for g in G])


def test_mas_hebbian_equals_direct_formula(digits, device):
    x, _ = digits
    m = tiny(device)
    with torch.no_grad():
        h = torch.relu(m[0](x))  # post-activation of the hidden layer
        out = m(x)
    got = mas_hebbian(m, x, chunk=20)
    want = [h.abs().T @ x.abs() / N, h.abs().mean(0), out.abs().T @ h.abs() / N, out.abs().mean(0)]
    assert_lists_close(got, want)
    cls = torch.tensor([0, 1], device=device)
    got = mas_hebbian(m, x, classes=cls)
    assert_lists_close(got[:2], want[:2])
    assert float(got[2][2:].abs().max()) == 0.0 and rel(got[2][:2], want[2][:2]) < 1e-6


class FunctionalMLP(nn.Module):
    """Activations as function calls (F.tanh), not modules: found through the autograd graph."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 8), nn.Linear(8, 10)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x.flatten(1))))


def test_mas_hebbian_finds_functional_activations(digits, device):
    x, _ = digits
    torch.manual_seed(1)
    m = FunctionalMLP().to(device)
    with torch.no_grad():
        h = torch.tanh(m.a(x))
    got = mas_hebbian(m, x)
    assert rel(got[0], h.abs().T @ x.abs() / N) < 1e-6


def test_mas_hebbian_rejects_non_linear_layers(device):
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 10)).to(device)
    with pytest.raises(UsageError, match=r"nn.Linear"):
        mas_hebbian(m, torch.randn(4, 1, 8, 8, device=device))


# ---- SCP --------------------------------------------------------------------------------------
@pytest.mark.parametrize("slices", [3, 25])  # fewer slices than outputs (project first) and more (Jacobian)
def test_scp_equals_direct_computation(digits, slices, device):
    x, _ = digits
    m = tiny(device)
    cls = torch.tensor([1, 2, 4, 8, 9], device=device) if slices == 3 else None
    got = scp_importance(m, x, classes=cls, slices=slices, generator=torch.Generator().manual_seed(11), chunk=13)
    K = 10 if cls is None else len(cls)
    xi = torch.randn(slices, K, generator=torch.Generator().manual_seed(11))  # on the CPU, as scp_importance
    xi = (xi / xi.norm(dim=1, keepdim=True)).to(device)
    out = m(x)
    phi_bar = (out if cls is None else out[:, cls]).mean(0)  # mean output, then project
    want = [torch.zeros_like(p) for p in m.parameters()]
    for k in range(slices):
        g = torch.autograd.grad(phi_bar @ xi[k], list(m.parameters()), retain_graph=True)
        want = [w + gi * gi / slices for w, gi in zip(want, g)]
    assert_lists_close(got, want, tol=1e-5)


# ---- works with any module --------------------------------------------------------------------
def test_estimators_handle_conv_and_frozen_parameters(digits, device):
    x, y = digits
    torch.manual_seed(0)
    m = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 10)).to(
        device
    )
    m[1].bias.requires_grad_(False)
    n_trainable = 3
    G = per_sample_grads_loop(m, x[:12], y[:12])
    assert len(G) == n_trainable
    assert_lists_close(fisher_diagonal(m, x[:12], y[:12]), [(g * g).mean(0) for g in G])
    assert len(mas_importance(m, x[:12])) == n_trainable
    assert len(scp_importance(m, x[:12], slices=4)) == n_trainable
    with pytest.raises(UsageError, match="backend='linear'"):
        fisher_diagonal(m, x[:12], y[:12], backend="linear")


def test_auto_backend_falls_back_when_the_shortcut_does_not_apply(digits, device):
    x, y = digits
    torch.manual_seed(0)
    inplace = nn.Sequential(nn.Linear(64, 8), nn.ReLU(inplace=True), nn.Linear(8, 10)).to(device)  # changed in place
    shared = nn.Linear(64, 64)
    twice = nn.Sequential(shared, nn.Tanh(), shared, nn.Linear(64, 10)).to(device)  # one layer called twice
    for m in (inplace, twice):
        before = list(m.parameters())
        G = per_sample_grads_loop(m, x[:16], y[:16])
        assert_lists_close(fisher_diagonal(m, x[:16], y[:16]), [(g * g).mean(0) for g in G])
        assert_lists_close(
            mas_importance(m, x[:16]), [g.abs().mean(0) for g in per_sample_grads_loop(m, x[:16], target="sqnorm")]
        )
        assert choose(m, x, "auto") is None
        after = list(m.parameters())  # the model is left as it was (a shared module is called via a copy)
        assert len(after) == len(before) and all(a is b and a.requires_grad for a, b in zip(after, before))
    assert choose(tiny(device), x, "auto") is not None


# ---- SI path integral -------------------------------------------------------------------------
def test_si_path_integral_matches_closed_form_on_a_quadratic(device):
    """L = 1/2 sum h_i theta_i^2 with plain SGD: theta_t = r^t theta_0 (r = 1 - eta h), g_t = h theta_t,
    delta_t = -eta g_t, so omega = eta h^2 theta_0^2 sum_{t<T} r^{2t}."""
    h = torch.tensor([1.0, 3.0], dtype=torch.float64, device=device)
    theta0 = torch.tensor([2.0, -1.5], dtype=torch.float64, device=device)
    eta, T, xi = 0.1, 7, 0.1
    theta = theta0.clone().requires_grad_(True)
    opt = torch.optim.SGD([theta], lr=eta)
    path = PathIntegral()
    path.begin([theta])
    for _ in range(T):
        opt.zero_grad()
        (0.5 * (h * theta**2).sum()).backward()
        path.capture([theta.grad])
        opt.step()
        path.step([theta])
    r = 1 - eta * h
    omega = eta * h**2 * theta0**2 * (1 - r ** (2 * T)) / (1 - r**2)
    assert torch.allclose(path.omega[0], omega, rtol=1e-12)
    delta = theta0 * (r**T - 1)
    assert torch.allclose(path.importance([theta], xi)[0], omega / (delta**2 + xi), rtol=1e-12)
    # SGD on a quadratic: the path integral equals the loss decrease
    expected = 0.5 * (h * theta0**2).sum() - 0.5 * (h * theta.detach() ** 2).sum()
    assert math.isclose(float(omega.sum()), float(expected), rel_tol=0.2)


# ---- RWalk ------------------------------------------------------------------------------------
def _rwalk_by_hand(h, theta0, eta, T, alpha, eps, interval):
    """Plain-Python RWalk on L = 1/2 sum h theta^2 with SGD: interval Fisher EMA and clamped scores."""
    th, F_run, score = list(theta0), None, [0.0, 0.0]
    ref, acc_sq, omega, count = list(th), [0.0, 0.0], [0.0, 0.0], 0
    for _ in range(T):
        g = [h[i] * th[i] for i in range(2)]
        new = [th[i] - eta * g[i] for i in range(2)]
        for i in range(2):
            acc_sq[i] += g[i] ** 2
            omega[i] += -g[i] * (new[i] - th[i])
        th, count = new, count + 1
        if count == interval:
            mean_sq = [a / count for a in acc_sq]
            F_run = mean_sq if F_run is None else [alpha * m + (1 - alpha) * f for m, f in zip(mean_sq, F_run)]
            for i in range(2):
                score[i] += max(0.0, omega[i] / (0.5 * F_run[i] * (th[i] - ref[i]) ** 2 + eps))
            ref, acc_sq, omega, count = list(th), [0.0, 0.0], [0.0, 0.0], 0
    return F_run, score


@pytest.mark.parametrize("interval", [1, 3])
def test_rwalk_scores_match_hand_computation(interval, device):
    h, theta0 = [1.0, 4.0], [1.0, -0.5]
    eta, T, alpha, eps = 0.05, 9, 0.9, 1e-3
    theta = torch.tensor(theta0, dtype=torch.float64, device=device, requires_grad=True)
    hv = torch.tensor(h, dtype=torch.float64, device=device)
    opt = torch.optim.SGD([theta], lr=eta)
    walk = RiemannianWalk(alpha=alpha, eps=eps, interval=interval)
    walk.begin([theta])
    for _ in range(T):
        opt.zero_grad()
        (0.5 * (hv * theta**2).sum()).backward()
        walk.capture([theta.grad])
        opt.step()
        walk.step([theta])
    F_hand, s_hand = _rwalk_by_hand(h, theta0, eta, T, alpha, eps, interval)
    assert torch.allclose(walk.fisher[0], torch.tensor(F_hand, dtype=torch.float64, device=device), rtol=1e-10)
    assert torch.allclose(walk.score[0], torch.tensor(s_hand, dtype=torch.float64, device=device), rtol=1e-10)


def test_minmax_normalizes_over_all_parameters():
    v = torch.tensor([2.0, 4.0, 6.0])
    assert torch.allclose(minmax(v), torch.tensor([0.0, 0.5, 1.0]))

"""The shared quadratic penalty: value, closed-form gradient, exact merging of anchors, state."""

import io

import pytest
import torch

from forgetless.strategies.penalty import QuadraticPenalty, flatten, views

SHAPES = [(8, 64), (8,), (10, 8), (10,)]


def make(seed, device, positive=True):
    """Parameter-shaped tensors on ``device`` (drawn on the CPU: the same numbers on every device)."""
    g = torch.Generator().manual_seed(seed)
    ts = [torch.randn(s, generator=g, dtype=torch.float64).to(device) for s in SHAPES]
    return [t.abs() for t in ts] if positive else ts


def params(device, seed=0):
    return [t.clone().requires_grad_(True) for t in make(seed, device, positive=False)]


def direct_value(ps, terms, lam):
    total = torch.zeros((), dtype=torch.float64, device=ps[0].device)
    for omega, anchor in terms:
        for p, o, a in zip(ps, omega, anchor):
            total = total + (o * (p - a) ** 2).sum()
    return lam * total


def test_value_matches_direct_sum(device):
    ps, omega, anchor = params(device), make(1, device), make(2, device, positive=False)
    pen = QuadraticPenalty()
    pen.set(omega, anchor)
    got = pen.value(ps, 0.7)
    assert torch.allclose(got, direct_value(ps, [(omega, anchor)], 0.7), rtol=1e-12)


def test_closed_form_gradient_equals_autograd(device):
    ps, omega, anchor = params(device), make(1, device), make(2, device, positive=False)
    pen = QuadraticPenalty()
    pen.set(omega, anchor)
    auto = torch.autograd.grad(pen.value(ps, 0.3), ps)
    closed = pen.grad(ps, 0.3)
    for a, c, p, o, an in zip(auto, closed, ps, omega, anchor):
        assert torch.allclose(a, c, rtol=1e-12, atol=1e-14)
        assert torch.allclose(c, 2 * 0.3 * o * (p.detach() - an))


def test_add_grad_in_place_adds_and_creates_missing_grads(device):
    ps, omega, anchor = params(device), make(1, device), make(2, device, positive=False)
    pen = QuadraticPenalty()
    pen.set(omega, anchor)
    base = [torch.full_like(p, 0.5) for p in ps]
    for p, b in zip(ps[:2], base):
        p.grad = b.clone()
    pen.add_grad_(ps, 2.0)
    expect = pen.grad(ps, 2.0)
    for i, (p, e) in enumerate(zip(ps, expect)):
        assert torch.allclose(p.grad, e + (0.5 if i < 2 else 0.0))


def test_merged_anchors_equal_separate_terms(device):
    ps = params(device)
    terms = [(make(10 + k, device), make(20 + k, device, positive=False)) for k in range(4)]
    terms[1][0][0][:3] = 0  # zero importance in some places for one term
    for t in terms:  # and everywhere for a whole tensor in all terms: A = 0 there
        t[0][3].zero_()
    pen = QuadraticPenalty(keep_terms=True)
    for omega, anchor in terms:
        pen.add(omega, anchor)
    lam = 1.7
    assert torch.allclose(pen.value(ps, lam), direct_value(ps, terms, lam), rtol=1e-10)
    separate = [sum(2 * lam * o[i] * (ps[i].detach() - a[i]) for o, a in terms) for i in range(len(ps))]
    for got, want in zip(pen.grad(ps, lam), separate):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    auto = torch.autograd.grad(direct_value(ps, terms, lam), ps)
    for got, want in zip(pen.grad(ps, lam), auto):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    # the per-task terms are kept (memory grows), the hot path uses two vectors only
    assert len(pen.terms) == 4
    one = QuadraticPenalty(keep_terms=True)
    one.add(*terms[0])
    assert pen.nbytes() > 2 * one.nbytes()


def test_merged_anchors_float32_precision(device):
    torch.manual_seed(0)
    ps = [torch.randn(1000).to(device).requires_grad_(True)]
    terms = [([torch.rand(1000).to(device) * 100]), ([torch.rand(1000).to(device) * 100])]
    anchors = [[ps[0].detach() + 1e-3 * torch.randn(1000).to(device)] for _ in terms]
    pen = QuadraticPenalty()
    for o, a in zip(terms, anchors):
        pen.add(o, a)
    want = sum(2 * o[0] * (ps[0].detach() - a[0]) for o, a in zip(terms, anchors))
    assert torch.allclose(pen.grad(ps, 1.0)[0], want, rtol=1e-4, atol=1e-4)


def test_set_replaces_and_inactive_penalty_is_zero(device):
    ps = params(device)
    pen = QuadraticPenalty()
    assert not pen.active
    assert float(pen.value(ps, 1.0)) == 0.0
    pen.add_grad_(ps, 1.0)  # no-op
    assert all(p.grad is None for p in ps)
    pen.add(make(1, device), make(2, device))
    pen.add(make(3, device), make(4, device))
    pen.set(make(5, device), make(6, device))
    assert torch.allclose(pen.value(ps, 1.0), direct_value(ps, [(make(5, device), make(6, device))], 1.0))


def test_negative_or_nan_importance_is_rejected(device):
    pen = QuadraticPenalty()
    bad = make(1, device)
    bad[0][0, 0] = -1.0
    with pytest.raises(ValueError, match=">= 0"):
        pen.set(bad, make(2, device))
    bad[0][0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        pen.add(bad, make(2, device))


def test_state_dict_round_trip_through_torch_save(device):
    ps = params(device)
    pen = QuadraticPenalty(keep_terms=True)
    pen.add(make(1, device), make(2, device))
    pen.add(make(3, device), make(4, device))
    buf = io.BytesIO()
    torch.save(pen.state_dict(), buf)
    buf.seek(0)
    other = QuadraticPenalty(keep_terms=True)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(other.value(ps, 0.5), pen.value(ps, 0.5))
    for a, b in zip(other.grad(ps, 0.5), pen.grad(ps, 0.5)):
        assert torch.equal(a, b)
    assert len(other.terms) == 2


def test_views_share_storage_and_check_size():
    flat = torch.arange(10.0)
    v = views(flat, [torch.zeros(2, 3), torch.zeros(4)])
    v[1][0] = -1
    assert flat[6] == -1 and v[0].shape == (2, 3)
    assert torch.equal(flatten(v), flat)
    with pytest.raises(ValueError, match="changed"):
        views(flat, [torch.zeros(3)])

"""TOPIC (Tao et al. 2020): its losses against direct computations, its nodes and anchors, nearest-node
prediction, and a full few-shot class-incremental run (reproducible, resumable)."""

from __future__ import annotations

import math

import pytest
import torch

import forgetless as fl
from forgetless.strategies.icarl import features
from forgetless.strategies.topic import Topic, anchor_loss, min_max_loss, nearest_node_scores, node_means


def test_anchor_loss_is_the_variance_weighted_squared_drift():
    g = torch.Generator().manual_seed(0)
    f, m = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    var = torch.rand(4, 3, generator=g) + 0.1
    direct = sum((f[j, k] - m[j, k]) ** 2 / var[j, k] for j in range(4) for k in range(3)) / 12
    assert math.isclose(anchor_loss(f, m, var).item(), direct.item(), rel_tol=1e-6)
    # a dimension with a small variance weighs more
    assert anchor_loss(f, m, var * torch.tensor([1.0, 1.0, 0.01])) > anchor_loss(f, m, var)


def test_min_max_loss_pulls_to_the_nearest_node_of_the_class_and_pushes_others_out_of_the_margin():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(5, 2, generator=g)
    y = torch.tensor([0, 1, 1, 2, 0])
    m = torch.randn(6, 2, generator=g)
    c = torch.tensor([0, 0, 1, 2, 2, 1])
    xi = 1.3
    total = 0.0
    for i in range(5):
        d = [math.dist(f[i].tolist(), m[j].tolist()) for j in range(6)]
        pull = min(d[j] for j in range(6) if c[j] == y[i])
        push = sum(max(0.0, xi - d[j]) for j in range(6) if c[j] != y[i])
        total += pull + push
    assert math.isclose(min_max_loss(f, y, m, c, xi).item(), total / 5, rel_tol=1e-5)
    assert min_max_loss(f, y, m, c, 0.0).item() < min_max_loss(f, y, m, c, xi).item()
    # the gradient is finite where an example sits exactly on its node (distance 0)
    f0 = m[[0, 2]].clone().requires_grad_(True)
    min_max_loss(f0, torch.tensor([0, 1]), m, c, xi).backward()
    assert torch.isfinite(f0.grad).all()


def test_nearest_node_scores_give_the_label_of_the_nearest_node():
    g = torch.Generator().manual_seed(2)
    f, m = torch.randn(50, 3, generator=g), torch.randn(7, 3, generator=g)
    c = torch.tensor([0, 3, 3, 1, 0, 1, 3])
    s = nearest_node_scores(f, m, c, n_outputs=5)
    nearest = torch.tensor([min(range(7), key=lambda j: math.dist(f[i].tolist(), m[j].tolist())) for i in range(50)])
    assert torch.equal(s.argmax(1), c[nearest])
    assert torch.isinf(s[:, [2, 4]]).all() and torch.isfinite(s[:, [0, 1, 3]]).all()
    assert torch.allclose(-s[torch.arange(50), c[nearest]], torch.cdist(f, m).min(1).values, atol=1e-5)


def test_node_means():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    assert torch.equal(node_means(f, torch.tensor([1, 1, 0]), 3), torch.tensor([[5.0, 0.0], [2.0, 3.0], [0.0, 0.0]]))


def cfg(**kw):
    args = dict(
        benchmark="split-digits",
        scenario="fscil",
        base_classes=6,
        ways=1,
        shots=5,
        epochs=4,
        model="mlp:64",
        strategy="topic",
        batch_size=32,
        seed=0,
    )
    args.update(kw)
    return fl.RunConfig(**args)


class Spy(Topic):
    """TOPIC that records, per session, the gas and the penalty's first value."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.first_penalty, self.after, self.ctx = {}, {}, None

    def penalty(self, ctx, batch, out):
        p = super().penalty(ctx, batch, out)
        self.first_penalty.setdefault(ctx.task_id, None if p is None else float(p.detach()))
        return p

    def after_task(self, ctx, task):
        super().after_task(ctx, task)
        self.ctx = ctx
        gas = self.gas
        self.after[task.id] = dict(
            n=gas.size, labels=gas.labels.tolist(), anchors=len(self.anchors_), centroids=gas.centroids.clone()
        )


def test_a_topic_run_grows_the_gas_anchors_old_nodes_and_predicts_by_the_nearest_node(device, one_thread):
    spy = Spy(lam_mml=0.0)
    r = fl.run(cfg(device=str(device)), strategy=spy)
    bench = fl.benchmarks.build(
        "split-digits", scenario="fscil", base_classes=6, ways=1, shots=5, seed=0, progress=False
    )
    base = spy.after[0]
    assert set(base["labels"]) == set(range(6)) and base["n"] <= 60 and base["anchors"] == base["n"]
    for s in range(1, 5):  # one node per new class, anchored at its 5 shots
        assert spy.after[s]["n"] == spy.after[s - 1]["n"] + 1 and spy.after[s]["labels"][-1] == 5 + s
        assert spy.after[s]["anchors"] == spy.after[s - 1]["anchors"] + 5
        # the anchor loss is 0 when a session starts (centroids = the anchors' features then)
        assert spy.first_penalty[s] == pytest.approx(0.0, abs=1e-6)
    assert spy.first_penalty[0] is None  # the base session trains with the cross-entropy alone
    # every base anchor is a training example of its node's class
    gas, train = spy.gas, bench.tasks[0].train
    flat = train.x.flatten(1).to(spy.anchors_.device)
    for j in range(base["n"]):
        hit = (flat == spy.anchors_[j].flatten()).all(1).nonzero().flatten()
        assert len(hit) >= 1 and int(train.y[hit[0].cpu()]) == int(gas.labels[j])
    # the centroids are the mean features of the anchors under the final network
    model = spy.ctx.model
    assert torch.allclose(
        gas.centroids, node_means(features(model, spy.anchors_).float(), spy.owner_, gas.size), atol=1e-5
    )
    # prediction = label of the nearest node
    x = torch.cat([t.test.x for t in bench.tasks]).to(device)
    pred = spy.predict(spy.ctx, x).argmax(1)
    direct = gas.labels[torch.cdist(features(model, x).float(), gas.centroids).argmin(1)]
    assert torch.equal(pred, direct)
    m = r.metrics
    assert len(m["session_accuracy"]) == 5 and m["session_accuracy"][0] > 0.9


def test_the_anchor_loss_holds_old_nodes_in_place(device, one_thread):
    """With a strong anchor loss the base nodes drift less over the sessions than without it."""
    drift = {}
    for lam in (0.0, 100.0):
        spy = Spy(lam_al=lam, lam_mml=0.0)
        fl.run(cfg(device=str(device), epochs=8), strategy=spy)
        n0 = spy.after[0]["n"]
        drift[lam] = (spy.gas.centroids[:n0] - spy.after[0]["centroids"]).norm(dim=1).mean().item()
    assert drift[100.0] < 0.5 * drift[0.0]


def test_topic_runs_are_reproducible_and_resume_identically(tmp_path, device, one_thread):
    class CrashAt2(Topic):
        crash = True

        def before_task(self, ctx, task):
            if task.id == 2 and CrashAt2.crash:
                raise KeyboardInterrupt
            super().before_task(ctx, task)

    c = cfg(device=str(device))
    a = fl.run(c)
    b = fl.run(c)
    assert a.accuracy_matrix == b.accuracy_matrix
    with pytest.raises(KeyboardInterrupt):
        fl.run(c, strategy=CrashAt2(), out=tmp_path / "cut")
    CrashAt2.crash = False
    full = fl.run(c, strategy=CrashAt2(), out=tmp_path / "full")
    resumed = fl.run(c, strategy=CrashAt2(), out=tmp_path / "cut", resume=True)
    assert resumed.accuracy_matrix == full.accuracy_matrix == a.accuracy_matrix


def test_topic_refuses_other_scenarios_and_too_many_nodes(one_thread):
    with pytest.raises(fl.UsageError, match="class") as e:
        fl.run(cfg(scenario="task", base_classes=None, ways=None, shots=None, tasks=2))
    assert "\n" not in str(e.value)
    with pytest.raises(fl.UsageError, match="nodes_per_class"):
        fl.run(cfg(params={"nodes_per_class": 1000}))

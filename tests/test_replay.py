import io
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import lsq_linear, minimize

import forgetless as fl
from forgetless import RunConfig, run
from forgetless.errors import UsageError
from forgetless.strategies import Batch, Context, make_strategy
from forgetless.strategies.bic import BiC
from forgetless.strategies.dgr import DGR, VAE
from forgetless.strategies.distill import LwF, distillation_loss, old_output_groups
from forgetless.strategies.gem import GEM, gem_dual, gem_project, solve_nonneg_qp
from forgetless.strategies.icarl import ICaRL, features
from forgetless.strategies.registry_replay import REPLAY
from forgetless.strategies.replay import AGEM, ER, agem_project, flat_grad, memory_loss_grad

CLASS_IL = dict(benchmark="split-digits", scenario="class", model="mlp:100", epochs=5, batch_size=32)


def quick(scenario, **kw):
    base = dict(benchmark="split-digits", scenario=scenario, model="mlp:64", epochs=2, batch_size=32)
    base.update(kw)
    return RunConfig(**base)


def small_strategies():
    return {
        "lwf": LwF(),
        "er": ER(memory=100),
        "agem": AGEM(memory=100),
        "gem": GEM(memory=100),
        "dgr": DGR(gen_iters=5),
        "dgr+distill": DGR(gen_iters=5, distill=True),
    }


@pytest.fixture(scope="module")
def benchmarks(device):
    """On the device from the start (``run`` would move them there in place anyway)."""
    return {s: fl.build("split-digits", scenario=s).to(device) for s in ("task", "domain", "class")}


def context(bench, task_id=0, hidden=16, seed=0):
    """A small MLP and its context on the benchmark's device."""
    torch.manual_seed(seed)
    model = fl.build_model(f"mlp:{hidden}", bench.input_shape, bench.n_outputs).to(bench.device)
    return Context(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        benchmark=bench,
        task_id=task_id,
        seen_upto=task_id,
        batch_size=16,
        generator=torch.Generator().manual_seed(seed),
        device=bench.device,
    )


# ---- distillation ---------------------------------------------------------------------------
def test_distillation_loss_is_the_direct_formula_and_zero_at_the_teacher():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    for T in (1.0, 2.0, 3.5):
        q, p = torch.softmax(t / T, 1), torch.softmax(s / T, 1)
        direct = T * T * (q * (q.log() - p.log())).sum(1).mean()
        assert torch.allclose(distillation_loss(s, t, T), direct, atol=1e-6)
        # same gradient as Hinton's soft-target cross-entropy (they differ by the teacher's entropy)
        a, b = s.clone().requires_grad_(), s.clone().requires_grad_()
        distillation_loss(a, t, T).backward()
        (T * T * -(q * torch.log_softmax(b / T, 1)).sum(1).mean()).backward()
        assert torch.allclose(a.grad, b.grad, atol=1e-6)
    same = t.clone().requires_grad_()
    loss = distillation_loss(same, t, 2.0)
    loss.backward()
    assert abs(loss.item()) < 1e-6 and same.grad.abs().max() < 1e-6
    # masked teacher classes get probability 0 and contribute nothing
    masked = t.clone()
    masked[:, 3] = float("-inf")
    q = torch.softmax(t[:, :3] / 2, 1)
    ref = 4 * (q * (q.log() - torch.log_softmax(s / 2, 1)[:, :3])).sum(1).mean()
    assert torch.allclose(distillation_loss(s, masked, 2.0), ref, atol=1e-6)


# ---- A-GEM ----------------------------------------------------------------------------------
def test_agem_projection_formula_and_non_negative_dot():
    g = torch.Generator().manual_seed(0)
    projected = 0
    for _ in range(200):
        a, r = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
        out = agem_project(a, r)
        assert torch.dot(out, r) >= -1e-10
        if torch.dot(a, r) < 0:
            projected += 1
            assert torch.allclose(out, a - torch.dot(a, r) / torch.dot(r, r) * r)
        else:
            assert torch.equal(out, a)  # kept exactly (computed without a host-side branch)
    assert projected > 50


def test_agem_after_backward_projects_the_loop_gradient(benchmarks):
    bench = benchmarks["class"]
    ctx = context(bench, task_id=1)
    s = AGEM(memory=50, replay_batch_size=20)
    s.after_task(ctx, bench.tasks[0])
    x, y = bench.tasks[1].train.x[:32], bench.tasks[1].train.y[:32]
    F.cross_entropy(ctx.mask(ctx.model(x), torch.ones(32, dtype=torch.long, device=ctx.device)), y).backward()
    g = flat_grad(ctx.params())
    state = ctx.generator.get_state()
    s.after_backward(ctx)
    ctx.generator.set_state(state)
    g_ref = memory_loss_grad(ctx, *s.buffer_.sample(20, ctx.generator))
    new = flat_grad(ctx.params())
    assert torch.dot(new, g_ref) >= -1e-5 * float(g_ref.norm() * g.norm())
    assert torch.allclose(new, agem_project(g, g_ref), atol=1e-6)


# ---- GEM ------------------------------------------------------------------------------------
def brute_force_qp(P, c):
    n = len(c)
    for r in range(n + 1):
        for S in itertools.combinations(range(n), r):
            u = np.zeros(n)
            S = list(S)
            if S:
                u[S] = np.linalg.solve(P[np.ix_(S, S)], -c[S])
            if (u >= -1e-12).all() and (P @ u + c >= -1e-9 * (1 + np.abs(c).max())).all():
                return u
    raise AssertionError("no KKT point")


def test_gem_qp_is_exact_and_matches_scipy():
    rng = np.random.default_rng(0)
    for trial in range(60):
        t, p = int(rng.integers(1, 7)), int(rng.integers(8, 60))
        G = rng.normal(size=(t, p)) * 10 ** rng.uniform(-2, 1)
        g = rng.normal(size=p) * 10 ** rng.uniform(-2, 1)
        margin = [0.0, 0.5][trial % 2]
        v = gem_dual(G, g, margin)
        P = G @ G.T + 1e-3 * np.eye(t)
        q = G @ g
        obj = lambda w: 0.5 * w @ P @ w + q @ w  # noqa: E731
        # exact: equals the active-set enumeration (the KKT point is unique)
        u = brute_force_qp(P, P @ np.full(t, margin) + q)
        assert np.allclose(v, u + margin, atol=1e-9 * (1 + np.abs(u).max()))
        # SLSQP and bounded least squares on the Cholesky form reach the same optimum
        slsqp = minimize(
            obj,
            np.full(t, margin + 1.0),
            jac=lambda w: P @ w + q,
            method="SLSQP",
            bounds=[(margin, None)] * t,
            options={"ftol": 1e-14, "maxiter": 500},
        )
        assert obj(v) <= obj(slsqp.x) + 1e-8 * (1 + abs(obj(v)))
        assert np.allclose(v, slsqp.x, atol=1e-4 * (1 + np.abs(v).max()))
        L = np.linalg.cholesky(P)
        lsq = lsq_linear(L.T, -np.linalg.solve(L, q), bounds=(margin, np.inf), method="bvls", tol=1e-14)
        assert np.allclose(v, lsq.x, atol=1e-6 * (1 + np.abs(v).max()))
        # every constraint holds for the projected gradient (up to the eps regularisation)
        gt = gem_project(torch.tensor(g), torch.tensor(G), margin).numpy()
        assert (G @ gt >= -1e-3 * v - 1e-9).all()
        if (G @ g >= 0).all():
            assert np.array_equal(gt, g)
        exact = gem_project(torch.tensor(g), torch.tensor(G), margin, eps=0.0).numpy()
        assert (G @ exact >= -1e-8 * (1 + np.abs(G @ g).max())).all()


def test_nonneg_qp_solves_degenerate_problems():
    P = np.array([[2.0, 2.0], [2.0, 2.0 + 1e-9]])  # nearly singular
    u = solve_nonneg_qp(P, np.array([-1.0, -1.0]))
    assert (u >= 0).all() and abs((P @ u)[0] - 1) < 1e-6
    assert np.array_equal(solve_nonneg_qp(np.eye(3), np.ones(3)), np.zeros(3))


def test_gem_memory_is_split_over_the_tasks(benchmarks):
    s = GEM(memory=103)
    bench = benchmarks["task"]
    r = run(quick("task"), strategy=s)
    assert sorted(s.mem_x_) == [0, 1, 2, 3, 4] and all(len(v) == 103 // 5 for v in s.mem_x_.values())
    assert r.metrics["average_accuracy"] > 0.8
    with pytest.raises(UsageError, match="memory"):
        GEM(memory=3).after_task(context(bench), bench.tasks[0])


# ---- BiC ------------------------------------------------------------------------------------
def test_bic_bias_layer_changes_only_the_new_classes_logits(benchmarks, device):
    bench = benchmarks["class"]
    s = BiC()
    s.bias_ = torch.tensor([[1.0, 0.0]] * 5, device=device)
    logits = torch.randn(7, 10, generator=torch.Generator().manual_seed(0)).to(device)
    assert torch.equal(s.correct(bench, logits), logits)
    s.bias_[2] = torch.tensor([1.7, -0.4], device=device)
    out = s.correct(bench, logits)
    new = bench.tasks[2].classes
    other = [c for c in range(10) if c not in new]
    assert torch.equal(out[:, other], logits[:, other])
    assert torch.allclose(out[:, new], 1.7 * logits[:, new] - 0.4)


def test_bic_learns_bias_on_a_balanced_held_out_split(benchmarks):
    s = BiC(memory=200)
    r = run(RunConfig(**CLASS_IL), strategy=s)
    assert all(len(v) == 2 for v in s.val.x.values()) and sorted(s.val.x) == list(range(10))
    assert all(len(v) == 200 // 10 - 2 for v in s.exemplars.x.values())
    bias = s.bias_.cpu()  # on the run's device
    assert not torch.equal(bias[1:], torch.tensor([[1.0, 0.0]] * 4))
    assert torch.equal(bias[0], torch.tensor([1.0, 0.0]))
    # task 1 trains on its data minus the held-out validation examples: 2 classes x ceil(0.1 * 200 // 2)
    assert r.timing["per_task"][0]["samples"] == 5 * (288 - 2 * 10)


# ---- iCaRL ----------------------------------------------------------------------------------
def test_icarl_exemplars_and_nearest_mean_prediction(benchmarks):
    bench = benchmarks["class"]
    s = ICaRL(memory=60)
    ctx = context(bench, task_id=4, hidden=32)
    run(RunConfig(**dict(CLASS_IL, epochs=2)), strategy=s, benchmark=bench, model=ctx.model)
    assert {c: len(v) for c, v in s.exemplars.x.items()} == dict.fromkeys(range(10), 6)
    # nearest mean of exemplars, computed directly
    x = bench.tasks[1].test.x
    phi = F.normalize(features(ctx.model, x), dim=1)
    means = torch.stack(
        [F.normalize(F.normalize(features(ctx.model, s.exemplars.x[c]), dim=1).mean(0), dim=0) for c in range(10)]
    )
    expected = torch.cdist(phi, means).argmin(1)
    assert torch.equal(s.predict(ctx, x).argmax(1), expected)


def test_icarl_loss_is_sigmoid_bce_with_distillation_targets(benchmarks):
    bench = benchmarks["class"]
    ctx = context(bench, task_id=1)
    s = ICaRL(memory=50)
    s.snapshot(ctx)
    with torch.no_grad():
        for p in ctx.model.parameters():
            p.add_(0.1)
    x, y = bench.tasks[1].train.x[:8], bench.tasks[1].train.y[:8]
    logits = ctx.model(x)
    target = F.one_hot(y, 10).float()
    target[:, :2] = torch.sigmoid(s.old_model(ctx)(x)[:, :2])
    direct = F.binary_cross_entropy_with_logits(logits[:, :4], target[:, :4], reduction="sum") / 8
    batch = Batch(x, y, torch.ones(8, dtype=torch.long, device=ctx.device))
    loss = s.task_loss(ctx, batch, logits, F.cross_entropy(logits, y))  # replaces the loop's CE
    assert torch.allclose(loss, direct, atol=1e-5) and s.penalty(ctx, batch, logits) is None


def test_icarl_needs_a_linear_output_layer(benchmarks, device):
    class NoLinear(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10]

    with pytest.raises(UsageError, match=r"nn.Linear"):
        features(NoLinear(), torch.zeros(2, 1, 8, 8, device=device))


# ---- DGR ------------------------------------------------------------------------------------
def test_vae_samples_have_the_data_shape_and_the_previous_model_labels_them(benchmarks):
    bench = benchmarks["class"]
    ctx = context(bench, task_id=0)
    s = DGR(gen_iters=3)
    s.before_task(ctx, bench.tasks[0])
    s.after_task(ctx, bench.tasks[0])
    xr = s.vae.sample(9, ctx.generator)
    assert xr.shape == (9, *bench.input_shape) and float(xr.min()) >= 0 and float(xr.max()) <= 1
    assert isinstance(s.vae, VAE) and s.vae.loss(bench.tasks[0].train.x[:5]).shape == (5,)
    ctx.task_id = 2
    s.before_task(ctx, bench.tasks[2])
    ((student_cols, target_cols),) = old_output_groups(bench, 2, ctx.device)  # on the device, as DGR makes them
    assert student_cols.tolist() == list(range(6)) and target_cols.tolist() == list(range(4))
    teacher = s.old_model(ctx)(xr)
    labels = s.hard_labels(teacher, student_cols, target_cols)
    assert torch.equal(labels, teacher[:, :4].argmax(1))
    # task-IL: one head per old task
    heads = old_output_groups(benchmarks["task"], 2)
    assert [h[0].tolist() for h in heads] == [[0, 1], [2, 3]]
    with pytest.raises(UsageError):
        DGR(distill="yes")


def test_dgr_replay_weighting(benchmarks):
    bench = benchmarks["domain"]
    ctx = context(bench, task_id=0)
    s = DGR(gen_iters=2)
    s.before_task(ctx, bench.tasks[0])
    s.after_task(ctx, bench.tasks[0])
    s.before_task(ctx, bench.tasks[3])
    assert ctx.task_id == 3
    x, y = bench.tasks[3].train.x[:8], bench.tasks[3].train.y[:8]
    logits = ctx.model(x)
    ce = F.cross_entropy(logits, y)
    state = ctx.generator.get_state()
    total = s.task_loss(ctx, Batch(x, y, bench.tasks[3].ids(8)), logits, ce)  # reweights the loss it is given
    ctx.generator.set_state(state)
    replay = s.replay_loss(ctx, s.vae.sample(8, ctx.generator))
    assert torch.allclose(total, ce / 4 + 3 / 4 * replay, atol=1e-6)
    assert s.penalty(ctx, Batch(x, y, bench.tasks[3].ids(8)), logits) is None


# ---- runs -----------------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_methods_run_in_every_scenario(benchmarks, scenario):
    for name, s in small_strategies().items():
        r = run(quick(scenario), strategy=s, benchmark=benchmarks[scenario])
        acc = r.metrics["average_accuracy"]
        R = np.array(r.accuracy_matrix)
        assert R.shape == (5, 5) and np.isfinite(R).all() and R[0, 0] > 0.8, (name, R)
        # two short epochs: only task- and domain-IL are checked for a sensible accuracy (class-IL
        # below); DGR's generator got 5 iterations, so it is only checked to run
        if not name.startswith("dgr") and scenario != "class":
            assert acc > {"task": 0.8, "domain": 0.7}[scenario], (name, acc)


def test_icarl_and_bic_refuse_task_and_domain():
    for name in ("icarl", "bic"):
        for scenario in ("task", "domain"):
            with pytest.raises(UsageError, match="class"):
                make_strategy(name, {}, scenario)
        assert make_strategy(name, {"memory": 10}, "class").memory == 10
    with pytest.raises(UsageError, match="memory"):
        make_strategy("er", {"memory": 0}, "task")
    for cls in (ER, AGEM, GEM, ICaRL, BiC):
        with pytest.raises(UsageError, match="memory"):
            cls(memory=0)
    s = make_strategy("er+lwf", {"memory": 50, "lam": 2}, "class")
    r = run(quick("class", strategy="er+lwf", params={"memory": 50}))
    assert r.config["params"]["er.memory"] == 50 and s.strategies[1].lam == 2.0


def test_class_il_replay_icarl_bic_beat_naive():
    naive = run(RunConfig(**CLASS_IL)).metrics["average_accuracy"]
    assert naive < 0.3
    for s in (ER(memory=200), ICaRL(memory=200), BiC(memory=200)):
        acc = run(RunConfig(**CLASS_IL), strategy=s).metrics["average_accuracy"]
        assert acc > naive + 0.4, (s.name, acc, naive)


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf)


def same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(u, v) for u, v in zip(a, b))
    return a == b


@pytest.mark.parametrize("name", sorted(REPLAY))
def test_state_dict_round_trip(benchmarks, name, device):
    scenario = "class"
    bench = fl.build("split-digits", scenario=scenario, tasks=None).to(device)
    bench.tasks = bench.tasks[:2]
    kw = {"memory": 40} if "memory" in REPLAY[name].params else {}
    if name == "dgr":
        kw = {"gen_iters": 3, "distill": True}
    s = REPLAY[name](**kw)
    cfg = quick(scenario, model="mlp:16")
    torch.manual_seed(0)
    model = fl.build_model("mlp:16", bench.input_shape, bench.n_outputs)
    run(cfg, strategy=s, benchmark=bench, model=model)
    assert next(model.parameters()).device == device  # the run moved the given model to its device
    state = s.state_dict()
    assert all(k.endswith("_") for k in state)
    fresh = REPLAY[name](**kw)
    fresh.load_state_dict(roundtrip(state))
    assert same(fresh.state_dict(), state)
    ctx = Context(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        benchmark=bench,
        task_id=1,
        seen_upto=1,
        device=device,
    )
    x = bench.tasks[1].test.x
    with torch.no_grad():
        assert torch.equal(s.predict(ctx, x), fresh.predict(ctx, x))
    if name in ("lwf", "icarl", "bic", "dgr"):
        old, new = s.old_model(ctx), fresh.old_model(ctx)
        assert torch.equal(old(x), new(x))
    if name == "dgr":
        g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        assert torch.equal(s.vae.sample(4, g1), fresh.vae.sample(4, g2))
        assert same(s.vae_opt.state_dict()["state"], fresh.vae_opt.state_dict()["state"])


def test_same_seed_same_matrix():
    bench = fl.build("split-digits", scenario="class")
    bench.tasks = bench.tasks[:3]
    for make in (lambda: ER(memory=30), lambda: BiC(memory=40), lambda: DGR(gen_iters=3, distill=True)):
        a, b = (run(quick("class"), strategy=make(), benchmark=bench) for _ in range(2))
        assert a.accuracy_matrix == b.accuracy_matrix

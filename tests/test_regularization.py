"""The regularization strategies: hooks, state, hand computations and end-to-end runs."""

import io
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from forgetless.errors import UsageError
from forgetless.strategies.base import ALL_SCENARIOS, Batch, Context, Param, Strategy
from forgetless.strategies.fisher import fisher_diagonal
from forgetless.strategies.mas import mas_importance
from forgetless.strategies.path_integral import minmax
from forgetless.strategies.penalty import flatten
from forgetless.strategies.registry_regularization import REGULARIZATION
from forgetless.strategies.regularization import EWC, L2, MAS, SCP, SI, OnlineEWC, RWalk, task_generator
from forgetless.strategies.scp import scp_importance

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits(device):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data[:240], dtype=torch.float32) / 16.0
    return x.to(device), torch.tensor(d.target[:240], dtype=torch.long).to(device)


class Bench:
    """The part of a Benchmark the regularizers read (``active_outputs`` on the CPU, as a Benchmark's)."""

    scenario = "domain"
    n_outputs = 10

    def active_outputs(self, task_id):
        return torch.arange(10)


def tiny(device, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10)).to(device)


def make_ctx(model, device, lr=0.05, opt="sgd"):
    params = [p for p in model.parameters() if p.requires_grad]
    o = torch.optim.SGD(params, lr=lr) if opt == "sgd" else torch.optim.Adam(params, lr=lr)
    return Context(
        model=model, optimizer=o, benchmark=Bench(), generator=torch.Generator().manual_seed(0), device=device
    )


def task_of(k, x, y):
    return SimpleNamespace(id=k, train=SimpleNamespace(x=x, y=y))


def train(strategy, ctx, task, steps, batch=40, loss_fn=None, finish=True):
    """The loop's step order (loop.train_task), without the scenario mask."""
    strategy.before_task(ctx, task)
    x, y = task.train.x, task.train.y
    for s in range(steps):
        i = (s * batch) % len(x)
        xb, yb = x[i : i + batch], y[i : i + batch]
        out = ctx.model(xb)
        loss = F.cross_entropy(out, yb) if loss_fn is None else loss_fn(ctx.model)
        b = Batch(xb, yb, torch.full((len(yb),), task.id, dtype=torch.long, device=yb.device))
        pen = strategy.penalty(ctx, b, out)
        total = loss if pen is None else loss + pen
        ctx.optimizer.zero_grad(set_to_none=True)
        total.backward()
        strategy.after_backward(ctx)
        ctx.optimizer.step()
        strategy.after_step(ctx, b)
    if finish:
        strategy.after_task(ctx, task)


def two_tasks(digits):
    x, y = digits
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(1)).to(x.device)
    return [task_of(0, x[:120], y[:120]), task_of(1, x[120:, perm], y[120:])]


# ---- declarations -----------------------------------------------------------------------------
def test_registry_and_declarations():
    assert set(REGULARIZATION) == {"l2", "ewc", "online-ewc", "si", "mas", "rwalk", "scp"}
    for name, cls in REGULARIZATION.items():
        assert cls.name == name and issubclass(cls, Strategy)
        assert cls.scenarios == ALL_SCENARIOS
        assert "lam" in cls.params and cls.help and cls.__doc__
        s = cls()
        assert s.hparams() == {k: p.default for k, p in cls.params.items()}
        assert all(isinstance(p, Param) and p.help for p in cls.params.values())  # declared once, with meaning
    # online EWC is its own strategy: EWC has no online switch and no gamma
    assert set(EWC.params) == {"lam", "fisher", "samples", "normalize", "closed_form"}
    assert set(OnlineEWC.params) == {"lam", "fisher", "samples", "normalize", "closed_form", "gamma"}
    for bad in ({"online": True}, {"gamma": 0.5}):
        with pytest.raises(UsageError, match="unknown parameter"):
            EWC(**bad)
    for gamma in (0.0, 1.5, -0.1):
        with pytest.raises(UsageError, match="gamma"):
            OnlineEWC(gamma=gamma)
    with pytest.raises(UsageError, match="unknown parameter"):
        EWC(lamda=1.0)
    with pytest.raises(UsageError, match="fisher"):
        EWC(fisher="true")
    with pytest.raises(UsageError, match="lam"):
        SI(lam=-1.0)


# ---- the penalty applies from the second task on ----------------------------------------------
@pytest.mark.parametrize("name", sorted(REGULARIZATION))
def test_penalty_from_the_second_task_and_state_round_trip(digits, name, device):
    tasks = two_tasks(digits)
    model = tiny(device)
    ctx = make_ctx(model, device)
    s = REGULARIZATION[name]()
    train(s, ctx, tasks[0], 3)
    assert s.quad.active and s.tasks_seen_ == 1
    # anchored at the parameters after the task, so the penalty is 0 there
    assert s.penalty_value(ctx) == pytest.approx(0.0, abs=1e-9)
    train(s, ctx, tasks[1], 3, finish=False)
    value = s.penalty_value(ctx)
    assert value > 0  # the second task moved the parameters away from the anchor
    s.after_task(ctx, tasks[1])
    # state_dict: tensors only (torch.load weights_only), and identical penalty after loading
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    other = REGULARIZATION[name]()
    other.load_state_dict(torch.load(buf, weights_only=True))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    assert other.penalty_value(ctx) == s.penalty_value(ctx) != value
    params = ctx.params()
    for a, b in zip(other.quad.grad(params, other.lam), s.quad.grad(params, s.lam)):
        assert torch.equal(a, b)
    # and training continues from the loaded state exactly as from the original
    m2 = tiny(device)
    m2.load_state_dict(model.state_dict())
    ctx2 = make_ctx(m2, device)
    task3 = task_of(2, tasks[0].train.x.flip(1), tasks[0].train.y)
    train(s, ctx, task3, 2)
    train(other, ctx2, task3, 2)
    for p, q in zip(model.parameters(), m2.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert other.penalty_value(ctx2) == pytest.approx(s.penalty_value(ctx), rel=1e-5)


@pytest.mark.parametrize("name", ["ewc", "si", "rwalk", "scp"])
def test_closed_form_and_autograd_train_the_same(digits, name, device):
    tasks = two_tasks(digits)
    models, strategies = [], []
    for closed in (True, False):
        model = tiny(device)
        ctx = make_ctx(model, device, opt="adam", lr=0.01)
        s = REGULARIZATION[name](closed_form=closed, lam=5.0)
        train(s, ctx, tasks[0], 4)
        train(s, ctx, tasks[1], 4)
        models.append(model)
        strategies.append(s)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        assert torch.allclose(p, q, atol=1e-5)
    assert torch.allclose(strategies[0].quad.omega, strategies[1].quad.omega, rtol=1e-4, atol=1e-7)


# ---- EWC --------------------------------------------------------------------------------------
def test_separate_ewc_keeps_one_term_per_task(digits, device):
    tasks = two_tasks(digits)
    model = tiny(device)
    ctx = make_ctx(model, device)
    s = EWC(samples=None, normalize="none")  # the raw Fisher, as the hand computation below
    fishers, anchors = [], []
    for task in tasks:
        train(s, ctx, task, 3)
        fishers.append(fisher_diagonal(model, task.train.x, task.train.y))
        anchors.append([p.detach().clone() for p in model.parameters()])
    assert len(s.quad.terms) == 2
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.9)
    direct = sum(
        float((f * (p.detach() - a) ** 2).sum())
        for fs, anc in zip(fishers, anchors)
        for p, f, a in zip(model.parameters(), fs, anc)
    )
    assert s.penalty_value(ctx) == pytest.approx(s.lam * direct, rel=1e-5)


# ---- SI on a quadratic through the hooks ------------------------------------------------------
class Quadratic(nn.Module):
    def __init__(self, theta0):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(theta0, dtype=torch.float64))


def test_si_strategy_matches_hand_computation(device):
    h = torch.tensor([1.0, 3.0], dtype=torch.float64, device=device)
    theta0 = torch.tensor([2.0, -1.5], dtype=torch.float64, device=device)
    eta, T = 0.1, 6
    model = Quadratic([2.0, -1.5]).to(device)
    ctx = make_ctx(model, device, lr=eta)
    s = SI(lam=0.5, xi=0.1)
    dummy = task_of(0, torch.zeros(1, 1, device=device), torch.zeros(1, dtype=torch.long, device=device))
    loss1 = lambda m: 0.5 * (h * m.theta**2).sum()  # noqa: E731
    s.before_task(ctx, dummy)
    for _ in range(T):
        ctx.optimizer.zero_grad()
        loss1(model).backward()
        s.after_backward(ctx)
        ctx.optimizer.step()
        s.after_step(ctx, None)
    s.after_task(ctx, dummy)
    r = 1 - eta * h
    omega = eta * h**2 * theta0**2 * (1 - r ** (2 * T)) / (1 - r**2)
    delta = theta0 * (r**T - 1)
    big = omega / (delta**2 + 0.1)
    assert torch.allclose(s.quad.omega, big, rtol=1e-12)
    # second task: L2 = 1/2 ||theta - c||^2 plus the SI penalty; omega must use L2's gradient only
    c = torch.tensor([-1.0, 1.0], dtype=torch.float64, device=device)
    theta = model.theta.detach().clone()
    anchor = theta.clone()
    expect_omega = torch.zeros(2, dtype=torch.float64, device=device)
    start = theta.clone()
    s.before_task(ctx, dummy)
    for _ in range(4):
        g_task = theta - c
        g_total = g_task + 2 * 0.5 * big * (theta - anchor)
        new = theta - eta * g_total
        expect_omega += -g_task * (new - theta)
        theta = new
        ctx.optimizer.zero_grad()
        (0.5 * ((model.theta - c) ** 2).sum()).backward()
        s.after_backward(ctx)
        ctx.optimizer.step()
        s.after_step(ctx, None)
    assert torch.allclose(model.theta.detach(), theta, rtol=1e-12)
    assert torch.allclose(s.path.omega[0], expect_omega, rtol=1e-12)
    s.after_task(ctx, dummy)
    want = (big + expect_omega / ((theta - start) ** 2 + 0.1)).clamp_min(0)
    assert torch.allclose(s.quad.omega, want, rtol=1e-12)


# ---- RWalk: score averaging and normalization -------------------------------------------------
def test_rwalk_averages_scores_and_normalizes(digits, device):
    tasks = two_tasks(digits)
    model = tiny(device)
    ctx = make_ctx(model, device)
    s = RWalk(interval=2)
    train(s, ctx, tasks[0], 5)  # 2 full intervals and a partial one, flushed at the task's end
    s1 = s.score_.clone()
    assert torch.allclose(s.quad.omega, minmax(s.fisher_) + minmax(s1))
    train(s, ctx, tasks[1], 4)
    s2 = flatten(s.walk.score)
    assert torch.allclose(s.score_, 0.5 * (s1 + s2))
    assert torch.allclose(s.quad.omega, minmax(s.fisher_) + minmax(s.score_))
    assert float(s.quad.omega.min()) >= 0 and float(s.quad.omega.max()) <= 2 + 1e-6


def test_mas_hebbian_needs_linear_layers(digits, device):
    x, y = digits
    model = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 10)).to(device)
    ctx = make_ctx(model, device)
    with pytest.raises(UsageError, match="hebbian"):
        train(MAS(hebbian=True), ctx, task_of(0, x[:40], y[:40]), 1)
    train(MAS(), make_ctx(model, device), task_of(0, x[:40], y[:40]), 1)  # the gradient form works on any module


# ---- end to end through the loop --------------------------------------------------------------
def _run(strategy, bench, scenario, seed=0, epochs=1, model="mlp:32"):
    from forgetless.benchmarks import build
    from forgetless.config import RunConfig
    from forgetless.run import run

    classes = "0,1,2|3,4,5|6,7,8,9" if bench.startswith("split") else None
    b = build(bench, scenario=scenario, tasks=3, seed=seed, classes=classes)
    cfg = RunConfig(
        benchmark=bench,
        scenario=scenario,
        tasks=3,
        model=model,
        epochs=epochs,
        seed=seed,
        batch_size=32,
        lr=1e-3,
        classes=classes,
    )
    return run(cfg, strategy=strategy, benchmark=b)


@pytest.mark.parametrize(
    "bench,scenario", [("permuted-digits", "domain"), ("permuted-digits", "task"), ("split-digits", "class")]
)
def test_every_method_runs_in_every_scenario(bench, scenario):
    for name, cls in REGULARIZATION.items():
        result = _run(cls(), bench, scenario)
        R = torch.tensor(result.accuracy_matrix)
        assert R.shape == (3, 3) and bool(torch.isfinite(R).all()), name
        assert float(R[0, 0]) > 0.3, name  # the first task is learned (no penalty yet)


def test_ewc_reduces_forgetting_on_permuted_digits():
    naive, ewc = [], []
    for seed in (0, 1):
        naive.append(_run(Strategy(), "permuted-digits", "domain", seed=seed, epochs=2, model="mlp:64").metrics)
        ewc.append(_run(EWC(), "permuted-digits", "domain", seed=seed, epochs=2, model="mlp:64").metrics)
    f_naive = sum(m["forgetting"] for m in naive) / 2
    f_ewc = sum(m["forgetting"] for m in ewc) / 2
    assert f_naive > 0.15  # there is forgetting to fight
    assert f_ewc < 0.5 * f_naive and f_naive - f_ewc > 0.1, (f_naive, f_ewc)  # measured: 0.28 vs 0.02


@pytest.mark.parametrize("name", ["ewc", "si", "rwalk"])
def test_resume_after_a_task_gives_the_same_run(tmp_path, name):
    """The loop checkpoints the strategy's state_dict after every task: stopping after task 2 and
    resuming with a fresh strategy must give the uninterrupted run's accuracy matrix."""
    from forgetless.benchmarks import build
    from forgetless.config import RunConfig
    from forgetless.run import run

    cls = REGULARIZATION[name]

    class Stop(Exception):
        pass

    class Interrupted(cls):
        stop_at = 2

        def before_task(self, ctx, task):
            if task.id == self.stop_at:
                raise Stop
            super().before_task(ctx, task)

    def again():  # the same strategy (recorded as custom:Interrupted), this time not stopped
        s = Interrupted()
        s.stop_at = None
        return s

    cfg = RunConfig(
        benchmark="permuted-digits", scenario="domain", tasks=3, model="mlp:32", epochs=1, batch_size=64, strategy=name
    )
    bench = lambda: build("permuted-digits", scenario="domain", tasks=3, seed=0)  # noqa: E731
    full = run(cfg, strategy=cls(), benchmark=bench(), out=tmp_path / "full")
    with pytest.raises(Stop):
        run(cfg, strategy=Interrupted(), benchmark=bench(), out=tmp_path / "cut")
    resumed = run(cfg, strategy=again(), benchmark=bench(), out=tmp_path / "cut", resume=True)
    assert resumed.accuracy_matrix == full.accuracy_matrix


# ---- Omega and anchors after each task, on a real benchmark, against direct computations --------
def _real_tasks(tasks, device):
    from forgetless.benchmarks import build

    classes = "0,1,2|3,4,5|6,7,8,9" if tasks == 3 else None
    return build("split-digits", scenario="task", tasks=tasks, classes=classes).to(device)


def _real_ctx(bench, seed=0):
    """A tiny MLP on the benchmark's device (the ``device`` fixture's: see ``_real_tasks``)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10)).to(bench.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return Context(
        model=model, optimizer=opt, benchmark=bench, generator=torch.Generator().manual_seed(3), device=bench.device
    )


def _fit(ctx, task, steps=15, batch=64):
    """Plain SGD on the task (the importance depends only on where training ends)."""
    x, y = task.train.x, task.train.y
    for s in range(steps):
        i = (s * batch) % len(x)
        loss = F.cross_entropy(ctx.model(x[i : i + batch]), y[i : i + batch])
        ctx.optimizer.zero_grad()
        loss.backward()
        ctx.optimizer.step()


def _classes(bench, task):
    """The competing outputs on the data's device, as ``Regularizer._data`` passes them."""
    return bench.active_outputs(task.id).to(task.train.y.device)


def _flat_params(ctx):
    return flatten([p.detach().clone() for p in ctx.params()])


def test_online_ewc_omega_is_gamma_times_the_decayed_running_fisher(device):
    """Schwarz et al. 2018: F*_k = gamma F*_{k-1} + F_k, penalty weighted by gamma F*_k. With gamma =
    0.5 over three tasks: Omega = 0.5 F_3 + 0.25 F_2 + 0.125 F_1, anchored after task 3."""
    bench = _real_tasks(3, device)
    ctx = _real_ctx(bench)
    s = OnlineEWC(gamma=0.5, samples=None, normalize="none")
    fishers = []
    for task in bench.tasks:
        _fit(ctx, task)
        s.after_task(ctx, task)
        fishers.append(flatten(fisher_diagonal(ctx.model, task.train.x, task.train.y, classes=_classes(bench, task))))
    F1, F2, F3 = fishers
    want = 0.5 * F3 + 0.25 * F2 + 0.125 * F1
    assert float(F1.abs().max()) > 0 and float((0.5 * F1 - 0.125 * F1).abs().max()) > 1e-6  # gamma matters
    assert torch.allclose(s.quad.omega, want, rtol=1e-5, atol=1e-10)
    assert torch.equal(s.quad.center, _flat_params(ctx)) and s.quad.terms == []
    # gamma = 1: the plain running sum
    ctx = _real_ctx(bench)
    s = OnlineEWC(gamma=1.0, samples=None, normalize="none")
    for task in bench.tasks:
        _fit(ctx, task)
        s.after_task(ctx, task)
    assert not torch.allclose(s.quad.omega, want, rtol=1e-3)


def test_normalized_fisher_is_each_tasks_fisher_scaled_to_unit_range(device):
    """normalize=minmax (RWalk's normalization): each task's F_k -> (F_k - min)/(max - min) over all
    parameters, before EWC keeps it as a term and before online EWC adds it to its running sum."""
    bench = _real_tasks(2, device)
    ctx = _real_ctx(bench)
    s = EWC(samples=None, normalize="minmax")
    o = OnlineEWC(samples=None, normalize="minmax", gamma=0.5)
    raw = []
    for task in bench.tasks:
        _fit(ctx, task)
        s.after_task(ctx, task)
        o.after_task(ctx, task)
        raw.append(flatten(fisher_diagonal(ctx.model, task.train.x, task.train.y, classes=_classes(bench, task))))
    scaled = [(f - f.min()) / (f.max() - f.min()) for f in raw]
    for (omega, _), want in zip(s.quad.terms, scaled):
        assert torch.allclose(omega, want, rtol=1e-5, atol=1e-7)
        assert float(omega.max()) == pytest.approx(1.0) and float(omega.min()) == pytest.approx(0.0, abs=1e-7)
    assert float(raw[0].max()) < 0.5  # the raw Fisher is not already on that scale: the test can fail
    assert torch.allclose(o.quad.omega, 0.5 * (0.5 * scaled[0] + scaled[1]), rtol=1e-5, atol=1e-7)
    assert EWC().normalize == "minmax" and EWC(normalize="none").normalize == "none"  # the default; the paper


def test_mas_over_two_tasks_is_the_sum_of_the_task_importances(device):
    bench = _real_tasks(2, device)
    ctx = _real_ctx(bench)
    s = MAS()
    parts = []
    for task in bench.tasks:
        _fit(ctx, task)
        s.after_task(ctx, task)
        parts.append(flatten(mas_importance(ctx.model, task.train.x, classes=_classes(bench, task))))
    assert float(parts[0].abs().max()) > 0 and float(parts[1].abs().max()) > 0
    assert torch.allclose(s.quad.omega, parts[0] + parts[1], rtol=1e-5, atol=1e-10)
    assert not torch.allclose(s.quad.omega, parts[1], rtol=1e-3)
    assert torch.equal(s.quad.center, _flat_params(ctx))


def test_scp_over_two_tasks_is_the_authors_running_average(device):
    """Gamma <- alpha Gamma + (1 - alpha) Gamma_k from Gamma = 0 (Kolouri's SCP.consolidate): after
    two tasks alpha (1 - alpha) Gamma_1 + (1 - alpha) Gamma_2, each Gamma_k computed directly with the
    generator the strategy derives for task k."""
    bench = _real_tasks(2, device)
    ctx = _real_ctx(bench)
    alpha = 0.3
    s = SCP(alpha=alpha, slices=7)
    parts = []
    for task in bench.tasks:
        _fit(ctx, task)
        s.after_task(ctx, task)
        parts.append(
            flatten(
                scp_importance(
                    ctx.model,
                    task.train.x,
                    classes=_classes(bench, task),
                    slices=7,
                    generator=task_generator(ctx, task, 2),
                )
            )
        )
        if task.id == 0:
            assert torch.allclose(s.quad.omega, (1 - alpha) * parts[0], rtol=1e-5, atol=1e-12)
    want = alpha * (1 - alpha) * parts[0] + (1 - alpha) * parts[1]
    assert torch.allclose(s.quad.omega, want, rtol=1e-5, atol=1e-12)
    assert not torch.allclose(s.quad.omega, (1 - alpha) * parts[1], rtol=1e-3)
    assert torch.equal(s.quad.center, _flat_params(ctx))


def test_l2_omega_is_ones_at_the_latest_parameters_and_its_gradient_is_2_lam_delta(device):
    bench = _real_tasks(2, device)
    ctx = _real_ctx(bench)
    s = L2(lam=0.7)
    for task in bench.tasks:
        _fit(ctx, task)
        s.after_task(ctx, task)
    anchor = _flat_params(ctx)
    assert torch.equal(s.quad.omega, torch.ones_like(anchor))
    assert torch.equal(s.quad.center, anchor)
    with torch.no_grad():  # move away from the anchor
        for p in ctx.params():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())).to(p.device))
    theta = _flat_params(ctx)
    got = flatten(s.quad.grad(ctx.params(), s.lam))
    assert torch.allclose(got, 2 * 0.7 * (theta - anchor), rtol=1e-5, atol=1e-9)
    assert s.penalty_value(ctx) == pytest.approx(0.7 * float(((theta - anchor) ** 2).sum()), rel=1e-5)

"""Each method's arithmetic against a direct computation (issue 12, section 3).

A tiny MLP is trained for a few steps on real data (split-digits: sklearn's 8x8 digits), then what a
strategy computes (ER's mixed batch, GEM's constraint matrix and projection, BiC's weights and bias
layer, LwF's loss) is compared with the formula written out here with plain torch, without the
library's helpers (no ``distillation_loss``, no ``ctx.mask``, no ``memory_loss_grad``).
"""

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F

import forgetless as fl
from forgetless import Batch, Context
from forgetless.benchmarks import build
from forgetless.models import build_model
from forgetless.run import make_optimizer
from forgetless.strategies import make_strategy
from forgetless.strategies.bic import BETA_L2
from forgetless.strategies.gem import EPS, gem_dual, gem_project
from forgetless.strategies.replay import flat_grad

BATCH = 32


def setup(scenario: str, device: torch.device, classes: str | None = None, seed: int = 0, width: int = 32):
    """The benchmark, the model and the context on ``device`` (the optimizer made for it, as a run makes it)."""
    bench = build("split-digits", scenario=scenario, seed=0, classes=classes).to(device)
    torch.manual_seed(seed)
    model = build_model(f"mlp:{width}", bench.input_shape, bench.n_outputs).to(device)
    opt = make_optimizer("adam", list(model.parameters()), 1e-3, device=device)
    ctx = Context(
        model=model,
        optimizer=opt,
        benchmark=bench,
        batch_size=BATCH,
        generator=torch.Generator().manual_seed(seed),
        device=device,
    )
    return bench, ctx


def train(ctx, s, task, steps: int) -> None:
    """before_task, then ``steps`` train_step calls on the strategy's data (no after_task)."""
    s.before_task(ctx, task)
    data, t = s.train_data(ctx, task)
    for _ in range(steps):
        idx = ctx.put(torch.randperm(len(data), generator=ctx.generator)[:BATCH])
        fl.train_step(ctx, s, Batch(data.x[idx], data.y[idx], t[idx]))


def masked(logits: torch.Tensor, allowed) -> torch.Tensor:
    """Logits with every output outside ``allowed`` set to -inf (written out, not ctx.mask)."""
    keep = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    keep[torch.as_tensor(allowed, device=logits.device)] = True
    return logits.masked_fill(~keep, float("-inf"))


def clone_gen(g: torch.Generator) -> torch.Generator:
    out = torch.Generator()
    out.set_state(g.get_state())
    return out


# ---- 1. ER's adapt_batch ------------------------------------------------------------------------
@pytest.mark.parametrize("replay_batch_size", [0, 7])
@pytest.mark.parametrize("scenario", ["task", "class"])
def test_er_batch_is_current_then_memory_sample(scenario, replay_batch_size, one_thread, device):
    bench, ctx = setup(scenario, device)
    er = make_strategy("er", {"memory": 60, "replay_batch_size": replay_batch_size})
    train(ctx, er, bench.tasks[0], 5)
    er.after_task(ctx, bench.tasks[0])
    assert len(er.buffer_) == 60  # 5 * 32 examples offered: full
    task = bench.tasks[1]
    er.before_task(ctx, task)
    x, y = task.train.x[:BATCH], task.train.y[:BATCH]
    batch = Batch(x, y, task.ids(BATCH))

    gen = clone_gen(ctx.generator)
    expected_buffer = copy.deepcopy(er.buffer_)
    n = replay_batch_size or ctx.batch_size
    mx, my, mt = expected_buffer.sample(n, gen)  # what ER must draw, with the same generator state
    expected_buffer.add(batch.x, batch.y, batch.t, gen)  # then the incoming examples are offered
    seen = er.buffer_.seen

    out = er.adapt_batch(ctx, batch)
    assert len(mx) == min(n, 60)
    assert torch.equal(out.x, torch.cat([x, mx]))
    assert torch.equal(out.y, torch.cat([y, my]))
    assert torch.equal(out.t, torch.cat([batch.t, mt]))
    assert set(mt.tolist()) == {0}  # the memory holds task 0 only here: its task index travels
    assert er.buffer_.seen == seen + BATCH  # the incoming batch, not the replayed one, was offered
    assert torch.equal(er.buffer_.x[:60], expected_buffer.x[:60])
    assert torch.equal(er.buffer_.y[:60], expected_buffer.y[:60])
    assert torch.equal(er.buffer_.t[:60], expected_buffer.t[:60])
    assert torch.equal(ctx.generator.get_state(), gen.get_state())  # nothing else drew from it


def test_er_empty_buffer_returns_the_batch_unchanged(one_thread, device):
    bench, ctx = setup("class", device)
    task = bench.tasks[0]
    for sampling in ("reservoir", "balanced"):
        er = make_strategy("er", {"memory": 50, "sampling": sampling})
        er.before_task(ctx, task)
        batch = Batch(task.train.x[:BATCH], task.train.y[:BATCH], task.ids(BATCH))
        out = er.adapt_batch(ctx, batch)
        assert all(torch.equal(a, b) for a, b in zip(out, batch)) and len(out.x) == BATCH
        # reservoir: offered during training; balanced: only at the end of the task
        assert er.buffer_.seen == (BATCH if sampling == "reservoir" else 0)


def test_er_small_memory_replays_all_of_it(one_thread, device):
    bench, ctx = setup("class", device)
    er = make_strategy("er", {"memory": 5})
    task = bench.tasks[0]
    er.before_task(ctx, task)
    er.adapt_batch(ctx, Batch(task.train.x[:3], task.train.y[:3], task.ids(3)))
    out = er.adapt_batch(ctx, Batch(task.train.x[3:6], task.train.y[3:6], task.ids(3)))
    assert len(out.x) == 3 + 3  # three stored examples, fewer than the replay size: all of them
    assert sorted(out.y[3:].tolist()) == sorted(task.train.y[:3].tolist())


# ---- 2. GEM -------------------------------------------------------------------------------------
def direct_memory_grad(model, x, y, allowed) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    loss = F.cross_entropy(masked(model(x), allowed), y)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


@pytest.mark.parametrize("scenario", ["task", "class"])
def test_gem_constraints_and_projection(scenario, one_thread, device):
    bench, ctx = setup(scenario, device)
    gem = make_strategy("gem", {"memory": 100})
    for task in bench.tasks[:2]:
        train(ctx, gem, task, 20)
        gem.after_task(ctx, task)
    task = bench.tasks[2]
    train(ctx, gem, task, 10)
    assert sorted(gem.mem_x_) == [0, 1] and len(gem.mem_y_[0]) == 100 // len(bench.tasks)

    G = gem.constraints(ctx, [0, 1])
    for k in (0, 1):
        allowed = bench.tasks[k].classes if scenario == "task" else bench.classes_upto(task.id)
        row = direct_memory_grad(ctx.model, gem.mem_x_[k], gem.mem_y_[k], allowed)
        assert torch.allclose(G[k], row, rtol=1e-5, atol=1e-7), f"row {k}"
    if scenario == "task":  # each row comes from its own head: the two rows differ there
        assert not torch.allclose(G[0], G[1])

    # the projection: find a batch whose gradient violates a constraint, then after_backward
    params = ctx.params()
    data = task.train
    for start in range(0, len(data), BATCH):
        x, y = data.x[start : start + BATCH], data.y[start : start + BATCH]
        ctx.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(
            masked(ctx.model(x), bench.tasks[2].classes if scenario == "task" else bench.classes_upto(2)), y
        ).backward()
        g = flat_grad(params).clone()
        if (G @ g < 0).any():
            break
    else:
        pytest.fail("no batch of task 3 conflicts with the memories: the projection is not exercised")
    gem.after_backward(ctx)
    g_new = flat_grad(params)
    assert torch.allclose(g_new, gem_project(g, G, gem.margin), rtol=1e-6, atol=1e-8)
    Gd, gd = G.double(), g_new.double()
    v = torch.from_numpy(gem_dual(G.double().cpu().numpy(), g.double().cpu().numpy(), gem.margin)).to(device)
    assert (v >= gem.margin - 1e-12).all()
    # g~ = g + G^T v, and the dual's KKT condition (G G^T + eps I) v + G g >= 0, i.e. G g~ >= -eps v
    assert torch.allclose(gd, g.double() + Gd.T @ v, rtol=1e-5, atol=1e-7)
    slack = Gd @ gd + EPS * v
    assert (slack >= -1e-6 * Gd.norm(dim=1) * gd.norm()).all(), slack
    # without the eps regularisation the projected gradient satisfies G g~ >= 0 outright
    exact = gem_project(g.double(), Gd, gem.margin, eps=0.0)
    assert (Gd @ exact >= -1e-6 * Gd.norm(dim=1) * exact.norm()).all()
    # and the update is a step: the optimizer uses g~
    assert not torch.allclose(g_new, g)


# ---- 3. BiC -------------------------------------------------------------------------------------
UNEVEN = "0,1,2|3,4|5,6,7,8,9"


def test_bic_distill_weight_uneven_groups():
    bench = build("split-digits", scenario="class", seed=0, classes=UNEVEN)
    bic = make_strategy("bic", {}, "class")
    assert [len(t.classes) for t in bench.tasks] == [3, 2, 5]
    assert bic.distill_weight(bench, 1) == pytest.approx(3 / 5)
    assert bic.distill_weight(bench, 2) == pytest.approx(5 / 10)


def stage2_objective(bic, bench, model, task_id, ab):
    """CE over the classes seen so far of the corrected validation logits + 0.1 * beta^2 / 2, written
    out: task j's logits become alpha_j * o + beta_j (the learnt ones for j < task_id, ``ab`` for it)."""
    seen = bench.classes_upto(task_id)
    vx, vy, _ = bic.val.tensors(seen)
    with torch.no_grad():
        logits = model(vx).double()
    cols = []
    for c in seen:
        owner = next(t.id for t in bench.tasks if c in t.classes)
        if owner == task_id:
            a, b = ab[0], ab[1]
        else:
            a, b = bic.bias_[owner, 0].double(), bic.bias_[owner, 1].double()
        cols.append(a * logits[:, c] + b)
    z = torch.stack(cols, 1)
    target = torch.tensor([seen.index(int(c)) for c in vy], device=z.device)
    return F.cross_entropy(z, target) + BETA_L2 / 2 * ab[1] ** 2


def test_bic_bias_layer_is_at_the_stage2_optimum(one_thread, device):
    bench, ctx = setup("class", device, classes=UNEVEN)
    bic = make_strategy("bic", {"memory": 200}, "class")
    for task in bench.tasks:
        train(ctx, bic, task, 30)
        bic.after_task(ctx, task)
        if task.id == 0:
            continue
        ab_star = bic.bias_[task.id].double().clone().requires_grad_(True)
        f = stage2_objective(bic, bench, ctx.model, task.id, ab_star)
        (grad,) = torch.autograd.grad(f, ab_star)
        assert grad.abs().max() < 1e-4, (task.id, grad)
        assert not torch.allclose(ab_star.detach(), torch.tensor([1.0, 0.0], dtype=torch.float64, device=device)), (
            "the bias layer did not move from the identity: the test would not see a wrong optimum"
        )
        best = float(f.detach())
        a0, b0 = ab_star.detach().tolist()
        steps = [-0.2, -0.05, -0.01, 0.0, 0.01, 0.05, 0.2]
        with torch.no_grad():
            for da, db in itertools.product(steps, [s * 5 for s in steps]):
                value = float(
                    stage2_objective(
                        bic,
                        bench,
                        ctx.model,
                        task.id,
                        torch.tensor([a0 + da, b0 + db], dtype=torch.float64, device=device),
                    )
                )
                assert value >= best - 1e-9, (task.id, da, db, value, best)
    assert len(bic.val.classes) == 10


# ---- 4. LwF -------------------------------------------------------------------------------------
def direct_kd(new: torch.Tensor, old: torch.Tensor, T: float) -> torch.Tensor:
    """T^2 * mean_n KL(softmax(old/T) || softmax(new/T)), with the softmaxes written out."""

    def softmax(z):
        e = torch.exp(z / T - (z / T).max(1, keepdim=True).values)
        return e / e.sum(1, keepdim=True)

    q, p = softmax(old), softmax(new)
    return T * T * (q * (torch.log(q) - torch.log(p))).sum(1).mean()


def direct_padded_kd(new: torch.Tensor, old: torch.Tensor, s_cols: list[int], t_cols: list[int], T: float):
    """Class-IL: the student's softmax over ``s_cols`` (every class seen so far), the teacher's over
    ``t_cols`` (the old classes), the new classes' target probability 0: T^2 * mean_n sum_{c in t_cols}
    q_c (log q_c - log p_c)."""

    def log_softmax(z):
        z = z / T
        return z - torch.logsumexp(z, 1, keepdim=True)

    log_p = log_softmax(new[:, s_cols])
    log_q = log_softmax(old[:, t_cols])
    where = [s_cols.index(c) for c in t_cols]
    return T * T * (log_q.exp() * (log_q - log_p[:, where])).sum(1).mean()


@pytest.mark.parametrize("balance", [False, True])
@pytest.mark.parametrize("scenario", ["task", "class"])
def test_lwf_loss_is_the_direct_formula(scenario, balance, one_thread, device):
    bench, ctx = setup(scenario, device)
    lam, T = 0.7, 3.0
    lwf = make_strategy("lwf", {"lam": lam, "temperature": T, "balance": balance})
    checked = 0
    for task in bench.tasks[:4]:
        old_model = copy.deepcopy(ctx.model)  # ours: what the model was when this task began
        train(ctx, lwf, task, 15)
        lwf.after_task(ctx, task)
        x, y = task.train.x[:BATCH], task.train.y[:BATCH]
        batch = Batch(x, y, task.ids(BATCH))
        out = ctx.model(x)
        own = task.classes if scenario == "task" else bench.classes_upto(task.id)
        ce = F.cross_entropy(masked(out, own), y)
        if task.id == 0:
            assert lwf.penalty(ctx, batch, out) is None
            assert torch.equal(lwf.task_loss(ctx, batch, out, ce), ce)
            continue
        with torch.no_grad():
            old = old_model(x)
        groups = [t.classes for t in bench.tasks[: task.id]] if scenario == "task" else [bench.classes_before(task.id)]
        k = task.id + 1
        far = out + 2.0 * torch.randn(out.shape, generator=torch.Generator().manual_seed(task.id)).to(device)
        for logits, rtol in ((out, 1e-3), (far, 1e-5)):  # the trained model's logits, and logits far
            # from the old model's (large KL terms: a reversed KL or a missing factor shows clearly)
            if scenario == "task":
                terms = torch.stack([direct_kd(logits[:, g].double(), old[:, g].double(), T) for g in groups])
            else:  # the student over every class seen so far, the old model's targets padded with 0
                terms = torch.stack(
                    [
                        direct_padded_kd(
                            logits.double(), old.double(), bench.classes_upto(task.id), bench.classes_before(task.id), T
                        )
                    ]
                )
            assert float(terms.detach().min()) > 1e-6  # the model moved: the terms are not trivially 0
            if not balance:
                expected = lam * terms.sum()
                got = lwf.penalty(ctx, batch, logits)
                assert torch.equal(lwf.task_loss(ctx, batch, logits, ce), ce)
            else:
                expected = ce.double() / k + (1 - 1 / k) * lam * terms.mean()
                got = lwf.task_loss(ctx, batch, logits, ce)
                assert lwf.penalty(ctx, batch, logits) is None
            assert torch.allclose(got.double(), expected, rtol=rtol, atol=1e-9), (task.id, float(got), float(expected))
        # and the gradient (of the last pair, through the far logits) too
        params = ctx.params()
        g_got = torch.autograd.grad(got, params, retain_graph=True)
        g_exp = torch.autograd.grad(expected.float(), params, retain_graph=True)
        assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in zip(g_got, g_exp))
        checked += 1
    assert checked == 3

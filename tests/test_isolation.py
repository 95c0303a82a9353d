"""Parameter isolation (strategies/pnn.py, packnet.py, hat.py): task-IL only; PNN and PackNet keep
an old task's outputs bit-identical; PackNet's pruning and HAT's gates, gradient conditioning,
embedding compensation and regulariser against direct computations on a tiny model; resume; each
beats naive on task-IL split digits. Real data: sklearn digits (``split-digits``)."""

import math

import pytest
import torch
import torch.nn.functional as F

import forgetless as fl
from forgetless import Batch, Context, UsageError
from forgetless.benchmarks import build
from forgetless.checkpoint import CHECKPOINT, load_checkpoint
from forgetless.loop import evaluate, train_step, train_task
from forgetless.models import build_model
from forgetless.run import make_optimizer
from forgetless.strategies import make_strategy
from forgetless.strategies.hat import HAT, attention_regulariser, compensation
from forgetless.strategies.packnet import FREE, PackNet
from forgetless.strategies.pnn import PNN, mlp_forward

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = ["pnn", "packnet", "hat"]


def setup(device, model="mlp:32,32", optimizer="adam", lr=1e-2, batch_size=32, seed=0, bench="split-digits"):
    bench = build(bench, scenario="task", seed=seed).to(device)
    torch.manual_seed(seed)
    net = build_model(model, bench.input_shape, bench.n_outputs).to(device)
    ctx = Context(
        model=net,
        optimizer=make_optimizer(optimizer, net.parameters(), lr, device=device),
        benchmark=bench,
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(seed),
        device=device,
    )
    return bench, ctx


def scores(ctx, s, x):
    ctx.model.eval()
    with torch.inference_mode():
        out = s.predict(ctx, x)
    ctx.model.train()
    return out


def train_all(ctx, s, epochs=2, on_task=None):
    for task in ctx.benchmark.tasks:
        s.before_task(ctx, task)
        train_task(ctx, s, task, epochs=epochs)
        s.after_task(ctx, task)
        if on_task is not None:
            on_task(task)


# ---- task-IL only, supported models ----------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_other_scenarios_are_refused_in_one_line(name, device):
    for scenario in ("class", "domain"):
        with pytest.raises(UsageError, match=r"does not support the .*-incremental scenario") as e:
            make_strategy(name, {}, scenario)
        assert "\n" not in str(e.value)
    bench = build("split-digits", scenario="class").to(device)  # used directly in a user's loop
    net = build_model("mlp:8", bench.input_shape, bench.n_outputs).to(device)
    ctx = Context(
        model=net, optimizer=make_optimizer("sgd", net.parameters(), 0.1, device=device), benchmark=bench, device=device
    )
    with pytest.raises(UsageError, match=r"task-incremental only.*--scenario task"):
        make_strategy(name).before_task(ctx, bench.tasks[0])


@pytest.mark.parametrize(
    "name,model,message",
    [
        ("pnn", "cnn", "supports forgetless's MLP only"),
        ("hat", "cnn", "supports forgetless's MLP only"),
        ("hat", "none", "at least one hidden layer"),
    ],
)
def test_unsupported_models_are_refused(name, model, message):
    from forgetless.models import MLP

    cfg = fl.RunConfig(benchmark="split-digits", scenario="task", strategy=name, iterations=2)
    if model == "cnn":
        bench = build("split-mnist", scenario="task", data_dir="tests/data/mnist-subset")
        cnn = fl.RunConfig(benchmark="split-mnist", scenario="task", strategy=name, model="cnn", iterations=2)
    with pytest.raises(UsageError, match=message) as e:
        if model == "cnn":
            fl.run(cnn, benchmark=bench)
        else:
            fl.run(cfg, model=MLP(64, [], 10))  # no hidden layer
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["pnn", "hat"])
def test_fp16_grad_scaling_is_refused_where_the_strategy_trains_its_own_parameters(name, device):
    bench, ctx = setup(device)
    ctx.scaler = torch.amp.GradScaler(device.type)
    with pytest.raises(UsageError, match="float32 or bf16"):
        make_strategy(name).before_task(ctx, bench.tasks[0])


# ---- PNN and PackNet: BWT exactly 0 --------------------------------------------------------------
@pytest.mark.parametrize("name", ["pnn", "packnet", "naive"])
def test_old_task_outputs_are_bit_identical_after_later_tasks(name, device):
    """The logits of task 0's test inputs (task 0's outputs) after task 0 and after the last task:
    torch.equal for PNN and PackNet; naive, trained the same way, changes them (the control)."""
    bench, ctx = setup(device)
    s = make_strategy(name, {}, "task")
    x, cls = bench.tasks[0].test.x, bench.tasks[0].classes
    seen = []
    train_all(ctx, s, on_task=lambda task: seen.append(scores(ctx, s, x)[:, cls].clone()))
    if name == "naive":
        assert not torch.equal(seen[0], seen[-1])
        return
    assert all(torch.equal(seen[0], later) for later in seen[1:])
    rows = [evaluate(ctx, s, k) for k in range(len(bench.tasks))]  # the same model for every row: the last
    assert rows[0] == rows[-1]


@pytest.mark.parametrize("name", ["pnn", "packnet"])
def test_bwt_is_exactly_zero_in_a_run(name, device):
    r = fl.run(
        fl.RunConfig(
            benchmark="split-digits", scenario="task", strategy=name, model="mlp:32,32", epochs=2, lr=0.01, seed=1
        )
    )
    R = r.accuracy_matrix
    assert r.metrics["bwt"] == 0.0
    assert all(R[i][j] == R[j][j] for j in range(len(R)) for i in range(j, len(R)))


def test_pnn_adds_a_column_per_task_and_freezes_the_earlier_ones(device):
    bench, ctx = setup(device)
    s = PNN()
    states = []

    def snap(task):
        cols = [{k: v.clone() for k, v in ctx.model.state_dict().items()}]
        cols += [{k: v.clone() for k, v in c.state_dict().items()} for c in s.columns]
        states.append(cols)

    train_all(ctx, s, on_task=snap)
    assert len(s.columns) == len(bench.tasks) - 1
    assert [c.k for c in s.columns] == list(range(1, len(bench.tasks)))
    final = states[-1]
    for k, after_k in enumerate(states):  # column k as it was after task k, and at the end
        assert all(torch.equal(after_k[k][n], final[k][n]) for n in final[k])
    # task 0 is predicted by the run's model itself (column 0), task k by column k
    x = bench.tasks[0].test.x[:5]
    _, own = mlp_forward(ctx.model, x)
    assert torch.equal(scores(ctx, s, x)[:, bench.tasks[0].classes], own[:, bench.tasks[0].classes])


# ---- PackNet -----------------------------------------------------------------------------------
def test_packnet_prunes_the_smallest_free_weights_and_zeroes_them(device):
    bench, ctx = setup(device)
    s = PackNet(prune=0.75, retrain=0)
    t0, t1 = bench.tasks[:2]
    s.before_task(ctx, t0)
    train_task(ctx, s, t0, epochs=1)
    params = dict(ctx.model.named_parameters())
    before = {n: params[n].detach().clone() for n in s.owner_}
    s.prune_task(ctx, t0)
    assert set(s.owner_) == {"net.1.weight", "net.3.weight"}  # the output layer is not pruned
    for n, own in s.owner_.items():
        w, w0 = params[n].detach(), before[n]
        kept, pruned = own == 0, own == FREE
        assert int(kept.sum()) == w.numel() - round(0.75 * w.numel())
        assert torch.equal(w[kept], w0[kept]) and bool((w[pruned] == 0).all())
        assert float(w0[kept].abs().min()) >= float(w0[pruned].abs().max())  # by magnitude
    s.after_task(ctx, t0)
    bias = params["net.1.bias"].detach().clone()
    head = params["net.5.weight"].detach().clone()
    s.before_task(ctx, t1)
    train_task(ctx, s, t1, epochs=1)
    s.after_task(ctx, t1)
    for n, own in s.owner_.items():  # task 1 took 1/4 of what task 0 left
        free_before = params[n].numel() - int((own == 0).sum())
        assert int((own == 1).sum()) == free_before - round(0.75 * free_before)
    assert torch.equal(params["net.1.bias"].detach(), bias)  # biases: fixed after the first task
    rows0 = torch.tensor(t0.classes, device=device)
    assert torch.equal(params["net.5.weight"].detach()[rows0], head[rows0])  # task 0's outputs: fixed
    assert not torch.equal(params["net.5.weight"].detach(), head)  # task 1's rows did train


def test_packnet_masks_later_weights_for_an_old_task(device):
    bench, ctx = setup(device)
    s = PackNet()
    train_all(ctx, s, epochs=1)
    x = bench.tasks[0].test.x[:7]
    cls = bench.tasks[0].classes
    masked = scores(ctx, s, x)[:, cls]
    with torch.no_grad():  # by hand: only task 0's weights in the hidden layers
        h = x.flatten(1)
        for i in (1, 3):
            lin = ctx.model.net[i]
            h = F.relu(F.linear(h, torch.where(s.owner_[f"net.{i}.weight"] == 0, lin.weight, 0.0), lin.bias))
        by_hand = ctx.model.net[5](h)[:, cls]
        everything = ctx.model(x)[:, cls]
    assert torch.allclose(masked, by_hand, atol=1e-6)
    assert not torch.allclose(masked, everything, atol=1e-4)  # later tasks' weights would change it


# ---- HAT ---------------------------------------------------------------------------------------
def hand_forward(ctx, x, a):
    """The gated MLP by hand: relu(W h + b) * a for each hidden layer, then the output layer."""
    lins = [m for m in ctx.model.net if isinstance(m, torch.nn.Linear)]
    h = x.flatten(1)
    for lin, g in zip(lins[:-1], a):
        h = F.relu(h @ lin.weight.T + lin.bias) * g
    return h @ lins[-1].weight.T + lins[-1].bias


def test_hat_masks_conditioning_compensation_and_regulariser_against_a_direct_computation(device):
    bench, ctx = setup(device, model="mlp:5,4", optimizer="sgd", lr=0.05, batch_size=16)
    smax, c, lr = 400.0, 0.75, 0.05
    hat = HAT(smax=smax, c=c, clipgrad=1e30)  # (clipping tested below)
    t0, t1 = bench.tasks[:2]
    hat.before_task(ctx, t0)
    train_task(ctx, hat, t0, iterations=12)
    with torch.no_grad():  # task 0's embeddings set by hand: units taken (1), free (0) and in between
        hat.emb_[0][0].copy_(torch.tensor([6.0, -6.0, 0.002, -0.001, 6.0]))
        hat.emb_[0][1].copy_(torch.tensor([6.0, 0.003, -6.0, 6.0]))
    hat.after_task(ctx, t0)
    # masks: the cumulative attention after task 0 is task 0's gates at s_max
    a0 = [torch.sigmoid(smax * e) for e in hat.emb_[0]]
    assert all(torch.equal(cum, a) for cum, a in zip(hat.cum_, a0))
    assert [round(float(v), 3) for v in a0[0]] == [1.0, 0.0, 0.69, 0.401, 1.0]
    x = t0.test.x[:9]
    assert torch.allclose(scores(ctx, hat, x)[:, t0.classes], hand_forward(ctx, x, a0)[:, t0.classes], atol=1e-6)

    # one step of task 1, by hand
    hat.before_task(ctx, t1)
    idx = torch.arange(16, device=device)
    batch = Batch(t1.train.take(idx), t1.train.y[idx], t1.ids(16))
    B = math.ceil(len(t1.train) / 16)
    s = 1 / smax + (smax - 1 / smax) * 0 / (B - 1)  # the first batch of the epoch
    lins = [m for m in ctx.model.net if isinstance(m, torch.nn.Linear)]
    W = [p.detach().clone().requires_grad_() for lin in lins for p in (lin.weight, lin.bias)]
    E = [e.detach().clone().requires_grad_() for e in hat.emb_[1]]
    cum = [cm.clone() for cm in hat.cum_]
    a_val = [torch.sigmoid(s * e.detach()) for e in E]
    a = [torch.sigmoid(s * e) for e in E]
    h = batch.x.flatten(1)
    for i in range(2):
        h = F.relu(h @ W[2 * i].T + W[2 * i + 1]) * a[i]
    out = h @ W[4].T + W[5]
    num = sum(float(a_val[k][u]) * (1 - float(cum[k][u])) for k in range(2) for u in range(len(cum[k])))
    den = sum(1 - float(cum[k][u]) for k in range(2) for u in range(len(cum[k])))
    reg = sum((a[k] * (1 - cum[k])).sum() for k in range(2)) / den
    assert math.isclose(float(reg.detach()), num / den, rel_tol=1e-5)
    loss = F.cross_entropy(bench.mask_logits(out, batch.t, 1), batch.y) + c * reg
    grads = torch.autograd.grad(loss, W + E)
    hat.adapt_batch(ctx, batch)
    assert math.isclose(float(hat.penalty(ctx, batch, None).detach()), c * num / den, rel_tol=1e-5)
    # conditioning: weight (j <- i) of layer k times 1 - min(cum_k[j], cum_{k-1}[i]); bias 1 - cum_k[j]
    expect = []
    for k in range(3):
        gw, gb = grads[2 * k].clone(), grads[2 * k + 1].clone()
        if k < 2:
            for j in range(gw.shape[0]):
                gb[j] *= 1 - float(cum[k][j])
                for i in range(gw.shape[1]):
                    gw[j, i] *= 1 - (float(cum[k][j]) if k == 0 else min(float(cum[k][j]), float(cum[k - 1][i])))
        expect += [W[2 * k].detach() - lr * gw, W[2 * k + 1].detach() - lr * gb]
    # compensation: s_max (cosh(s e) + 1) / (s (cosh(e) + 1)), then the step, then the clamp to [-6, 6]
    expect_e = []
    for e, g in zip(E, grads[6:]):
        q = torch.tensor(
            [
                smax * (math.cosh(max(-50.0, min(50.0, s * float(v)))) + 1) / (s * (math.cosh(float(v)) + 1))
                for v in e.detach()
            ],
            device=device,
        )
        expect_e.append((e.detach() - lr * g * q).clamp(-6, 6))
    train_step(ctx, hat, batch)
    got = [p.detach() for lin in lins for p in (lin.weight, lin.bias)]
    for g, want in zip(got, expect):
        assert torch.allclose(g, want, rtol=1e-4, atol=1e-6)
    for e, want in zip(hat.emb_[1], expect_e):
        assert torch.allclose(e.detach(), want, rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(g, w.detach()) for g, w in zip(got, W))  # the step did move something


def test_hat_compensation_and_regulariser_formulas():
    e = torch.tensor([-3.0, -0.2, 0.0, 0.7, 5.0])
    for s in (1 / 400, 1.0, 400.0):
        want = [400 * (math.cosh(max(-50, min(50, s * v))) + 1) / (s * (math.cosh(v) + 1)) for v in e.tolist()]
        assert torch.allclose(compensation(e, s, 400.0, 50.0), torch.tensor(want), rtol=1e-5)
    a = [torch.tensor([0.2, 1.0]), torch.tensor([0.5])]
    assert math.isclose(float(attention_regulariser(a, None)), (0.2 + 1.0 + 0.5) / 3, rel_tol=1e-6)
    cum = [torch.tensor([1.0, 0.0]), torch.tensor([0.25])]
    assert math.isclose(float(attention_regulariser(a, cum)), (0 + 1.0 + 0.5 * 0.75) / (0 + 1 + 0.75), rel_tol=1e-6)


def test_hat_clips_the_gradient_norm_of_weights_and_embeddings(device):
    bench, ctx = setup(device, model="mlp:5,4", optimizer="sgd", lr=0.05, batch_size=16)
    hat = HAT(clipgrad=1e-3)
    task = bench.tasks[0]
    hat.before_task(ctx, task)
    before = [p.detach().clone() for p in ctx.model.parameters()] + [e.detach().clone() for e in hat.emb_[0]]
    idx = torch.arange(16, device=device)
    train_step(ctx, hat, Batch(task.train.take(idx), task.train.y[idx], task.ids(16)))
    after = [p.detach() for p in ctx.model.parameters()] + [e.detach() for e in hat.emb_[0]]
    moved = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(after, before)))
    assert math.isclose(float(moved), 0.05 * 1e-3, rel_tol=1e-3)  # lr * the clipped norm


def test_hat_units_fully_taken_by_earlier_tasks_do_not_move_even_with_adam(device):
    bench, ctx = setup(device, model="mlp:16,16")
    hat = HAT()
    t0, t1 = bench.tasks[:2]
    hat.before_task(ctx, t0)
    train_task(ctx, hat, t0, epochs=3)
    hat.after_task(ctx, t0)
    W = ctx.model.net[3].weight
    frozen = torch.minimum(hat.cum_[1].view(-1, 1), hat.cum_[0].view(1, -1)) == 1
    assert bool(frozen.any()) and not bool(frozen.all())
    w0 = W.detach().clone()
    hat.before_task(ctx, t1)
    train_task(ctx, hat, t1, epochs=3)  # Adam's moments from task 0 would move them
    assert torch.equal(W.detach()[frozen], w0[frozen])
    assert not torch.equal(W.detach()[~frozen], w0[~frozen])


# ---- resume, and the comparison with naive -------------------------------------------------------
def crashing(cls, at):
    class Crashing(cls):
        def before_task(self, ctx, task):
            if task.id == at:
                raise KeyboardInterrupt
            return super().before_task(ctx, task)

    Crashing.__name__ = Crashing.__qualname__ = f"Crashing{cls.__name__}"
    return Crashing


@pytest.mark.parametrize("cls", [PNN, PackNet, HAT], ids=NAMES)
def test_checkpoint_resume_gives_the_identical_accuracy_matrix(cls, tmp_path):
    cfg = fl.RunConfig(benchmark="split-digits", scenario="task", model="mlp:32,32", epochs=2, seed=4)
    full = fl.run(cfg, strategy=crashing(cls, None)(), out=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        fl.run(cfg, strategy=crashing(cls, 3)(), out=tmp_path / "cut")
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT)["state"]["done"] == 3
    resumed = fl.run(cfg, strategy=crashing(cls, None)(), out=tmp_path / "cut", resume=True)
    assert resumed.accuracy_matrix == full.accuracy_matrix


def test_each_beats_naive_on_task_il_split_digits():
    """Adam at lr 0.01 for 20 epochs per task: naive forgets (its final average accuracy about 0.80
    with this seed), the isolation methods keep every task (about 0.98 and above)."""
    cfg = dict(benchmark="split-digits", scenario="task", model="mlp:256,256", epochs=20, lr=0.01, seed=0)
    got = {name: fl.run(fl.RunConfig(strategy=name, **cfg)).metrics for name in ["naive", *NAMES]}
    for name in NAMES:
        assert got[name]["average_accuracy"] > got["naive"]["average_accuracy"] + 0.05, (name, got)
        assert got[name]["bwt"] > got["naive"]["bwt"], (name, got)


@pytest.mark.parametrize("spec", ["hat+er", "packnet+lwf", "pnn+derpp", "er+hat"])
def test_isolation_composed_with_replay_or_distillation_is_refused(spec):
    from forgetless.errors import UsageError

    with pytest.raises(UsageError, match="alone"):
        fl.make_strategy(spec, {})
    fl.make_strategy("hat+ewc", {})  # a penalty is not fed through the gates: allowed

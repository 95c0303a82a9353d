"""The modern rehearsal baselines (DER, DER++, X-DER, ER-ACE, GDumb, MIR): each loss against a direct
computation on a small model and real data (scikit-learn's digits), the stored logits through a
checkpoint and resume, and a class-IL run where DER++ beats naive."""

import copy

import pytest
import torch
import torch.nn.functional as F

import forgetless as fl
from forgetless import RunConfig, run
from forgetless.errors import UsageError
from forgetless.loop import train_step
from forgetless.memory import ReplayBuffer
from forgetless.strategies import Batch, Context, make_strategy
from forgetless.strategies.der import DER, DERpp
from forgetless.strategies.er_ace import ERACE
from forgetless.strategies.gdumb import GDumb, sgdr_rate
from forgetless.strategies.mir import MIR
from forgetless.strategies.xder import XDER, hinge_mean, xder_update

pytestmark = pytest.mark.usefixtures("one_thread")
CLASS_IL = dict(benchmark="split-digits", scenario="class", model="mlp:100", epochs=5, batch_size=32)


@pytest.fixture(scope="module")
def bench(device):
    return fl.build("split-digits", scenario="class").to(device)


def context(bench, task_id=0, hidden=16, seed=0, lr=0.1):
    torch.manual_seed(seed)
    model = fl.build_model(f"mlp:{hidden}", bench.input_shape, bench.n_outputs).to(bench.device)
    ctx = Context(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=lr),
        benchmark=bench,
        batch_size=16,
        generator=torch.Generator().manual_seed(seed),
        device=bench.device,
    )
    for task in bench.tasks[: task_id + 1]:
        ctx.begin_task(task)
    return ctx


def batch_of(task, rows):
    idx = torch.as_tensor(rows, device=task.train.device)
    return Batch(task.train.take(idx), task.train.y[idx], task.ids()[idx])


def fill(buffer, task, n, generator, logits=None):
    b = batch_of(task, range(n))
    extra = {} if logits is None else {"logits": logits(b.x)}
    buffer.add(b.x, b.y, b.t, generator, **extra)


# ---- memory: extras and the greedy policy -------------------------------------------------------
def test_buffer_extras_follow_their_examples_and_survive_state_dict(bench):
    task = bench.tasks[0]
    g = torch.Generator().manual_seed(0)
    buf = ReplayBuffer(20, "reservoir")
    for i in range(0, 200, 16):  # far more than fits: slots are overwritten at random
        b = batch_of(task, range(i, i + 16))
        buf.add(b.x, b.y, b.t, g, tag=b.x.flatten(1).sum(1, keepdim=True) * 3)
    x, y, _ = buf.tensors()
    assert torch.allclose(buf.extra["tag"][: len(y)], x.flatten(1).sum(1, keepdim=True) * 3)
    again = ReplayBuffer(20)
    again.load_state_dict(buf.state_dict())
    assert torch.equal(again.extra["tag"][:20], buf.extra["tag"][:20]) and again.extra["tag"].device == bench.device
    with pytest.raises(ValueError, match="extras"):
        again.add(x[:2], y[:2], y[:2], g)  # the same extras at every call


def test_greedy_policy_is_class_balanced_and_never_replaces_within_a_full_class(bench):
    g = torch.Generator().manual_seed(0)
    buf = ReplayBuffer(30, "greedy")
    first = {}
    for task in bench.tasks[:3]:  # classes arrive two at a time
        order = torch.randperm(len(task.train), generator=g).to(bench.device)
        buf.add(task.train.take(order), task.train.y[order], task.ids()[order], g)
        counts = buf.class_counts()
        assert max(counts.values()) - min(counts.values()) <= 1 and sum(counts.values()) == 30
        x, y, _ = buf.tensors()
        for c in task.classes:  # the first examples of a class that get in are the ones it keeps (or fewer)
            first[c] = {tuple(v.flatten().tolist()) for v in x[y == c]}
    assert buf.class_counts() == dict.fromkeys(range(6), 5)
    x, y, _ = buf.tensors()
    for c in range(6):
        assert {tuple(v.flatten().tolist()) for v in x[y == c]} <= first[c]


# ---- DER and DER++ --------------------------------------------------------------------------------
def test_der_penalty_is_alpha_times_the_mse_on_stored_logits(bench):
    ctx = context(bench, task_id=1)
    s = DER(memory=40, alpha=0.7, replay_batch_size=12)
    with torch.no_grad():
        fill(s.buffer_, bench.tasks[0], 40, ctx.generator, logits=lambda x: ctx.model(x) * 2 + 1)
    b = batch_of(bench.tasks[1], range(8))
    s.adapt_batch(ctx, b)
    state = ctx.generator.get_state()
    pen = s.penalty(ctx, b, ctx.model(b.x))
    ctx.generator.set_state(state)
    idx = torch.randperm(40, generator=ctx.generator)[:12].to(bench.device)  # what the buffer draws
    z = s.buffer_.extra["logits"][idx]
    direct = 0.7 * ((ctx.model(s.buffer_.x[idx]) - z) ** 2).sum() / (12 * bench.n_outputs)
    assert torch.allclose(pen, direct, rtol=1e-5)
    assert pen.requires_grad and float(direct.detach()) > 0.1  # (a real difference, not a vacuous 0 == 0)


def test_derpp_adds_beta_times_the_masked_cross_entropy_of_a_second_batch(bench):
    ctx = context(bench, task_id=1)
    s = DERpp(memory=40, alpha=0.3, beta=2.0, replay_batch_size=10)
    with torch.no_grad():
        fill(s.buffer_, bench.tasks[0], 40, ctx.generator, logits=lambda x: torch.zeros(len(x), 10, device=x.device))
    b = batch_of(bench.tasks[1], range(8))
    s.adapt_batch(ctx, b)
    state = ctx.generator.get_state()
    pen = s.penalty(ctx, b, ctx.model(b.x))
    ctx.generator.set_state(state)
    i1 = torch.randperm(40, generator=ctx.generator)[:10].to(bench.device)
    i2 = torch.randperm(40, generator=ctx.generator)[:10].to(bench.device)
    x1, x2, y2 = s.buffer_.x[i1], s.buffer_.x[i2], s.buffer_.y[i2]
    mse = (ctx.model(x1) ** 2).mean()
    logits = ctx.model(x2)[:, :4]  # class-IL after task 2: the 4 classes seen compete
    ce = (torch.logsumexp(logits, 1) - logits.gather(1, y2[:, None]).squeeze(1)).mean()
    assert torch.allclose(pen, 0.3 * mse + 2.0 * ce, rtol=1e-5)
    assert not torch.equal(i1, i2)  # two independent draws


def test_der_stores_the_logits_of_the_step_before_its_update(bench):
    ctx = context(bench, task_id=0)
    s = DER(memory=100)
    b = batch_of(bench.tasks[0], range(16))
    with torch.no_grad():
        before = ctx.model(b.x)
    train_step(ctx, s, b)
    x, y, _t = s.buffer_.tensors()
    assert torch.equal(x, b.x) and torch.equal(y, b.y)
    assert torch.allclose(s.buffer_.extra["logits"][:16], before, atol=1e-6)
    with torch.no_grad():
        assert not torch.allclose(ctx.model(b.x), before, atol=1e-4)  # the step did change the model


# ---- ER-ACE -------------------------------------------------------------------------------------
def test_er_ace_incoming_loss_masks_the_classes_absent_from_the_batch(bench):
    ctx = context(bench, task_id=2)  # classes 0..5 seen
    s = ERACE(memory=50)
    rows = [int(i) for i in (bench.tasks[2].train.y == 4).nonzero().flatten()[:5]]
    b = batch_of(bench.tasks[2], rows)  # only class 4 is present
    out = ctx.model(b.x).detach().requires_grad_()
    loss = s.task_loss(ctx, b, out, F.cross_entropy(out, b.y))
    assert torch.allclose(loss, torch.zeros(()), atol=1e-6)  # one class present: softmax over it alone
    two = batch_of(bench.tasks[2], list(range(10)))  # classes 4 and 5
    out = ctx.model(two.x).detach().requires_grad_()
    loss = s.task_loss(ctx, two, out, None)
    z = out[:, [4, 5]]
    direct = (torch.logsumexp(z, 1) - out.gather(1, two.y[:, None]).squeeze(1)).mean()
    assert torch.allclose(loss, direct, atol=1e-6)
    loss.backward()
    assert out.grad[:, [0, 1, 2, 3, 6, 7, 8, 9]].abs().max() == 0  # the old classes' logits are left alone
    # the replay term: cross-entropy over every seen class of a memory batch
    fill(s.buffer_, bench.tasks[0], 50, ctx.generator)
    state = ctx.generator.get_state()
    pen = s.penalty(ctx, two, out)
    ctx.generator.set_state(state)
    idx = torch.randperm(50, generator=ctx.generator)[:16].to(bench.device)
    logits = ctx.model(s.buffer_.x[idx])[:, :6]
    assert torch.allclose(pen, F.cross_entropy(logits, s.buffer_.y[idx]), atol=1e-6)


# ---- X-DER --------------------------------------------------------------------------------------
def test_xder_logit_update_is_the_papers_rule_row_by_row():
    g = torch.Generator().manual_seed(0)
    old = torch.randn(30, 10, generator=g) + 1.0
    new = torch.randn(30, 10, generator=g) * 3
    y = torch.randint(0, 4, (30,), generator=g)
    old[torch.arange(30), y] = torch.rand(30, generator=g) * 3 + 0.5  # positive ground-truth logits
    cols = torch.tensor([4, 5, 6, 7, 8, 9])
    got = xder_update(old, new, y, cols, gamma=0.85)
    scaled = 0
    for i in range(30):
        want = old[i].clone()
        v = new[i, cols].clone()
        gt = old[i, y[i]]
        if v.max() > gt:
            v = v * 0.85 * gt / v.max()
            scaled += 1
            assert torch.isclose(v.max(), 0.85 * gt)
        want[cols] = v
        assert torch.allclose(got[i], want, atol=1e-6)
    assert 5 < scaled < 30  # both cases occur
    assert torch.equal(got[:, :4], old[:, :4])  # the other outputs are the stored ones


def test_hinge_mean_averages_the_positive_entries_only():
    assert float(hinge_mean(torch.tensor([-1.0, 2.0, 4.0, 0.0]))) == 3.0
    assert float(hinge_mean(torch.tensor([-1.0, -2.0]))) == 0.0


def test_xder_task_end_balances_the_memory_and_updates_past_logits(bench):
    s = XDER(memory=60)
    ctx = context(bench, task_id=0, hidden=32)
    r = run(RunConfig(**dict(CLASS_IL, epochs=2)), strategy=s, benchmark=bench.first(2), model=ctx.model)
    assert len(r.accuracy_matrix) == 2
    assert s.buffer_.class_counts() == {0: 15, 1: 15, 2: 15, 3: 15}
    x, y, _ = s.buffer_.tensors()
    z = s.buffer_.extra["logits"][: len(y)]
    with torch.no_grad():
        ctx.model.eval()
        now = ctx.model(x)
    # past examples (classes 0, 1): their head-1 logits (outputs 2, 3) are the final model's, damped
    past = y < 2
    head1 = torch.tensor([2, 3], device=bench.device)
    assert torch.allclose(z[past][:, head1], xder_update(z[past], now[past], y[past], head1, 0.85)[:, head1], atol=1e-5)
    # new examples (classes 2, 3): the model's logits with the past head damped below the true class
    new = ~past
    want = xder_update(now[new], now[new], y[new], torch.tensor([0, 1], device=bench.device), 0.85)
    assert torch.allclose(z[new], want, atol=1e-5)
    gt = z[new].gather(1, y[new][:, None]).squeeze(1)
    positive = gt > 0  # (the rule assumes a positive true-class logit)
    assert positive.sum() >= 10 and (z[new][positive][:, :2].max(1).values <= gt[positive] + 1e-5).all()
    with pytest.raises(UsageError, match="supports: class"):
        make_strategy("xder", {}, "task")


# ---- MIR ----------------------------------------------------------------------------------------
def test_mir_replays_the_candidates_whose_loss_a_virtual_step_increases_most(bench):
    ctx = context(bench, task_id=1, hidden=32, lr=0.5)
    s = MIR(memory=60, candidates=30, replay_batch_size=7)
    fill(s.buffer_, bench.tasks[0], 60, ctx.generator)
    b = batch_of(bench.tasks[1], range(20))
    state = ctx.generator.get_state()
    mixed = s.adapt_batch(ctx, b)
    ctx.generator.set_state(state)
    cand = torch.randperm(60, generator=ctx.generator)[:30].to(bench.device)
    cx, cy = s.buffer_.x[cand], s.buffer_.y[cand]
    # directly: a copy of the model takes one SGD step on the incoming batch
    virtual = copy.deepcopy(ctx.model)
    opt = torch.optim.SGD(virtual.parameters(), lr=0.5)
    F.cross_entropy(virtual(b.x)[:, :4], b.y).backward()
    opt.step()
    with torch.no_grad():
        increase = F.cross_entropy(virtual(cx)[:, :4], cy, reduction="none") - F.cross_entropy(
            ctx.model(cx)[:, :4], cy, reduction="none"
        )
    top = increase.topk(7).indices
    assert torch.equal(mixed.x[:20], b.x) and len(mixed.y) == 27
    assert torch.equal(mixed.x[20:], cx[top]) and torch.equal(mixed.y[20:], cy[top])
    assert increase[top].min() > increase.median()  # not a random pick
    assert all(p.grad is None for p in ctx.model.parameters())  # the scoring leaves the model alone


# ---- GDumb --------------------------------------------------------------------------------------
def test_sgdr_rate_warms_up_then_restarts_cosine_cycles():
    rates = [sgdr_rate(e, 0.05, 0.0005) for e in range(8)]
    assert rates[0] == pytest.approx(0.005)
    assert rates[1] == rates[2] == rates[4] == pytest.approx(0.05)  # cycle starts: epochs 1, 2, 4 (lengths 1, 2, 4)
    assert rates[3] == pytest.approx(0.0005 + 0.0495 * 0.5)
    assert rates[5] > rates[6] > rates[7] > 0.0005


def test_gdumb_memory_is_balanced_and_the_model_depends_only_on_the_memory(bench, device):
    s = GDumb(memory=50, fit_epochs=16)
    ctx = context(bench, task_id=4, hidden=32)  # (every class seen, as after the run)
    r = run(RunConfig(**CLASS_IL), strategy=s, benchmark=bench, model=ctx.model)
    assert s.buffer_.class_counts() == dict.fromkeys(range(10), 5)
    assert all(p["steps"] > 0 and p["mean_loss"] == 0.0 for p in r.timing["per_task"])  # nothing learnt from the stream
    final = copy.deepcopy(ctx.model.state_dict())
    # scramble the model: retraining from scratch on the same memory gives the same model
    with torch.no_grad():
        for p in ctx.model.parameters():
            p.normal_()
    s.retrain(ctx)
    assert all(torch.equal(final[k], v) for k, v in ctx.model.state_dict().items())
    # and another memory gives another model
    other = GDumb(memory=50, fit_epochs=16)
    other.load_state_dict(s.state_dict())
    x, y, _t = other.buffer_.tensors()
    other.buffer_.x[: len(y)] = x.flip(0)
    other.buffer_.y[: len(y)] = y.flip(0)
    other.retrain(ctx)
    assert not all(torch.equal(final[k], v) for k, v in ctx.model.state_dict().items())
    assert r.metrics["average_accuracy"] > 0.45  # 5 examples per class, trained from scratch (chance: 0.1)


# ---- runs: resume and a class-IL comparison -----------------------------------------------------
@pytest.mark.parametrize("name", ["derpp", "xder", "gdumb", "mir", "er-ace", "lucir"])
def test_resume_gives_the_same_accuracy_matrix(tmp_path, name):
    cfg = RunConfig(**dict(CLASS_IL, epochs=2, strategy=name, params={"memory": 60}))

    class Crash(type(make_strategy(name, {"memory": 60}))):
        at = None

        def before_task(self, ctx, task):
            if task.id == self.at:
                raise KeyboardInterrupt
            super().before_task(ctx, task)

    whole = run(cfg, strategy=Crash(memory=60), out=tmp_path / "whole")
    cut = Crash(memory=60)
    cut.at = 3
    with pytest.raises(KeyboardInterrupt):
        run(cfg, strategy=cut, out=tmp_path / "cut")
    resumed = Crash(memory=60)
    again = run(cfg, strategy=resumed, out=tmp_path / "cut", resume=True)
    assert again.accuracy_matrix == whole.accuracy_matrix
    if name in ("derpp", "xder"):
        from forgetless.checkpoint import CHECKPOINT, load_checkpoint

        stored = load_checkpoint(tmp_path / "cut" / CHECKPOINT)["strategy"]["buffer_"]["extra"]["logits"]
        assert stored.shape == (60, 10) and stored.abs().sum() > 0


def test_derpp_beats_naive_in_class_il_split_digits():
    naive = run(RunConfig(**CLASS_IL)).metrics["average_accuracy"]
    derpp = run(RunConfig(**CLASS_IL, strategy="derpp", params={"memory": 200})).metrics["average_accuracy"]
    assert naive < 0.3 and derpp > naive + 0.3


# ---- LUCIR --------------------------------------------------------------------------------------
def test_lucir_margin_ranking_is_the_hinge_over_the_k_hardest_new_classes():
    from forgetless.strategies.lucir import margin_ranking

    g = torch.Generator().manual_seed(0)
    cos = torch.rand(12, 6, generator=g) * 2 - 1
    y = torch.tensor([0, 1, 2, 3, 4, 5] * 2)
    new = torch.tensor([4, 5])
    rows = y < 4  # the old-class examples
    got = margin_ranking(cos, y, new, 0.5, 1, rows)
    direct = sum(max(0.0, 0.5 - float(cos[i, y[i]]) + float(cos[i, new].max())) for i in range(12) if y[i] < 4) / 8
    assert float(got) == pytest.approx(direct, rel=1e-6) and direct > 0
    both = margin_ranking(cos, y, new, 0.5, 2, rows)
    direct2 = (
        sum(max(0.0, 0.5 - float(cos[i, y[i]]) + float(cos[i, k])) for i in range(12) if y[i] < 4 for k in (4, 5)) / 8
    )
    assert float(both) == pytest.approx(direct2, rel=1e-6)
    assert float(margin_ranking(cos, y, new, 0.5, 2, torch.zeros(12, dtype=torch.bool))) == 0.0


def test_lucir_loss_is_cosine_ce_plus_less_forget_plus_margin_ranking(bench):
    from forgetless.strategies.lucir import LUCIR

    ctx = context(bench, task_id=1, hidden=32)
    s = LUCIR(memory=40, lam_base=5.0)
    s.before_task(ctx, bench.tasks[1])  # snapshots the old model, imprints classes 2, 3
    with torch.no_grad():  # imprinted: the new classes' normalised feature means, at the old weights' mean norm
        W = ctx.model.net[-1].weight
        for c in (2, 3):
            phi = F.normalize(ctx.model.net[:-1](bench.tasks[1].train.x[bench.tasks[1].train.y == c]), dim=1)
            assert torch.allclose(W[c], F.normalize(phi.mean(0), dim=0) * W[:2].norm(dim=1).mean(), atol=1e-5)
    with torch.no_grad():
        for p in ctx.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)).to(p.device))
        s.sigma_.fill_(3.0)
    b = Batch(
        torch.cat([bench.tasks[0].train.x[:6], bench.tasks[1].train.x[:6]]),
        torch.cat([bench.tasks[0].train.y[:6], bench.tasks[1].train.y[:6]]),
        torch.tensor([0] * 6 + [1] * 6, device=bench.device),
    )
    loss = s.task_loss(ctx, b, ctx.model(b.x), None)

    def feats(model, x):  # the MLP's penultimate layer, directly
        return model.net[:-1](x)

    W = ctx.model.net[-1].weight
    f, f_old = feats(ctx.model, b.x), feats(s.old_model(ctx), b.x)
    cos = F.normalize(f, dim=1) @ F.normalize(W, dim=1).T
    ce = F.cross_entropy(3.0 * cos[:, :4], b.y)
    lf = (1 - (f * f_old).sum(1) / (f.norm(dim=1) * f_old.norm(dim=1))).mean()
    lam = 5.0 * (2 / 2) ** 0.5
    mr = torch.stack([(0.5 - cos[i, b.y[i]] + cos[i, [2, 3]]).clamp_min(0).sum() for i in range(6)]).mean()
    assert torch.allclose(loss, ce + lam * lf + mr, atol=1e-5)
    assert float(lf.detach()) > 1e-4 and float(mr.detach()) > 0  # every term is at work
    assert s.predict(ctx, b.x).shape == (12, 10)


def test_lucir_refuses_fp16_in_one_line(bench):
    from forgetless.strategies.lucir import LUCIR

    ctx = context(bench)
    ctx.precision = "fp16"
    with pytest.raises(UsageError, match="bf16 or float32") as e:
        LUCIR().before_task(ctx, bench.tasks[0])
    assert "\n" not in str(e.value)

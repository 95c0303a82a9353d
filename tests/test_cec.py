"""CEC (strategies/cec.py): the graph attention block and the prediction against direct
computations, meta-training on real base features, full FSCIL runs (reproducible, resumable), and
the inputs it refuses."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from forgetless.benchmarks import Benchmark, Task, build
from forgetless.config import RunConfig
from forgetless.data.base import TensorData
from forgetless.errors import UsageError
from forgetless.run import run
from forgetless.strategies import Context, make_strategy
from forgetless.strategies.cec import CEC, GraphAttention


def direct_attention(block: GraphAttention, x: torch.Tensor) -> torch.Tensor:
    """One set x [L, d] through the FEAT/CEC block, written out element by element."""
    L, d = x.shape
    q, k, v = x @ block.w_q.T, x @ block.w_k.T, x @ block.w_v.T
    out = torch.empty_like(x)
    for i in range(L):
        scores = torch.tensor([float(q[i] @ k[j]) / math.sqrt(d) for j in range(L)], dtype=x.dtype)
        weights = scores.exp() / scores.exp().sum()
        mixed = sum(weights[j] * v[j] for j in range(L))
        z = mixed @ block.w_o.T + block.b_o + x[i]  # output map, residual
        mean, var = z.mean(), ((z - z.mean()) ** 2).mean()
        out[i] = (z - mean) / torch.sqrt(var + block.norm.eps) * block.norm.weight + block.norm.bias
    return out


def random_block(d: int, seed: int = 0) -> GraphAttention:
    g = torch.Generator().manual_seed(seed)
    block = GraphAttention(d, 0.0, g)
    with torch.no_grad():  # a non-trivial output bias and layer norm, so that they are checked too
        block.b_o.copy_(torch.randn(d, generator=g))
        block.norm.weight.copy_(torch.rand(d, generator=g) + 0.5)
        block.norm.bias.copy_(torch.randn(d, generator=g))
    return block.eval()


def test_the_attention_block_equals_a_direct_computation():
    torch.manual_seed(0)
    block = random_block(5)
    x = torch.randn(4, 5, dtype=torch.float32)
    with torch.no_grad():
        got = block(x[None])[0]
        assert torch.allclose(got, direct_attention(block, x), atol=1e-5)
        # each query joining the prototypes' graph: the same as the set [p_1..p_n, q_b] through the block
        protos, queries = x[:3], torch.randn(6, 5)
        p, q = block.with_query(protos, queries)
        for b in range(6):
            whole = direct_attention(block, torch.cat([protos, queries[b : b + 1]]))
            assert torch.allclose(p[b], whole[:3], atol=1e-5) and torch.allclose(q[b], whole[3], atol=1e-5)
        assert not torch.allclose(p[0], p[1], atol=1e-3)  # the query changes the prototypes' graph
    # the weights are drawn from the generator only: same seed, same block; the global RNG untouched
    state = torch.get_rng_state()
    a, b = (GraphAttention(5, 0.0, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values()))


def _tiny(device):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 2, 2, generator=g)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4])
    tasks = [
        Task(0, "base", TensorData(x[:6], y[:6]), TensorData(x[:6], y[:6]), [0, 1]),
        Task(1, "s2", TensorData(x[6:10], y[6:10]), TensorData(x[6:10], y[6:10]), [2, 3]),
        Task(2, "s3", TensorData(x[10:], y[10:]), TensorData(x[10:], y[10:]), [4]),
    ]
    bench = Benchmark("tiny", "class", tasks, 5, (1, 2, 2)).to(device)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 5)).to(device)
    ctx = Context(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), benchmark=bench, device=device)
    return x, y, tasks, model, ctx


@pytest.mark.parametrize("query_node", [True, False])
def test_predict_is_the_scaled_cosine_to_the_adapted_prototypes(device, query_node):
    x, y, tasks, model, ctx = _tiny(device)
    s = make_strategy(
        "cec",
        dict(episodes=3, episode_shots=1, episode_queries=1, temperature=7.0, query_node=query_node),
        scenario="class",
    )
    assert s.train_data(ctx, tasks[0]) is not None and s.train_data(ctx, tasks[1]) is None
    for task in tasks[:2]:
        s.before_task(ctx, task)
        s.after_task(ctx, task)
    assert len(s.meta_losses_) == 3  # meta-trained once, after the base session only

    query = torch.rand(7, 1, 2, 2, generator=torch.Generator().manual_seed(1)).to(device)
    block = s.attn.cpu()
    with torch.no_grad():
        phi = lambda v: torch.sigmoid(model[1](v.flatten(1))).cpu()  # noqa: E731
        feats, yy = phi(x[:10].to(device)), y[:10]
        protos = torch.stack([feats[yy == c].mean(0) for c in range(4)])  # raw means, as CEC's code
        q = phi(query)
        direct = torch.empty(7, 4)
        for b in range(7):
            if query_node:
                both = direct_attention(block, torch.cat([protos, q[b : b + 1]]))
                adapted, qb = both[:4], both[4]
            else:
                adapted, qb = direct_attention(block, protos), q[b]
            direct[b] = 7.0 * (adapted @ qb) / (adapted.norm(dim=1) * qb.norm())
        s.attn.to(device)
        scores = s.predict(ctx, query).cpu()
    assert torch.allclose(scores[:, :4], direct, atol=1e-4)
    assert torch.isinf(scores[:, 4]).all() and (scores[:, 4] < 0).all()  # class 4 not seen yet
    s.before_task(ctx, tasks[2])
    s.after_task(ctx, tasks[2])
    assert torch.isfinite(s.predict(ctx, query)).all() and len(s.meta_losses_) == 3


def _base_features(device):
    """A small MLP trained on the 5 base classes of split-digits, and the base training images'
    features at 0/90/180/270 degrees."""
    from forgetless.strategies.icarl import features

    torch.set_num_threads(1)
    cfg = RunConfig(
        benchmark="split-digits",
        scenario="fscil",
        base_classes=5,
        ways=1,
        shots=5,
        sessions=1,
        epochs=5,
        model="mlp:128,64",
        device=str(device),
        strategy="prototype",
    )
    from forgetless.models import build_model

    bench = build("split-digits", scenario="fscil", base_classes=5, ways=1, shots=5, sessions=1).to(device)
    torch.manual_seed(0)
    model = build_model("mlp:128,64", bench.input_shape, bench.n_outputs).to(device)
    run(cfg, model=model, benchmark=bench)
    data = bench.tasks[0].train
    rotated = torch.stack([features(model, torch.rot90(data.x, k, dims=(2, 3))).float() for k in range(4)])
    return rotated, data.y, bench.tasks[0].classes


def test_meta_training_lowers_the_episode_loss_on_real_base_features(device):
    rotated, y, classes = _base_features(device)
    s = CEC(episodes=300)
    s.attn = GraphAttention(rotated.shape[2], 0.0, torch.Generator().manual_seed(0)).to(device)
    g = torch.Generator().manual_seed(123)
    held_out = [s.sample_episode(y, classes, g) for _ in range(40)]

    def loss():
        s.attn.eval()
        with torch.no_grad():
            return sum(float(s.episode_loss(rotated, r, a)) for r, a in held_out) / len(held_out)

    rows, angles = held_out[0]
    assert rows.shape == (5, 16) and set(angles.tolist()) <= {1, 2, 3}
    assert all(set(y[r].tolist()) == {c} for r, c in zip(rows, [int(y[r[0]]) for r in rows]))
    before = loss()
    s.meta_train(rotated, y, classes, torch.Generator().manual_seed(0))
    after = loss()
    print("held-out episode loss", before, "->", after)
    assert len(s.meta_losses_) == 300
    assert after < 0.85 * before, (before, after)


FSCIL = dict(
    benchmark="split-digits",
    scenario="fscil",
    base_classes=5,
    ways=1,
    shots=5,
    sessions=4,
    epochs=5,
    model="mlp:128,64",
)


def test_a_cec_fscil_run_is_sane_reproducible_and_resumes_to_the_same_result(tmp_path, device):
    torch.set_num_threads(1)
    cfg = RunConfig(strategy="cec", params={"episodes": 200}, device=str(device), **FSCIL)
    a = run(cfg)
    b = run(cfg)
    proto = run(RunConfig(strategy="prototype", device=str(device), **FSCIL)).metrics
    m = a.metrics
    print("cec", m["session_accuracy"], "prototype", proto["session_accuracy"])
    assert len(m["session_accuracy"]) == 4 and b.metrics == m and b.accuracy_matrix == a.accuracy_matrix
    assert abs(m["session_accuracy"][0] - proto["session_accuracy"][0]) < 0.05  # the same backbone
    assert m["session_accuracy"][-1] > 0.6 and m["novel_accuracy"] > 0.3  # the new classes are learnt
    other = run(RunConfig(strategy="cec", params={"episodes": 200}, device=str(device), seed=1, **FSCIL))
    assert other.accuracy_matrix != a.accuracy_matrix

    class Stop(Exception):
        pass

    class Interrupted(CEC):
        stop_at = 2

        def before_task(self, ctx, task):
            if task.id == self.stop_at:
                raise Stop
            super().before_task(ctx, task)

    full = run(cfg, strategy=CEC(episodes=200), out=tmp_path / "full")
    assert full.accuracy_matrix == a.accuracy_matrix
    with pytest.raises(Stop):
        run(cfg, strategy=Interrupted(episodes=200), out=tmp_path / "cut")
    again = Interrupted(episodes=200)
    again.stop_at = None
    resumed = run(cfg, strategy=again, out=tmp_path / "cut", resume=True)
    assert resumed.accuracy_matrix == a.accuracy_matrix
    assert again.attn is not None and len(again.meta_losses_) == 200  # from the checkpoint, not retrained


def _bench(x, y, shape):
    tasks = [Task(0, "base", TensorData(x, y), TensorData(x, y), [0, 1])]
    return Benchmark("odd", "class", tasks, 2, shape)


def test_inputs_it_cannot_rotate_and_bad_parameters_are_one_line_errors():
    y = torch.tensor([0, 1] * 20)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 2))
    for x, shape in ((torch.rand(40, 1, 2, 3), (1, 2, 3)), (torch.rand(40, 6), (6,))):
        bench = _bench(x, y, shape)
        ctx = Context(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), benchmark=bench)
        with pytest.raises(UsageError, match="square images") as e:
            CEC().before_task(ctx, bench.tasks[0])
        assert "\n" not in str(e.value)
    bench = _bench(torch.rand(40, 1, 2, 2), y, (1, 2, 2))
    ctx = Context(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), benchmark=bench)
    with pytest.raises(UsageError, match="fewer than episode_shots") as e:
        CEC(episode_shots=10, episode_queries=15).before_task(ctx, bench.tasks[0])
    assert "\n" not in str(e.value)
    CEC(episode_shots=5, episode_queries=15).before_task(ctx, bench.tasks[0])  # 20 examples a class: enough
    with pytest.raises(UsageError, match=r"class-incremental|supports: class"):
        make_strategy("cec", scenario="domain")
    for bad in ({"temperature": 0}, {"dropout": 1.0}, {"episode_ways": 0}, {"shots": 5}):
        with pytest.raises(UsageError) as e:
            make_strategy("cec", bad)
        assert "\n" not in str(e.value)

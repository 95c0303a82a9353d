"""Few-shot class-incremental learning: the fscil scenario, its metrics and the prototype baseline."""

from __future__ import annotations

import pytest
import torch

from forgetless.benchmarks import build
from forgetless.data import load_dataset
from forgetless.errors import UsageError


def fscil(**kw):
    args = dict(scenario="fscil", base_classes=6, ways=1, shots=5, progress=False)
    args.update(kw)
    return build(kw.pop("name", "split-digits"), **{k: v for k, v in args.items() if k != "name"})


def test_sessions_have_exactly_k_training_examples_of_each_new_class_drawn_from_the_training_split():
    b = fscil(ways=2, shots=3, base_classes=4)
    info = b.info["fscil"]
    assert info["sessions"] == 4 and len(b.tasks) == 4 and b.scenario == "class"
    train, test = load_dataset("digits")
    base = b.tasks[0]
    assert base.classes == [0, 1, 2, 3]
    assert len(base.train) == int(torch.isin(train.y, torch.tensor([0, 1, 2, 3])).sum())
    for s, task in enumerate(b.tasks[1:], start=1):
        assert task.classes == [4 + 2 * (s - 1), 5 + 2 * (s - 1)]
        counts = torch.bincount(task.train.y, minlength=10)
        assert counts[task.classes].tolist() == [3, 3] and int(counts.sum()) == 6
        rows = torch.tensor([i for c in task.classes for i in info["shot_indices"][str(c)]])
        assert torch.equal(task.train.raw, train.raw[rows])  # the recorded rows of the training split
        assert torch.equal(train.y[rows], task.train.y)
        # the test data of a session is every test example of its classes
        assert len(task.test) == int(torch.isin(test.y, torch.tensor(task.classes)).sum())


def test_the_shots_are_reproducible_and_depend_on_the_seed():
    a, b, c = fscil(seed=3), fscil(seed=3), fscil(seed=4)
    assert a.info["fscil"]["shot_indices"] == b.info["fscil"]["shot_indices"]
    assert a.info["fscil"]["shot_indices"] != c.info["fscil"]["shot_indices"]
    assert torch.equal(a.tasks[2].train.raw, b.tasks[2].train.raw)


def test_class_order_and_session_count():
    b = fscil(classes="9,8,7,6,5,4,3,2,1,0", base_classes=5, ways=2, sessions=2)
    assert b.tasks[0].classes == [9, 8, 7, 6, 5] and b.tasks[1].classes == [4, 3] and len(b.tasks) == 2


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(base_classes=10), "leaves none"),
        (dict(base_classes=9, ways=2), "too few"),
        (dict(sessions=6), "at most 5 sessions"),
        (dict(shots=0), "--shots must be"),
        (dict(ways=None), "needs --ways"),
        (dict(shots=500), "fewer than --shots"),
        (dict(tasks=3), "use --sessions"),
        (dict(name="permuted-digits"), "split benchmarks only"),
    ],
)
def test_impossible_combinations_are_one_line_errors(kw, words):
    with pytest.raises(UsageError, match=words) as e:
        fscil(**kw)
    assert "\n" not in str(e.value)


def test_fscil_options_need_the_scenario():
    with pytest.raises(UsageError, match="fscil only"):
        build("split-digits", scenario="class", shots=5, progress=False)


def test_a_naive_fscil_run_records_the_protocol_and_its_shots(tmp_path, device):
    from forgetless.config import RunConfig
    from forgetless.run import run

    torch.set_num_threads(1)
    cfg = RunConfig(
        benchmark="split-digits",
        scenario="fscil",
        base_classes=6,
        ways=2,
        shots=5,
        epochs=1,
        model="mlp:64",
        device=str(device),
    )
    r = run(cfg, out=tmp_path / "run")
    import json

    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["config"]["scenario"] == "fscil" and saved["config"]["sessions"] == 3
    assert (
        saved["benchmark"]["fscil"]["shot_indices"]
        == build("split-digits", scenario="fscil", base_classes=6, ways=2, shots=5, progress=False).info["fscil"][
            "shot_indices"
        ]
    )
    assert [t["train"] for t in saved["benchmark"]["tasks"][1:]] == [10, 10]
    assert len(r.accuracy_matrix) == 3
    from forgetless import metrics as M

    sizes = [t["test"] for t in saved["benchmark"]["tasks"]]
    assert saved["metrics"]["session_accuracy"] == pytest.approx(M.session_accuracy(r.accuracy_matrix, sizes))
    assert {"avg", "pd", "base_accuracy", "novel_accuracy", "harmonic_mean"} <= set(saved["metrics"])
    # resuming from the recorded config is the same run (its tasks equal its sessions)
    again = run(RunConfig.from_dict(saved["config"]), out=tmp_path / "run", resume=True)
    assert again.accuracy_matrix == r.accuracy_matrix


def test_fscil_metrics_on_literal_numbers():
    from forgetless import metrics as M

    # 3 sessions, test sizes 100 (base), 10, 30; rows: after each session (entries beyond it ignored)
    R = [[0.9, 0.0, 0.0], [0.8, 0.5, 0.0], [0.7, 0.4, 0.2]]
    n = [100, 10, 30]
    S = M.session_accuracy(R, n)
    assert pytest.approx([0.9, (80 + 5) / 110, (70 + 4 + 6) / 140]) == S
    m = M.fscil_metrics(R, n)
    assert m["avg"] == pytest.approx((0.9 + 85 / 110 + 80 / 140) / 3)
    assert m["pd"] == pytest.approx(0.9 - 80 / 140)
    assert m["base_accuracy"] == 0.7 and m["novel_accuracy"] == pytest.approx(10 / 40)
    assert m["harmonic_mean"] == pytest.approx(2 * 0.7 * 0.25 / 0.95)
    assert R == [[0.9, 0.0, 0.0], [0.8, 0.5, 0.0], [0.7, 0.4, 0.2]]  # inputs untouched
    # the pooled accuracy is not the unweighted mean of the tasks' accuracies
    assert S[2] != pytest.approx((0.7 + 0.4 + 0.2) / 3)
    one = M.fscil_metrics([[0.6]], [5])
    assert one["session_accuracy"] == [0.6] and one["pd"] == 0 and one["novel_accuracy"] is None
    with pytest.raises(ValueError):
        M.session_accuracy(R, [100, 10])


def test_the_prototype_classifier_is_cosine_nearest_mean(device):
    """A tiny linear 'backbone': features = the input of the last nn.Linear; check against a direct
    cosine nearest-mean computation, unseen classes -inf, no training after the base session."""
    from torch import nn

    from forgetless.benchmarks import Benchmark, Task
    from forgetless.data.base import TensorData
    from forgetless.strategies import Context, make_strategy

    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 2, 2, generator=g)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4])
    tasks = [
        Task(0, "base", TensorData(x[:6], y[:6]), TensorData(x[:6], y[:6]), [0, 1]),
        Task(1, "s2", TensorData(x[6:10], y[6:10]), TensorData(x[6:10], y[6:10]), [2, 3]),
        Task(2, "s3", TensorData(x[10:], y[10:]), TensorData(x[10:], y[10:]), [4]),
    ]
    bench = Benchmark("tiny", "class", tasks, 5, (1, 2, 2)).to(device)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 5)).to(device)
    ctx = Context(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), benchmark=bench, device=device)
    s = make_strategy("prototype", scenario="class")
    assert s.train_data(ctx, tasks[0]) is not None and s.train_data(ctx, tasks[1]) is None
    for task in tasks[:2]:
        s.before_task(ctx, task)
        s.after_task(ctx, task)

    query = torch.rand(7, 1, 2, 2, generator=g).to(device)
    with torch.no_grad():
        phi = lambda v: torch.relu(model[1](v.flatten(1)))  # noqa: E731
        feats, yy = phi(x[:10].to(device)), y[:10].to(device)
        means = torch.stack([(feats[yy == c] / feats[yy == c].norm(dim=1, keepdim=True)).mean(0) for c in range(4)])
        q = phi(query)
        direct = (q @ means.T) / (q.norm(dim=1, keepdim=True) * means.norm(dim=1)[None, :])
        scores = s.predict(ctx, query)
    assert torch.allclose(scores[:, :4], direct, atol=1e-5)
    assert torch.isinf(scores[:, 4]).all() and (scores[:, 4] < 0).all()  # class 4 not seen yet
    assert torch.equal(scores.argmax(1), direct.argmax(1))
    s.before_task(ctx, tasks[2])
    s.after_task(ctx, tasks[2])
    assert torch.isfinite(s.predict(ctx, query)).all()


def test_prototype_beats_naive_after_the_last_session_on_fscil_digits(device):
    from forgetless.config import RunConfig
    from forgetless.run import run

    torch.set_num_threads(1)
    common = dict(
        benchmark="split-digits",
        scenario="fscil",
        base_classes=5,
        ways=1,
        shots=5,
        epochs=5,
        model="mlp:128,64",
        device=str(device),
    )
    naive = run(RunConfig(strategy="naive", **common)).metrics
    proto = run(RunConfig(strategy="prototype", **common)).metrics
    print("naive", naive["session_accuracy"], "prototype", proto["session_accuracy"])
    assert abs(naive["session_accuracy"][0] - proto["session_accuracy"][0]) < 0.05  # same backbone, other head
    assert proto["session_accuracy"][-1] > naive["session_accuracy"][-1] + 0.2
    assert proto["base_accuracy"] > 0.8 > naive["base_accuracy"]


def _write_lists(folder, y, base, sessions, ways, shots, seed=0):
    """session_k.txt files in the CIFAR-100 format: every training row of the base classes, then
    ``shots`` rows of each of ``ways`` new classes per session."""
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir()
    (folder / "session_1.txt").write_text("".join(f"{i}\n" for i in np.flatnonzero(np.isin(y, range(base)))))
    picked = {}
    for k in range(2, sessions + 1):
        rows = []
        for c in range(base + (k - 2) * ways, base + (k - 1) * ways):
            picked[c] = sorted(rng.choice(np.flatnonzero(y == c), shots, replace=False).tolist())
            rows += picked[c]
        (folder / f"session_{k}.txt").write_text("".join(f"{i}\n" for i in rows))
    return picked


def test_the_standard_session_lists_on_a_cifar100_format_archive(tmp_path, device):
    """The CIFAR-100 protocol's code path (60 base classes + 8 sessions of 5-way 5-shot) on an
    archive in CIFAR-100's binary format built from real images (tests/cifar_archives.py)."""
    from cifar_archives import cifar100_archive

    from forgetless.config import RunConfig
    from forgetless.run import run

    torch.set_num_threads(1)
    data = cifar100_archive(tmp_path, train_per_class=8, test_per_class=3)
    train, _ = load_dataset("cifar100", data_dir=str(data), download=False, progress=False)
    picked = _write_lists(tmp_path / "lists", train.y.numpy(), 60, 9, 5, 5)
    b = build(
        "split-cifar100",
        scenario="fscil",
        session_lists=str(tmp_path / "lists"),
        data_dir=str(data),
        download=False,
        progress=False,
    )
    info = b.info["fscil"]
    assert (info["base_classes"], info["ways"], info["shots"], info["sessions"]) == (60, 5, 5, 9)
    assert b.tasks[0].classes == list(range(60)) and len(b.tasks[0].train) == 60 * 8
    assert b.tasks[8].classes == [95, 96, 97, 98, 99] and len(b.tasks[8].test) == 5 * 3
    assert info["shot_indices"] == {str(c): rows for c, rows in picked.items()}
    rows = torch.tensor([i for c in (60, 61, 62, 63, 64) for i in picked[c]])
    assert torch.equal(b.tasks[1].train.raw, train.raw[rows])
    with pytest.raises(UsageError, match="disagrees"):
        build(
            "split-cifar100",
            scenario="fscil",
            session_lists=str(tmp_path / "lists"),
            shots=1,
            data_dir=str(data),
            download=False,
            progress=False,
        )
    (tmp_path / "bad").mkdir()
    with pytest.raises(UsageError, match=r"no session_1.txt"):
        build(
            "split-cifar100",
            scenario="fscil",
            session_lists=str(tmp_path / "bad"),
            data_dir=str(data),
            download=False,
            progress=False,
        )
    r = run(
        RunConfig(
            benchmark="split-cifar100",
            scenario="fscil",
            session_lists=str(tmp_path / "lists"),
            sessions=3,
            data_dir=str(data),
            download=False,
            strategy="prototype",
            epochs=1,
            model="mlp:64",
            device=str(device),
        )
    )
    assert len(r.metrics["session_accuracy"]) == 3 and r.config["sessions"] == 3

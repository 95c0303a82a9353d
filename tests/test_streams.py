"""Streams where the boundaries blur (issue 15): --online, --task-free, i-Blurry streams, A_AUC."""

from __future__ import annotations

import math

import pytest
import torch

import forgetless as fl
from forgetless.benchmarks import build
from forgetless.metrics import anytime_accuracy
from forgetless.strategies import Strategy

BASE = dict(benchmark="split-digits", scenario="class", model="mlp:64", batch_size=10, seed=0)


def test_anytime_accuracy_on_literal_numbers():
    points = [(0, [0.9, 0.1, 0.0]), (0, [1.0, 0.0, 0.0]), (1, [0.6, 0.8, 0.0]), (2, [0.3, 0.6, 0.9])]
    assert anytime_accuracy(points) == pytest.approx((0.9 + 1.0 + 0.7 + 0.6) / 4)
    assert anytime_accuracy([]) is None
    with pytest.raises(ValueError):
        anytime_accuracy([(3, [0.5, 0.5])])


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(online=True, iterations=5), "drop --iterations"),
        (dict(task_free=True, reset_optimizer=True), "drop --reset-optimizer"),
        (dict(blurry=100.0), "percentage"),
        (dict(blurry=-1.0), "percentage"),
        (dict(blurry_disjoint=30.0), "give --blurry"),
    ],
)
def test_bad_stream_options_are_one_line_errors(kw, words):
    with pytest.raises(fl.UsageError, match=words) as e:
        fl.RunConfig(**{**BASE, **kw}).resolved()
    assert "\n" not in str(e.value)


def test_online_is_one_pass_evaluated_about_every_thousand_samples():
    c = fl.RunConfig(**BASE, online=True, epochs=5).resolved()
    assert c.epochs == 1 and c.eval_every == 100  # 1000 samples / batch 10
    assert fl.RunConfig(**BASE, online=True, eval_every=7).resolved().eval_every == 7
    assert "online" in fl.RunConfig(**BASE, online=True).resolved().stamp()
    # the options' defaults keep the names (and hashes) of runs made before they existed
    assert fl.RunConfig(**BASE).stamp() == fl.RunConfig(**BASE, online=False, blurry=0.0).stamp()


def test_a_blurry_stream_moves_m_percent_of_each_blurry_class_and_keeps_disjoint_classes_home():
    plain = build("split-digits", scenario="class", progress=False)
    b = build("split-digits", scenario="class", blurry=10, blurry_disjoint=50, seed=3, progress=False)
    info = b.info["blurry"]
    disjoint = set(info["disjoint_classes"])
    assert len(disjoint) == 5 and info["m"] == 10 and info["n"] == 50
    assert sum(len(t.train) for t in b.tasks) == sum(len(t.train) for t in plain.tasks)
    for task, before in zip(b.tasks, plain.tasks):
        assert torch.equal(task.test.y, before.test.y)  # test data stays with its task
        y = task.train.y
        for c in before.classes:
            n_c = int((before.train.y == c).sum())
            home = int((y == c).sum())
            assert home == (n_c if c in disjoint else n_c - round(0.1 * n_c))
        foreign = [int(c) for c in y.unique() if int(c) not in before.classes]
        assert foreign and not set(foreign) & disjoint  # other tasks' blurry classes, never disjoint ones
        assert info["samples_from_other_tasks"][task.id] == int((~torch.isin(y, torch.tensor(before.classes))).sum())
    again = build("split-digits", scenario="class", blurry=10, blurry_disjoint=50, seed=3, progress=False)
    other = build("split-digits", scenario="class", blurry=10, blurry_disjoint=50, seed=4, progress=False)
    assert all(torch.equal(a.train.raw, c.train.raw) for a, c in zip(b.tasks, again.tasks))
    assert any(not torch.equal(a.train.y, c.train.y) for a, c in zip(b.tasks, other.tasks))


@pytest.mark.parametrize(
    "kw, words",
    [(dict(name="permuted-digits", scenario="domain"), "split benchmarks"), (dict(scenario="task"), "class-IL")],
)
def test_blurry_needs_a_class_il_split(kw, words):
    with pytest.raises(fl.UsageError, match=words):
        build(kw.pop("name", "split-digits"), blurry=10, progress=False, **kw)


class Spy(Strategy):
    name = "spy"
    task_free = True

    def __init__(self):
        super().__init__()
        self.calls = []

    def before_task(self, ctx, task):
        self.calls.append(("before", task.id))

    def after_task(self, ctx, task):
        self.calls.append(("after", task.id))


def test_task_free_strategies_hear_only_the_stream_start_and_end(one_thread):
    told = Spy()
    fl.run(fl.RunConfig(**BASE, epochs=1), strategy=told)
    assert told.calls == [(k, t) for t in range(5) for k in ("before", "after")]
    spy = Spy()
    r = fl.run(fl.RunConfig(**BASE, epochs=1, task_free=True), strategy=spy)
    assert spy.calls == [("before", 0), ("after", 4)]
    assert len(r.accuracy_matrix) == 5  # the library still evaluates at every task end


@pytest.mark.parametrize(
    "spec, params", [("ewc", {}), ("er", {"sampling": "balanced"}), ("er+ewc", {}), ("icarl", {}), ("xder", {})]
)
def test_strategies_that_need_boundaries_refuse_task_free(spec, params):
    with pytest.raises(fl.UsageError, match="cannot run with --task-free") as e:
        fl.run(fl.RunConfig(**BASE, strategy=spec, params=params, task_free=True))
    assert "er, " in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["er", "der", "derpp", "er-ace", "mir", "gdumb"])
def test_online_task_free_blurry_runs_of_the_stream_methods(name, one_thread):
    """One pass, batch 10, no boundaries, i-Blurry-50-10: every stream method runs, is evaluated
    during the stream (A_AUC from those evaluations) and beats naive's final accuracy."""
    cfg = fl.RunConfig(
        **BASE, lr=0.01, strategy=name, params={"memory": 200}, online=True, task_free=True, blurry=10.0, eval_every=40
    )
    r = fl.run(cfg)
    naive = fl.run(fl.RunConfig(**{**cfg.to_dict(), "strategy": "naive", "params": {}}))
    steps = sum(p["steps"] for p in r.timing["per_task"])
    assert steps == sum(math.ceil(t["train"] / 10) for t in r.benchmark["tasks"])  # one pass
    assert len(r.curves) == steps // 40
    assert r.metrics["anytime_accuracy"] == pytest.approx(
        anytime_accuracy([(p["task"], p["accuracy"]) for p in r.curves])
    )
    assert r.benchmark["blurry"]["m"] == 10.0
    # (measured: naive 0.17; der 0.27, derpp 0.80, er 0.81, er-ace 0.88, mir 0.90, gdumb 0.91)
    assert r.metrics["average_accuracy"] > naive.metrics["average_accuracy"] + 0.05


def test_a_blurry_stream_trains_later_classes_early_and_resumes_identically(tmp_path, one_thread):
    class CrashAt2(type(fl.strategies.make_strategy("er", {"memory": 100}))):
        crash = False

        def adapt_batch(self, ctx, batch):
            if ctx.task_id == 2 and CrashAt2.crash:
                raise KeyboardInterrupt
            return super().adapt_batch(ctx, batch)

    cfg = fl.RunConfig(**BASE, epochs=1, lr=0.01, blurry=20.0, blurry_disjoint=0.0)
    full = fl.run(cfg, strategy=CrashAt2(memory=100))
    # during task 1 the classes of tasks 2..5 were trained on (their blurry samples; with a task-index
    # mask their targets would be masked out and the loss infinite), so they are predicted already
    # (measured: 0.25, 0.0, 0.25, 0.13 on tasks 2..5 after task 1)
    assert sum(full.accuracy_matrix[0][1:]) > 0.2
    CrashAt2.crash = True
    with pytest.raises(KeyboardInterrupt):
        fl.run(cfg, strategy=CrashAt2(memory=100), out=tmp_path / "cut")
    CrashAt2.crash = False
    resumed = fl.run(cfg, strategy=CrashAt2(memory=100), out=tmp_path / "cut", resume=True)
    assert resumed.accuracy_matrix == full.accuracy_matrix


def test_the_cli_runs_an_online_task_free_blurry_stream(tmp_path, capsys, one_thread):
    from forgetless.cli import main

    code = main(
        [
            "run",
            "--benchmark",
            "split-digits",
            "--strategy",
            "er",
            "--param",
            "memory=100",
            "--online",
            "--task-free",
            "--blurry",
            "10",
            "--batch-size",
            "10",
            "--model",
            "mlp:32",
            "--quiet",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 0
    import json

    saved = json.loads((tmp_path / "r" / "result.json").read_text())
    assert saved["config"]["online"] and saved["config"]["task_free"] and saved["config"]["blurry"] == 10.0
    assert saved["metrics"]["anytime_accuracy"] is not None

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
    assert base.classes == [0, 1, 2, 3] and len(base.train) == int(torch.isin(train.y, torch.tensor([0, 1, 2, 3])).sum())
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


@pytest.mark.parametrize("kw, words", [
    (dict(base_classes=10), "leaves none"),
    (dict(base_classes=9, ways=2), "too few"),
    (dict(sessions=6), "at most 5 sessions"),
    (dict(shots=0), "--shots must be"),
    (dict(ways=None), "needs --ways"),
    (dict(shots=500), "fewer than --shots"),
    (dict(tasks=3), "use --sessions"),
    (dict(name="permuted-digits"), "split benchmarks only"),
])
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
    cfg = RunConfig(benchmark="split-digits", scenario="fscil", base_classes=6, ways=2, shots=5, epochs=1,
                    model="mlp:64", device=str(device))
    r = run(cfg, out=tmp_path / "run")
    import json
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["config"]["scenario"] == "fscil" and saved["config"]["sessions"] == 3
    assert saved["benchmark"]["fscil"]["shot_indices"] == build(
        "split-digits", scenario="fscil", base_classes=6, ways=2, shots=5, progress=False).info["fscil"]["shot_indices"]
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
    R = [[0.9, 0.0, 0.0],
         [0.8, 0.5, 0.0],
         [0.7, 0.4, 0.2]]
    n = [100, 10, 30]
    S = M.session_accuracy(R, n)
    assert S == pytest.approx([0.9, (80 + 5) / 110, (70 + 4 + 6) / 140])
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

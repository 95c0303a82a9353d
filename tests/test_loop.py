import pytest
import torch
from torch import nn

import forgetless as fl
from forgetless import RunConfig, Strategy, run


def small(**kw):
    base = dict(benchmark="permuted-digits", tasks=3, model="mlp:64", epochs=1, batch_size=64)
    base.update(kw)
    return RunConfig(**base)


def test_split_mnist_class_incremental_naive_forgets_and_joint_does_not(mnist_dir):
    cfg = dict(benchmark="split-mnist", scenario="class", data_dir=str(mnist_dir), epochs=2)
    naive = run(RunConfig(strategy="naive", **cfg))
    R = naive.accuracy_matrix
    assert len(R) == 5 and all(len(r) == 5 for r in R)
    assert all(R[i][i] > 0.9 for i in range(5)), R
    assert naive.metrics["average_accuracy"] < 0.35
    assert naive.metrics["bwt"] < -0.5
    joint = run(RunConfig(strategy="joint", **cfg))
    assert joint.metrics["average_accuracy"] > 0.9


def test_same_seed_same_matrix_other_seed_differs():
    a, b = run(small(seed=3)), run(small(seed=3))
    assert a.accuracy_matrix == b.accuracy_matrix and a.initial_accuracy == b.initial_accuracy
    c = run(small(seed=4))
    assert c.accuracy_matrix != a.accuracy_matrix


def test_cumulative_trains_on_everything_seen_so_far():
    r = run(small(strategy="cumulative"))
    samples = [p["samples"] for p in r.timing["per_task"]]
    n = 1437  # digits' training set, every task the same size
    assert samples == [n, 2 * n, 3 * n]
    j = run(small(strategy="joint"))
    assert [p["samples"] for p in j.timing["per_task"]] == [3 * n, 0, 0]
    assert j.accuracy_matrix[0] == j.accuracy_matrix[2]


class Recorder(Strategy):
    name = "recorder"

    def __init__(self):
        super().__init__()
        self.calls = []

    def before_task(self, ctx, task):
        self.calls.append(("before_task", task.id))

    def adapt_batch(self, ctx, batch):
        self.calls.append("adapt_batch")
        return batch

    def task_loss(self, ctx, batch, out, loss):
        self.calls.append("task_loss")
        assert loss.dim() == 0 and loss.requires_grad
        return loss

    def penalty(self, ctx, batch, out):
        self.calls.append("penalty")
        assert out.shape == (len(batch.x), ctx.benchmark.n_outputs) and len(batch.t) == len(batch.y)
        return None

    def after_backward(self, ctx):
        self.calls.append("after_backward")
        assert all(p.grad is not None for p in ctx.params())

    def after_step(self, ctx, batch):
        self.calls.append("after_step")

    def after_task(self, ctx, task):
        self.calls.append(("after_task", task.id))

    def predict(self, ctx, x):
        self.calls.append("predict")
        return ctx.model(x)


def test_hooks_run_in_order_with_iterations():
    s = Recorder()
    r = run(small(iterations=3), strategy=s)
    assert [p["steps"] for p in r.timing["per_task"]] == [3, 3, 3]
    first_task = s.calls[s.calls.index(("before_task", 0)) : s.calls.index(("after_task", 0)) + 1]
    step = ["adapt_batch", "task_loss", "penalty", "after_backward", "after_step"]
    assert first_task == [("before_task", 0)] + step * 3 + [("after_task", 0)]
    assert "predict" in s.calls


def test_iterations_run_past_one_epoch():
    r = run(small(iterations=30, batch_size=128, tasks=1))  # 1437 samples: 12 batches an epoch
    assert r.timing["per_task"][0]["steps"] == 30


def test_eval_every_records_curves():
    r = run(small(eval_every=5, iterations=10))
    assert [c["step"] for c in r.curves] == [5, 10, 15, 20, 25, 30]
    assert all(len(c["accuracy"]) == 3 for c in r.curves)
    assert r.curves[-1]["accuracy"] == r.accuracy_matrix[-1]


def test_task_incremental_evaluates_only_the_tasks_classes():
    r = run(small(benchmark="split-digits", scenario="task", tasks=5, epochs=5, batch_size=32))
    # chance is 50 % per task in task-IL; a trained model is far above it on every learnt task
    assert all(r.accuracy_matrix[i][i] > 0.9 for i in range(5))
    assert all(0.2 < v < 0.8 for v in r.initial_accuracy)


def test_any_module_returning_logits_works(device):
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))

    model = Tiny()  # made on the CPU, as a user makes it
    r = run(small(scenario="domain", epochs=5, lr=0.01), model=model)
    assert r.accuracy_matrix[0][0] > 0.5
    assert r.config["model"] == "custom:Tiny"
    assert model.fc.weight.device == device  # the run trained it on the run's device


def test_model_that_does_not_fit_is_refused():
    with pytest.raises(fl.UsageError, match="does not accept the benchmark's input"):
        run(small(), model=nn.Linear(10, 10))
    with pytest.raises(fl.UsageError, match=r"logits of shape \[N, 10\]"):
        run(small(scenario="domain"), model=nn.Sequential(nn.Flatten(), nn.Linear(64, 7)))


def test_cnn_trains():
    r = run(small(model="cnn", tasks=2, epochs=2))
    assert r.accuracy_matrix[0][0] > 0.7


def test_diverging_training_stops_with_a_clear_message():
    with pytest.raises(fl.UsageError, match=r"task 1, epoch 1, step \d+: lower the learning rate"):
        run(small(optimizer="sgd", lr=1e20))


def test_optimizer_reset_changes_the_run():
    a, b = run(small()), run(small(reset_optimizer=True))
    assert a.accuracy_matrix[0] == b.accuracy_matrix[0]  # the first task is the same
    assert a.accuracy_matrix[2] != b.accuracy_matrix[2]


def test_result_records_everything(tmp_path):
    r = run(small())
    d = r.to_dict()
    assert set(d["config"]) >= {"benchmark", "scenario", "tasks", "strategy", "params", "seed", "lr", "model"}
    assert d["config"]["scenario"] == "domain" and d["config"]["tasks"] == 3
    assert d["timing"]["total_seconds"] >= d["timing"]["train_seconds"] > 0
    assert d["versions"]["torch"] == torch.__version__
    path = fl.save_result(r, tmp_path / "out")
    import json

    assert json.loads(path.read_text())["accuracy_matrix"] == r.accuracy_matrix


def test_logs_per_step_loss_and_accuracies_to_csv(tmp_path):
    r = run(small(eval_every=10, iterations=20), out=tmp_path)
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert log[0] == "step,task,epoch,loss" and len(log) == 1 + 60
    assert [int(row.split(",")[0]) for row in log[1:]] == list(range(1, 61))
    acc = (tmp_path / "accuracy.csv").read_text().splitlines()
    # every 10 steps (6 points) plus once after each task (3), each with 3 tasks
    assert len(acc) == 1 + (6 + 3) * 3
    last = [float(row.split(",")[3]) for row in acc[-3:]]
    assert last == pytest.approx(r.accuracy_matrix[-1], abs=1e-6)


def test_tensorboard_events_can_be_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(small(iterations=5, tasks=2), out=tmp_path)
    ev = EventAccumulator(str(tmp_path / "tensorboard"))
    ev.Reload()
    assert [e.step for e in ev.Scalars("loss")] == list(range(1, 11))
    assert len(ev.Scalars("accuracy/task_1")) == 2


def test_bf16_autocast_trains_in_bfloat16_and_learns(monkeypatch):
    """--precision bf16: the forward pass runs in bfloat16 (seen by a hook), accuracy stays close to float32."""
    seen = []
    real = nn.Linear.forward

    def spy(self, x):
        out = real(self, x)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(nn.Linear, "forward", spy)
    bf = run(small(precision="bf16", epochs=2))
    train_dtypes = set(seen)
    seen.clear()
    fp = run(small(epochs=2))
    assert torch.bfloat16 in train_dtypes and set(seen) == {torch.float32}
    assert bf.config["precision"] == "bf16"
    diag_bf = [bf.accuracy_matrix[i][i] for i in range(3)]
    diag_fp = [fp.accuracy_matrix[i][i] for i in range(3)]
    assert min(diag_bf) > 0.6 and abs(sum(diag_bf) - sum(diag_fp)) / 3 < 0.03, (diag_bf, diag_fp)


def test_precision_is_checked_and_float32_keeps_old_run_names():
    with pytest.raises(fl.UsageError, match="precision"):
        small(precision="fp8").resolved()
    a, b = small(), small(precision="bf16")
    assert "bf16" in b.stamp() and a.stamp() != b.stamp()
    d = a.to_dict()
    del d["precision"]  # a config saved before the option existed gets the same name
    assert RunConfig.from_dict(d).stamp() == a.stamp()

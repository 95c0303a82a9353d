"""Split CIFAR-10 (5x2) and Split CIFAR-100 (10x10, 20x5) end to end with the ResNets, on archives
in CIFAR's binary format built from real images (tests/cifar_archives.py), read by the real loader.

Short class-IL runs (the first two tasks, Adam, the default augmentation: crop-flip for CIFAR, and
the dataset's normalisation as the ResNets' first layer), each asserting what training must achieve.
"""

import pytest
from cifar_archives import cifar10_archive, cifar100_archive

import forgetless as fl
from forgetless.benchmarks import build


@pytest.fixture(scope="module")
def cifar10_dir(tmp_path_factory):
    return cifar10_archive(tmp_path_factory.mktemp("cifar10"), n_train=2500, n_test=500)


@pytest.fixture(scope="module")
def cifar100_dir(tmp_path_factory):
    return cifar100_archive(tmp_path_factory.mktemp("cifar100"), train_per_class=40, test_per_class=10)


def short(data_dir, **kw):
    base = dict(
        scenario="class",
        iterations=25,
        batch_size=16,
        optimizer="adam",
        lr=0.001,
        first_tasks=2,
        data_dir=str(data_dir),
        download=False,
    )
    return fl.RunConfig(**{**base, **kw})


@pytest.mark.parametrize("tasks,per_task", [(10, 10), (20, 5)])
def test_split_cifar100_builds_10_and_20_tasks(cifar100_dir, tasks, per_task):
    b = build("split-cifar100", scenario="class", tasks=tasks, data_dir=str(cifar100_dir), download=False)
    assert len(b.tasks) == tasks and b.n_outputs == 100 and b.input_shape == (3, 32, 32)
    assert [t.classes for t in b.tasks] == [list(range(k * per_task, (k + 1) * per_task)) for k in range(tasks)]
    assert all(len(t.train) == 40 * per_task and len(t.test) == 10 * per_task for t in b.tasks)


def test_split_cifar10_resnet18_er_beats_naive(cifar10_dir, one_thread):
    acc = {}
    for strategy, params in (("naive", {}), ("er", {"memory": 100})):
        r = fl.run(
            short(cifar10_dir, benchmark="split-cifar10", model="resnet18:nf=20", strategy=strategy, params=params)
        )
        assert r.benchmark["augment"] == "crop-flip" and r.benchmark["normalize"]["mean"][0] == pytest.approx(0.4914)
        acc[strategy] = (r.metrics["average_accuracy"], r.accuracy_matrix)
    print(acc)
    (naive, R_naive), (er, R_er) = acc["naive"], acc["er"]
    assert R_naive[0][0] > 0.7  # two classes, learnt after 25 steps (chance 0.5)
    assert R_naive[1][0] < 0.1  # and forgotten in class-IL
    assert R_er[1][0] > 0.5 and er > naive + 0.15, acc  # replay keeps the first task


def test_split_cifar100_10_tasks_resnet18(cifar100_dir, one_thread):
    r = fl.run(short(cifar100_dir, benchmark="split-cifar100", tasks=10, model="resnet18:nf=20"))
    R = r.accuracy_matrix
    print(R)
    assert r.config["tasks"] == 10 and len(R) == 2
    assert R[0][0] > 0.3  # ten classes after 25 steps: chance is 0.1
    assert R[1][1] > 0.25 and R[1][0] < 0.1  # the second task learnt, the first forgotten (class-IL, naive)


def test_split_cifar100_20_tasks_resnet32(cifar100_dir, one_thread):
    r = fl.run(short(cifar100_dir, benchmark="split-cifar100", tasks=20, model="resnet32"))
    R = r.accuracy_matrix
    print(R)
    assert r.config["tasks"] == 20 and r.benchmark["n_outputs"] == 100
    assert R[0][0] > 0.5  # five classes: chance is 0.2
    assert R[1][1] > 0.4 and R[1][0] < 0.1


def test_split_cifar10_icarl_with_resnet32_keeps_the_first_task(cifar10_dir, one_thread):
    """iCaRL takes its features from the ResNet's head input (herding, nearest mean of exemplars)."""
    r = fl.run(
        short(cifar10_dir, benchmark="split-cifar10", model="resnet32", strategy="icarl", params={"memory": 100})
    )
    R = r.accuracy_matrix
    print(R)
    assert R[0][0] > 0.7 and R[1][0] > 0.4 and R[1][1] > 0.3  # naive keeps < 0.1 of the first task

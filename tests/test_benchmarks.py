import pytest
import torch

from forgetless import UsageError, build
from forgetless.benchmarks import parse_groups


def test_split_digits_class_incremental_keeps_labels_and_grows_the_head():
    b = build("split-digits", scenario="class")
    assert len(b.tasks) == 5 and b.n_outputs == 10 and b.input_shape == (1, 8, 8)
    for k, task in enumerate(b.tasks):
        assert task.classes == [2 * k, 2 * k + 1]
        assert set(task.train.y.unique().tolist()) == {2 * k, 2 * k + 1}
        assert b.active_outputs(k).tolist() == list(range(2 * k + 2))  # every class seen so far
    # evaluating task 1 after task 3 competes over classes 0..7; an unseen task 4 after task 0 over 0..9
    assert torch.isfinite(b.eval_bias(3, 1)).sum() == 8
    assert torch.isfinite(b.eval_bias(0, 4)).sum() == 10


def test_split_digits_domain_maps_onto_shared_outputs():
    b = build("split-digits", scenario="domain")
    assert b.n_outputs == 2
    for task in b.tasks:
        assert set(task.train.y.unique().tolist()) == {0, 1}
        assert task.classes == [0, 1]
    # digit 3 is the second class of task 2 (2/3) -> output 1
    raw = build("split-digits", scenario="class")
    assert torch.equal(b.tasks[1].train.y, raw.tasks[1].train.y - 2)
    assert torch.equal(b.tasks[1].train.x, raw.tasks[1].train.x)


def test_split_task_incremental_masks_other_tasks():
    b = build("split-digits", scenario="task")
    logits = torch.zeros(3, 10)
    masked = b.mask_logits(logits, torch.tensor([0, 2, 4]), upto=4)
    assert torch.isfinite(masked).sum(1).tolist() == [2, 2, 2]
    assert torch.isfinite(masked[1, 4:6]).all()


def test_permuted_tasks_share_labels_and_get_separate_heads_in_task_il():
    b = build("permuted-digits", scenario="task", tasks=3, seed=1)
    assert b.n_outputs == 30
    assert [t.classes for t in b.tasks] == [list(range(10)), list(range(10, 20)), list(range(20, 30))]
    d = build("permuted-digits", scenario="domain", tasks=3, seed=1)
    assert d.n_outputs == 10
    # same pixels, permuted: each image keeps its multiset of values
    x0, x1 = d.tasks[0].train.x.flatten(1), d.tasks[1].train.x.flatten(1)
    assert torch.equal(x0.sort(1).values, x1.sort(1).values) and not torch.equal(x0, x1)
    # the permutation is the same for train and test and fixed by the seed
    again = build("permuted-digits", scenario="domain", tasks=3, seed=1)
    assert torch.equal(again.tasks[2].test.x, d.tasks[2].test.x)
    other = build("permuted-digits", scenario="domain", tasks=3, seed=2)
    assert not torch.equal(other.tasks[2].test.x, d.tasks[2].test.x)


def test_first_unpermuted_and_rotations():
    plain = build("split-digits", scenario="class", tasks=1, classes="0,1,2,3,4,5,6,7,8,9")
    p = build("permuted-digits", scenario="domain", tasks=2, first_unpermuted=True)
    assert torch.equal(p.tasks[0].train.x, plain.tasks[0].train.x)
    r = build("rotated-digits", scenario="domain", tasks=2, angles=[0, 90])
    assert torch.equal(r.tasks[0].train.x, plain.tasks[0].train.x)
    # 90 degrees is an exact quarter turn of the pixel grid (up to interpolation at the border)
    turned = torch.rot90(plain.tasks[0].train.x, 1, dims=(2, 3))
    other = torch.rot90(plain.tasks[0].train.x, -1, dims=(2, 3))
    err = min((r.tasks[1].train.x - turned).abs().max(), (r.tasks[1].train.x - other).abs().max())
    assert err < 1e-4


def test_explicit_groups_and_validation_split():
    b = build("split-digits", scenario="class", classes="0,2,4,6,8|1,3,5,7,9", val_fraction=0.2)
    assert [t.classes for t in b.tasks] == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]
    full = build("split-digits", scenario="class", classes="0,2,4,6,8|1,3,5,7,9")
    for t, f in zip(b.tasks, full.tasks):
        assert len(t.train) + len(t.val) == len(f.train)
        assert abs(len(t.val) - 0.2 * len(f.train)) <= 1
        assert len(t.test) == len(f.test)  # the test split is untouched
        # held-out samples are not in the training part
        tr = {tuple(v) for v in t.train.x.flatten(1).tolist()}
        assert not any(tuple(v) in tr for v in t.val.x.flatten(1).tolist()[:50])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="split-digitz"), "did you mean 'split-digits'"),
        (dict(name="split-digits", tasks=11), "cannot be split into 11 tasks"),
        (dict(name="split-digits", tasks=3), "do not split evenly"),
        (dict(name="split-digits", classes="0,1|2,x"), "comma-separated"),
        (dict(name="split-digits", classes="0,1||2,3"), "empty class group"),
        (dict(name="split-digits", classes="0,1|2,12"), "not in digits"),
        (dict(name="split-digits", scenario="classes"), "did you mean 'class'"),
        (dict(name="rotated-digits", tasks=3, angles=[0, 10]), "one angle per task"),
        (dict(name="permuted-digits", val_fraction=1.5), "validation fraction"),
    ],
)
def test_bad_benchmark_options_are_refused(kwargs, message):
    with pytest.raises(UsageError, match=message):
        build(**kwargs)


def test_parse_groups():
    assert parse_groups("0,2|1, 3") == [[0, 2], [1, 3]]


def test_mnist_then_fashion_sequence_has_separate_outputs(mnist_dir, fashion_slice_dir):
    b = build("mnist-fashion-mnist", scenario="task", data_dir={"mnist": mnist_dir, "fashion-mnist": fashion_slice_dir})
    assert len(b.tasks) == 2 and b.n_outputs == 20
    assert len(b.tasks[0].train) == 8500 and len(b.tasks[1].train) == 4000
    assert b.tasks[1].classes == list(range(10, 20))


def test_a_plain_data_dir_serves_a_sequence_only_through_subfolders(
    tmp_path, mnist_dir, fashion_slice_dir, monkeypatch
):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "mnist").symlink_to(mnist_dir)
    (plain / "fashion-mnist").symlink_to(fashion_slice_dir)
    for f in fashion_slice_dir.glob("*.gz"):  # files directly in DIR belong to no dataset of the sequence
        (plain / f.name).symlink_to(f)
    b = build("mnist-fashion-mnist", scenario="domain", data_dir=plain)
    assert len(b.tasks[0].train) == 8500 and len(b.tasks[1].train) == 4000  # each from its subfolder
    (plain / "fashion-mnist").unlink()  # a missing subfolder: the usual search ($FORGETLESS_DATA here)
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "fashion-mnist").symlink_to(fashion_slice_dir)
    monkeypatch.setenv("FORGETLESS_DATA", str(tmp_path / "env"))
    b = build("mnist-fashion-mnist", scenario="domain", data_dir=plain)
    assert len(b.tasks[0].train) == 8500 and len(b.tasks[1].train) == 4000


# ---- issue 17: one uint8 copy of a dataset, every task a view of it ----------------------------------

# permuted-mnist (tests/data/mnist-subset), domain-IL, 3 tasks, EWC, 40 iterations, seed 0, one CPU thread:
# recorded with the code that gave every task its own permuted copy (commit 0422ded).
RECORDED_INITIAL = [0.09533333333333334, 0.086, 0.09666666666666666]
RECORDED_MATRIX = [
    [0.758, 0.09933333333333333, 0.10866666666666666],
    [0.7026666666666667, 0.868, 0.11533333333333333],
    [0.744, 0.752, 0.85],
]


def _materialised(bench):
    """The same benchmark with every task holding its own copy of its images (the old layout)."""
    from forgetless.data import TensorData

    for t in bench.tasks:
        for split in ("train", "test", "val"):
            d = getattr(t, split)
            if d is not None:
                setattr(t, split, TensorData(d.raw.clone(), d.y, d.scale))
    return bench


def test_permuted_tasks_are_views_of_one_uint8_copy(mnist_dir):
    b = build("permuted-mnist", scenario="domain", tasks=4, seed=3, data_dir=mnist_dir, val_fraction=0.1)
    store = b.tasks[0].train.stored
    assert store.dtype == torch.uint8 and len(store) == 8500
    for t in b.tasks:
        assert t.train.stored is store and t.val.stored is store and t.test.stored is b.tasks[0].test.stored
        assert t.train.nbytes < 8500 * 8 * 3  # labels and row indices, no images
    old = _materialised(
        build("permuted-mnist", scenario="domain", tasks=4, seed=3, data_dir=mnist_dir, val_fraction=0.1)
    )
    idx = torch.tensor([0, 5, 17, 4000, 7649])
    for new_t, old_t in zip(b.tasks, old.tasks):
        for split in ("train", "val", "test"):
            new, ref = getattr(new_t, split), getattr(old_t, split)
            assert torch.equal(new.raw, ref.raw) and torch.equal(new.y, ref.y)
            assert torch.equal(new.take(idx[idx < len(new)]), ref.take(idx[idx < len(ref)]))
    # a pixel permutation: stored image 0 flattened, read through the task's permutation
    p = b.tasks[1].train
    i = int(p.rows[0])
    assert torch.equal(p.raw[0].flatten(), store[i].flatten()[p.perm])
    assert not torch.equal(p.raw[0], store[i])


def test_split_tasks_and_joint_data_are_views(mnist_dir):
    b = build("split-mnist", scenario="class", data_dir=mnist_dir)
    store = b.tasks[0].train.stored
    assert all(t.train.stored is store for t in b.tasks)
    from forgetless.data import TensorData

    joint = TensorData.cat([t.train for t in b.tasks])
    assert joint.stored is store and len(joint) == 8500
    assert torch.equal(joint.raw, torch.cat([t.train.raw for t in b.tasks]))


def test_a_permuted_run_gives_the_results_of_per_task_copies(mnist_dir, device):
    """The accuracy matrix is bit-identical to the old layout's (same process), and on CPU to the
    values the old code recorded."""
    from forgetless import RunConfig, run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = RunConfig(
            benchmark="permuted-mnist",
            scenario="domain",
            tasks=3,
            iterations=40,
            strategy="ewc",
            data_dir=str(mnist_dir),
            device=str(device),
            seed=0,
        )
        views = run(cfg)
        copies = run(
            cfg,
            benchmark=_materialised(build("permuted-mnist", scenario="domain", tasks=3, seed=0, data_dir=mnist_dir)),
        )
    finally:
        torch.set_num_threads(threads)
    assert views.accuracy_matrix == copies.accuracy_matrix
    assert views.initial_accuracy == copies.initial_accuracy
    if device.type == "cpu":
        assert views.accuracy_matrix == RECORDED_MATRIX and views.initial_accuracy == RECORDED_INITIAL


def test_joint_data_of_a_permuted_benchmark_is_one_view(mnist_dir):
    """Joint training concatenates every task: a table of permutations over the one copy, with the
    values of the concatenated per-task copies (and of their subsets)."""
    from forgetless.data import TensorData

    b = build("permuted-mnist", scenario="domain", tasks=3, seed=1, data_dir=mnist_dir, first_unpermuted=True)
    joint = TensorData.cat([t.train for t in b.tasks])
    assert joint.stored is b.tasks[0].train.stored and joint.perm.shape == (3, 784) and len(joint) == 3 * 8500
    ref = torch.cat([t.train.raw for t in b.tasks])
    assert torch.equal(joint.raw, ref) and torch.equal(joint.y, torch.cat([t.train.y for t in b.tasks]))
    idx = torch.tensor([0, 8499, 8500, 17000, 25499, 3])
    assert torch.equal(joint.take(idx), ref[idx].float() / 255)
    part = joint.subset(torch.arange(8000, 9000))
    assert torch.equal(part.raw, ref[8000:9000])
    again = TensorData.cat([part, b.tasks[2].train.subset(torch.arange(10))])  # a table view joined again
    assert torch.equal(again.raw, torch.cat([ref[8000:9000], ref[17000:17010]]))

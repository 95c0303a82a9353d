"""The Split CIFAR code path (issue 4, reproduction 3) on a small real image set.

CIFAR cannot be downloaded on this machine, so the CIFAR-10 binary archive is built from 3,000
real MNIST digits (32x32, three different channels; see test_sources.cifar_images), then read by
the real loader and trained class-incrementally with the CNN: iCaRL and BiC must beat naive.
"""

import numpy as np
import pytest
from conftest import IDX_FILES as FILES, MNIST_SUBSET as SUBSET
from test_sources import make_tar

import forgetless as fl


def cifar_like(n: int):
    from forgetless.data import read_idx

    digits = np.pad(read_idx(SUBSET / FILES[0])[:n], ((0, 0), (2, 2), (2, 2)))
    images = np.stack([digits, 255 - digits, digits.transpose(0, 2, 1)], axis=1)
    return images, read_idx(SUBSET / FILES[1])[:n].astype(np.int64)


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    images, labels = cifar_like(3000)
    records = [bytes([int(c)]) + im.tobytes() for im, c in zip(images, labels)]
    folder = tmp_path_factory.mktemp("cifar")
    members = {
        f"cifar-10-batches-bin/data_batch_{i + 1}.bin": b"".join(records[500 * i : 500 * i + 500]) for i in range(5)
    }
    members["cifar-10-batches-bin/test_batch.bin"] = b"".join(records[2500:])
    make_tar(folder / "cifar-10-binary.tar.gz", members)
    return folder


@pytest.mark.usefixtures("one_thread")
def test_split_cifar_class_incremental_icarl_and_bic_beat_naive(cifar_dir):
    base = dict(
        benchmark="split-cifar10",
        scenario="class",
        model="cnn",
        iterations=30,
        batch_size=64,
        data_dir=str(cifar_dir),
        download=False,
    )
    acc = {}
    for strategy, params in (("naive", {}), ("icarl", {"memory": 200}), ("bic", {"memory": 200})):
        r = fl.run(fl.RunConfig(strategy=strategy, params=params, **base))
        acc[strategy] = r.metrics["average_accuracy"]
    print(acc)
    assert acc["naive"] < 0.4, acc
    assert acc["icarl"] > acc["naive"] + 0.2 and acc["bic"] > acc["naive"] + 0.2, acc

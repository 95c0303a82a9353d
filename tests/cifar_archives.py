"""CIFAR-10 and CIFAR-100 binary archives built from real images (the tests' CIFAR stand-ins).

CIFAR cannot be downloaded here, so the archives hold real MNIST digits (tests/data/mnist-subset)
and real Fashion-MNIST images (tests/data/fashion-mnist-slice), zero-padded to 32x32 and coloured,
in CIFAR's own binary format, read by forgetless's real loader:

- CIFAR-10 (``cifar10_archive``): one label byte + 3072 pixel bytes per record, five training
  batches and a test batch; the 10 classes are the 10 digits, the channels the digit, its negative
  and its transpose (as tests/test_split_cifar.py does).
- CIFAR-100 (``cifar100_archive``): a coarse and a fine label byte + 3072 pixel bytes per record,
  ``train.bin`` and ``test.bin``. 20 base classes (MNIST digits 0-9, then Fashion-MNIST classes
  0-9) are the coarse labels, as CIFAR-100's 20 superclasses; each is drawn in 5 colours (white,
  red, green, blue, yellow: the grey image times an RGB weight), and fine label = 5 * base + colour
  (100 classes, 5 per superclass like CIFAR-100's). Every image is used once.
"""

from __future__ import annotations

import io
import tarfile

import numpy as np
from conftest import FASHION_SLICE, IDX_FILES, MNIST_SUBSET

COLOURS = np.array([(1.0, 1.0, 1.0), (1.0, 0.25, 0.25), (0.25, 1.0, 0.25), (0.25, 0.25, 1.0), (1.0, 1.0, 0.25)])


def make_tar(path, members: dict) -> None:
    """A .tar.gz of ``members`` (name -> bytes), lightly compressed (the archives are rebuilt per test module)."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def _grey(folder, split: int):
    from forgetless.data import read_idx

    return read_idx(folder / IDX_FILES[2 * split]), read_idx(folder / IDX_FILES[2 * split + 1]).astype(np.int64)


def cifar100_images(per_class: int, split: int = 0):
    """(uint8 images [100 * per_class, 3, 32, 32], coarse labels, fine labels) from the train (0) or test (1) files."""
    sources = [_grey(MNIST_SUBSET, split), _grey(FASHION_SLICE, split)]
    images, coarse, fine = [], [], []
    for base in range(20):
        x, y = sources[base // 10]
        rows = np.flatnonzero(y == base % 10)[: 5 * per_class]
        if len(rows) < 5 * per_class:
            raise ValueError(f"base class {base} has {len(rows)} images, {5 * per_class} are needed")
        grey = np.pad(x[rows], ((0, 0), (2, 2), (2, 2))).astype(np.float64)
        for colour in range(5):
            part = grey[colour * per_class : (colour + 1) * per_class]
            images.append(np.rint(part[:, None] * COLOURS[colour][None, :, None, None]).astype(np.uint8))
            coarse += [base] * per_class
            fine += [5 * base + colour] * per_class
    return np.concatenate(images), np.array(coarse), np.array(fine)


def cifar100_archive(folder, train_per_class: int, test_per_class: int):
    """``folder/cifar-100-binary.tar.gz`` in CIFAR-100's binary format; returns ``folder``."""
    members = {}
    for split, name, n in ((0, "train", train_per_class), (1, "test", test_per_class)):
        images, coarse, fine = cifar100_images(n, split)
        members[f"cifar-100-binary/{name}.bin"] = b"".join(
            bytes([int(c), int(f)]) + im.tobytes() for im, c, f in zip(images, coarse, fine)
        )
    make_tar(folder / "cifar-100-binary.tar.gz", members)
    return folder


def cifar10_archive(folder, n_train: int, n_test: int):
    """``folder/cifar-10-binary.tar.gz`` in CIFAR-10's binary format from MNIST digits; returns ``folder``."""
    from forgetless.data import read_idx

    x = read_idx(MNIST_SUBSET / IDX_FILES[0])[: n_train + n_test]
    y = read_idx(MNIST_SUBSET / IDX_FILES[1])[: n_train + n_test]
    digits = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    images = np.stack([digits, 255 - digits, digits.transpose(0, 2, 1)], axis=1)
    records = [bytes([int(c)]) + im.tobytes() for im, c in zip(images, y)]
    per = n_train // 5
    members = {
        f"cifar-10-batches-bin/data_batch_{i + 1}.bin": b"".join(records[per * i : per * (i + 1)]) for i in range(5)
    }
    members["cifar-10-batches-bin/test_batch.bin"] = b"".join(records[5 * per : 5 * per + n_test])
    make_tar(folder / "cifar-10-binary.tar.gz", members)
    return folder

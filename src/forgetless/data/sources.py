"""The image datasets forgetless knows by name, found locally or downloaded and verified.

Tensors are cached per process: repeated ``load_dataset`` calls return the *same*
tensors, so callers must not modify them in place (use ``x = x * 2``, not ``x.mul_(2)``).
Across processes the decoded uint8 arrays are cached on disk and memory-mapped (``arrays.py``):
a file is gunzipped and parsed once, until it changes.
"""

from __future__ import annotations

import functools
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, closest
from .arrays import cached_arrays
from .base import TensorData
from .cache import DownloadError, default_cache_dir, fetch
from .idx import read_idx


def _info(shape, num_classes, description):
    return {"shape": shape, "num_classes": num_classes, "description": description}


# What `forgetless list` shows: image shape (C, H, W), number of classes, a description.
DATASETS = {
    "mnist": _info((1, 28, 28), 10, "handwritten digits, 60,000 train / 10,000 test"),
    "fashion-mnist": _info((1, 28, 28), 10, "Zalando clothing images, 60,000 train / 10,000 test"),
    "digits": _info((1, 8, 8), 10, "scikit-learn's 1,797 8x8 digits, 1,437 train / 360 test, offline"),
    "cifar10": _info((3, 32, 32), 10, "colour photos in 10 classes, 50,000 train / 10,000 test"),
    "cifar100": _info((3, 32, 32), 100, "colour photos in 100 fine classes, 50,000 train / 10,000 test"),
}


@dataclass(frozen=True)
class _Source:
    """Where a dataset's files come from: SHA-256 by file name, mirrors, a system copy."""

    sha256: dict
    mirrors: tuple
    system_dir: Path | None = None

    @property
    def files(self) -> tuple:
        return tuple(self.sha256)


_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
_KRIZ = ("https://www.cs.toronto.edu/~kriz/",)

# SHA-256 of the original files, from tensorflow/datasets tensorflow_datasets/url_checksums/*.txt
_SOURCES = {
    "mnist": _Source(
        dict(
            zip(
                _IDX_FILES,
                (
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                ),
            )
        ),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        Path("/usr/share/datasets/mnist"),
    ),
    "fashion-mnist": _Source(
        dict(
            zip(
                _IDX_FILES,
                (
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                ),
            )
        ),
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        Path("/usr/share/datasets/fashion-mnist"),
    ),
    "cifar10": _Source(
        {"cifar-10-binary.tar.gz": "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"}, _KRIZ
    ),
    "cifar100": _Source(
        {"cifar-100-binary.tar.gz": "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec"}, _KRIZ
    ),
}

# Binary CIFAR: tar members, and per record the label bytes before the 3072 pixel bytes.
_CIFAR = {
    "cifar10": (
        [f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)],
        ["cifar-10-batches-bin/test_batch.bin"],
        1,
    ),
    "cifar100": (["cifar-100-binary/train.bin"], ["cifar-100-binary/test.bin"], 2),  # coarse, fine
}


def load_dataset(name: str, data_dir=None, download: bool = True, progress: bool = True):
    """Return ``(train, test)`` TensorData for dataset `name` (a key of DATASETS).

    Files are looked for in `data_dir` (directly or in a subfolder named `name`), then
    ``$FORGETLESS_DATA`` (same rule), the cache dir, then a system copy; if absent they
    are downloaded into the cache and verified when `download` is true. The returned
    tensors are shared between calls: do not modify them in place.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}{closest(name, DATASETS)}; choose from {', '.join(DATASETS)}")
    if name == "digits":
        return _load_digits()
    folder = _locate(name, data_dir, download, progress)
    files = [_file_key(folder / f) for f in _SOURCES[name].files]
    if name in _CIFAR:
        return _load_cifar(name, *files)
    return _load_idx(name, *files)


def _search_dirs(name: str, data_dir) -> list[Path]:
    dirs = []
    for base in (data_dir, os.environ.get("FORGETLESS_DATA")):
        if base:
            dirs += [Path(base), Path(base) / name]
    dirs.append(default_cache_dir() / name)
    if _SOURCES[name].system_dir:
        dirs.append(_SOURCES[name].system_dir)
    return list(dict.fromkeys(dirs))


def _locate(name: str, data_dir, download: bool, progress: bool) -> Path:
    """The first directory holding all of `name`'s files, downloading them if allowed."""
    source = _SOURCES[name]
    dirs = _search_dirs(name, data_dir)
    for d in dirs:
        if all((d / f).is_file() for f in source.files):
            return d
    where = (
        f"put the files {', '.join(source.files)} in one of the folders {', '.join(map(str, dirs))} "
        "(or in a folder passed with --data-dir)"
    )
    if not download:
        raise DataError(f"{name}: files not found and downloading is off; {where}")
    cache = default_cache_dir() / name
    for filename, sha256 in source.sha256.items():
        urls = [base + filename for base in source.mirrors]
        try:
            fetch(filename, urls, sha256, cache, progress=progress)
        except DownloadError as e:
            raise DataError(f"{name}: {e}; {where}") from None
    return cache


def _file_key(path: Path) -> tuple:
    """Resolved path plus size and mtime, so a replaced file is not served from the cache."""
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def _to_images(pixels: np.ndarray) -> torch.Tensor:
    """uint8 [N, C, H, W], kept as uint8 (``TensorData`` scales each batch by 1/255 when it is taken)."""
    return torch.from_numpy(np.ascontiguousarray(pixels))


def _check_labels(labels: np.ndarray, num_classes: int, where) -> None:
    if labels.size and labels.max() >= num_classes:
        raise DataError(
            f"{where}: label {int(labels.max())} out of range for {num_classes} classes; delete it and download again"
        )


@functools.lru_cache(maxsize=4)
def _load_idx(name, train_images, train_labels, test_images, test_labels):
    info = DATASETS[name]
    paths = [train_images[0], train_labels[0], test_images[0], test_labels[0]]

    def decode():
        decoded = {}
        for split, (images, labels) in (("train", paths[:2]), ("test", paths[2:])):
            decoded[f"{split}_images"], decoded[f"{split}_labels"] = _idx_arrays(info, images, labels)
        return decoded

    arrays = cached_arrays(name, paths, _SPLIT_ARRAYS, decode)
    return tuple(
        _tensor_data(arrays[f"{split}_images"][:, None], arrays[f"{split}_labels"], info, paths[0])
        for split in ("train", "test")
    )


_SPLIT_ARRAYS = ["train_images", "train_labels", "test_images", "test_labels"]


def _tensor_data(images: np.ndarray, labels: np.ndarray, info: dict, where) -> TensorData:
    """uint8 images [N, C, H, W] (kept as they are, memory-mapped from the decoded cache or
    not) and their labels, checked, as TensorData with divisor 255."""
    _check_labels(labels, info["num_classes"], where)
    return TensorData(_to_images(images), torch.from_numpy(labels.astype(np.int64)), scale=255)


def _idx_arrays(info: dict, images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [N, H, W], uint8 labels [N]) of a pair of IDX files, checked."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    _, height, width = info["shape"]
    if images.dtype != np.uint8 or images.shape[1:] != (height, width):
        raise DataError(
            f"{images_path}: expected uint8 images of {height}x{width}, found {images.dtype} of shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{labels_path}: expected a 1-D uint8 array of labels, found {labels.dtype} of shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; "
            "the files do not belong together"
        )
    _check_labels(labels, info["num_classes"], labels_path)
    return images, labels


@functools.lru_cache(maxsize=2)
def _load_cifar(name, archive):
    path = archive[0]
    train_members, test_members, label_bytes = _CIFAR[name]
    info = DATASETS[name]

    def decode():
        blobs = _read_members(path, train_members + test_members)
        decoded = {}
        for split, members in (("train", train_members), ("test", test_members)):
            parts = [_parse_cifar(blobs[m], label_bytes, f"{path}: {m}") for m in members]
            decoded[f"{split}_images"] = np.concatenate([p[0] for p in parts])
            decoded[f"{split}_labels"] = np.concatenate([p[1] for p in parts]).astype(np.uint8)
            _check_labels(decoded[f"{split}_labels"], info["num_classes"], path)
        return decoded

    arrays = cached_arrays(name, [path], _SPLIT_ARRAYS, decode)
    return tuple(
        _tensor_data(arrays[f"{split}_images"], arrays[f"{split}_labels"], info, path) for split in ("train", "test")
    )


def _read_members(path: str, names: list[str]) -> dict[str, bytes]:
    """The contents of the tar members `names`, read without extracting to disk."""
    blobs = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name in names and member.isfile():
                    blobs[member.name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt archive ({e}); delete it and download again") from None
    missing = [n for n in names if n not in blobs]
    if missing:
        raise DataError(f"{path}: archive lacks {', '.join(missing)}; delete it and download again")
    return blobs


def _parse_cifar(blob: bytes, label_bytes: int, where: str):
    """Binary CIFAR records -> (uint8 images [N, 3, 32, 32], int64 labels); the last label byte is used."""
    record = label_bytes + 3 * 32 * 32
    if len(blob) % record:
        raise DataError(
            f"{where}: truncated record: {len(blob)} bytes is not a multiple of "
            f"the {record}-byte record size; delete it and download again"
        )
    rows = np.frombuffer(blob, np.uint8).reshape(-1, record)
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32), rows[:, label_bytes - 1].astype(np.int64)


@functools.lru_cache(maxsize=1)
def _load_digits():
    """scikit-learn's digits, read from its CSV file without importing it (``data/digits.py``)."""
    from .digits import read_digits, split_rows

    images, labels = read_digits()
    x = images[:, None]  # 0..16; TensorData divides by 16 (exact, as before)
    train, test = split_rows()
    return (
        TensorData(torch.from_numpy(x[train]), torch.from_numpy(labels[train]), scale=16),
        TensorData(torch.from_numpy(x[test]), torch.from_numpy(labels[test]), scale=16),
    )

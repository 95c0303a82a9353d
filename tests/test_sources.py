"""load_dataset on real data: the MNIST subset, the Fashion-MNIST slice and Debian's full copy, sklearn
digits, CIFAR binaries."""

import dataclasses
import functools
import hashlib
import io
import shutil
import socket
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FASHION_SLICE, IDX_FILES as FILES, MNIST_SUBSET as SUBSET

from forgetless.data import DATASETS, TensorData, load_dataset, read_idx, sources, write_idx
from forgetless.errors import DataError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No user data dirs, an empty cache, no mirror override."""
    monkeypatch.delenv("FORGETLESS_DATA", raising=False)
    monkeypatch.delenv("FORGETLESS_MIRROR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def write_mnist(folder: Path, n_train: int, n_test: int) -> Path:
    """The first n_train / n_test real subset examples as the four MNIST files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in zip(FILES, [n_train, n_train, n_test, n_test]):
        write_idx(folder / name, read_idx(SUBSET / name)[:n])
    return folder


def assert_image_data(data: TensorData, n: int, shape, num_classes: int):
    assert data.x.shape == (n, *shape) and data.x.dtype == torch.float32
    assert data.y.shape == (n,) and data.y.dtype == torch.int64
    assert data.x.min() >= 0 and data.x.max() <= 1
    assert set(data.y.tolist()) == set(range(num_classes))


def test_mnist_from_data_dir():
    train, test = load_dataset("mnist", data_dir=SUBSET, download=False)
    assert_image_data(train, 8500, (1, 28, 28), 10)
    assert_image_data(test, 1500, (1, 28, 28), 10)
    raw = read_idx(SUBSET / "t10k-images-idx3-ubyte.gz")
    assert torch.equal(test.x[:, 0], torch.from_numpy(raw).float() / 255)
    assert test.y.tolist() == read_idx(SUBSET / "t10k-labels-idx1-ubyte.gz").tolist()
    again = load_dataset("mnist", data_dir=str(SUBSET))
    assert again[0].raw is train.raw, "second load should come from the in-process cache"


def test_fashion_mnist_slice_from_data_dir():
    train, test = load_dataset("fashion-mnist", data_dir=FASHION_SLICE, download=False)
    assert_image_data(train, 4000, (1, 28, 28), 10)
    assert_image_data(test, 1000, (1, 28, 28), 10)
    assert torch.bincount(train.y).tolist() == [400] * 10 and torch.bincount(test.y).tolist() == [100] * 10
    raw = read_idx(FASHION_SLICE / "train-images-idx3-ubyte.gz")
    assert torch.equal(train.x[:, 0], torch.from_numpy(raw).float() / 255)


def test_fashion_mnist_found_in_debian_copy(fashion_dir, monkeypatch):
    source = sources._SOURCES["fashion-mnist"]
    assert source.system_dir == Path("/usr/share/datasets/fashion-mnist")
    if fashion_dir != source.system_dir:  # FORGETLESS_TEST_FASHION_DIR names another full copy
        monkeypatch.setitem(sources._SOURCES, "fashion-mnist", dataclasses.replace(source, system_dir=fashion_dir))
    train, test = load_dataset("fashion-mnist", download=False)
    assert_image_data(train, 60000, (1, 28, 28), 10)
    assert_image_data(test, 10000, (1, 28, 28), 10)
    assert torch.bincount(train.y).tolist() == [6000] * 10


def test_search_order(tmp_path, monkeypatch):
    given = write_mnist(tmp_path / "given", 40, 10)
    write_mnist(tmp_path / "env" / "mnist", 30, 10)  # subfolder named after the dataset
    write_mnist(tmp_path / "xdg" / "forgetless" / "mnist", 20, 10)
    monkeypatch.setenv("FORGETLESS_DATA", str(tmp_path / "env"))
    assert len(load_dataset("mnist", data_dir=given, download=False)[0]) == 40
    assert len(load_dataset("mnist", data_dir=tmp_path / "empty", download=False)[0]) == 30
    monkeypatch.delenv("FORGETLESS_DATA")
    assert len(load_dataset("mnist", download=False)[0]) == 20


def test_a_folder_counts_only_with_all_four_files(tmp_path):
    given = write_mnist(tmp_path / "given", 40, 10)
    write_mnist(tmp_path / "xdg" / "forgetless" / "mnist", 20, 10)
    (given / FILES[3]).unlink()
    assert len(load_dataset("mnist", data_dir=given, download=False)[0]) == 20


def test_image_label_count_mismatch_names_both_files(tmp_path):
    folder = write_mnist(tmp_path / "d", 40, 10)
    write_idx(folder / FILES[1], read_idx(SUBSET / FILES[1])[:39])
    with pytest.raises(DataError, match=r"40 images but .* 39 labels") as info:
        load_dataset("mnist", data_dir=folder)
    message = str(info.value)
    assert str(folder / FILES[0]) in message and str(folder / FILES[1]) in message and "\n" not in message


def test_wrong_image_size(tmp_path):
    folder = write_mnist(tmp_path / "d", 40, 10)
    write_idx(folder / FILES[2], read_idx(SUBSET / FILES[2])[:10, :, :27])
    with pytest.raises(DataError, match="expected uint8 images of 28x28"):
        load_dataset("mnist", data_dir=folder)


@pytest.fixture
def subset_server():
    """A local HTTP server whose root holds the real MNIST-subset files."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(SUBSET))
    handler.log_message = lambda *args: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def point_mnist_at(monkeypatch, mirror):
    """Make 'mnist' download the subset (its real checksums) from `mirror` only."""
    sha = {f: hashlib.sha256((SUBSET / f).read_bytes()).hexdigest() for f in FILES}
    fake = dataclasses.replace(sources._SOURCES["mnist"], sha256=sha, mirrors=(mirror,), system_dir=None)
    monkeypatch.setitem(sources._SOURCES, "mnist", fake)


def test_download_into_cache(subset_server, tmp_path, monkeypatch):
    point_mnist_at(monkeypatch, subset_server)
    train, test = load_dataset("mnist", progress=False)
    assert (len(train), len(test)) == (8500, 1500)
    cache = tmp_path / "xdg" / "forgetless" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES)


def test_offline_error_says_where_to_put_the_files(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/"
    point_mnist_at(monkeypatch, closed)
    with pytest.raises(DataError, match="could not download") as info:
        load_dataset("mnist", data_dir=tmp_path / "mine", progress=False)
    message = str(info.value)
    assert all(f in message for f in FILES) and "\n" not in message
    assert str(tmp_path / "mine") in message and "--data-dir" in message


def test_no_download_allowed(tmp_path):
    with pytest.raises(DataError, match="downloading is off") as info:
        load_dataset("cifar100", data_dir=tmp_path, download=False)
    assert "cifar-100-binary.tar.gz" in str(info.value)


def test_unknown_name_suggests_closest():
    with pytest.raises(DataError, match="did you mean 'fashion-mnist'"):
        load_dataset("fashion_mnist")


def test_every_dataset_is_described():
    assert set(DATASETS) == {"mnist", "fashion-mnist", "digits", "cifar10", "cifar100"}
    assert DATASETS["cifar100"]["num_classes"] == 100 and DATASETS["cifar10"]["shape"] == (3, 32, 32)
    assert all(info["description"] for info in DATASETS.values())


def test_digits_split():
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits")
    assert_image_data(train, 1437, (1, 8, 8), 10)
    assert_image_data(test, 360, (1, 8, 8), 10)
    assert torch.bincount(test.y).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]  # stratified
    everything = load_digits()
    rows = np.concatenate([train.x.reshape(-1, 64), test.x.reshape(-1, 64)])
    assert sorted(r.tobytes() for r in rows) == sorted(r.tobytes() for r in (everything.data / 16).astype(np.float32))
    sources._load_digits.cache_clear()
    fresh_train, fresh_test = load_dataset("digits")
    assert fresh_train.x is not train.x
    assert torch.equal(fresh_train.x, train.x) and torch.equal(fresh_test.y, test.y)


# --- CIFAR binary format, built from real MNIST digits -------------------------------------


def cifar_images(n):
    """n real digits as uint8 [n, 3, 32, 32] (three different channels) and their labels."""
    digits = np.pad(read_idx(SUBSET / FILES[0])[:n], ((0, 0), (2, 2), (2, 2)))
    images = np.stack([digits, 255 - digits, digits.transpose(0, 2, 1)], axis=1)
    return images, read_idx(SUBSET / FILES[1])[:n].astype(np.int64)


def make_tar(path, members: dict):
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def cifar10_members(images, labels, cut=0):
    """5 training batches of 3 records, a test batch of the rest; `cut` bytes off the test batch."""
    records = [bytes([label]) + image.tobytes() for image, label in zip(images, labels)]
    members = {f"cifar-10-batches-bin/data_batch_{i + 1}.bin": b"".join(records[3 * i : 3 * i + 3]) for i in range(5)}
    members["cifar-10-batches-bin/test_batch.bin"] = b"".join(records[15:])
    if cut:
        members["cifar-10-batches-bin/test_batch.bin"] = members["cifar-10-batches-bin/test_batch.bin"][:-cut]
    return members


def as_bytes(x: torch.Tensor) -> np.ndarray:
    return (x * 255).round().to(torch.uint8).numpy()


def test_cifar10_binary_round_trip(tmp_path):
    images, labels = cifar_images(20)
    make_tar(tmp_path / "cifar-10-binary.tar.gz", cifar10_members(images, labels))
    train, test = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert train.x.shape == (15, 3, 32, 32) and test.x.shape == (5, 3, 32, 32)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    np.testing.assert_array_equal(as_bytes(train.x), images[:15])
    np.testing.assert_array_equal(as_bytes(test.x), images[15:])
    assert train.y.tolist() == labels[:15].tolist() and test.y.tolist() == labels[15:].tolist()


def test_cifar100_uses_fine_labels(tmp_path, monkeypatch):
    images, labels = cifar_images(20)
    fine = labels + 90
    records = [bytes([c, f]) + image.tobytes() for image, c, f in zip(images, labels, fine)]
    (tmp_path / "cifar100").mkdir()
    make_tar(
        tmp_path / "cifar100" / "cifar-100-binary.tar.gz",
        {"cifar-100-binary/train.bin": b"".join(records[:12]), "cifar-100-binary/test.bin": b"".join(records[12:])},
    )
    monkeypatch.setenv("FORGETLESS_DATA", str(tmp_path))
    train, test = load_dataset("cifar100", download=False)
    np.testing.assert_array_equal(as_bytes(test.x), images[12:])
    assert train.y.tolist() == fine[:12].tolist() and test.y.tolist() == fine[12:].tolist()


def test_cifar_truncated_record(tmp_path):
    images, labels = cifar_images(20)
    archive = tmp_path / "cifar-10-binary.tar.gz"
    make_tar(archive, cifar10_members(images, labels, cut=100))
    with pytest.raises(DataError, match=r"test_batch.bin: truncated record") as info:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert str(archive) in str(info.value) and "\n" not in str(info.value)


def test_cifar_missing_member_and_corrupt_archive(tmp_path):
    images, labels = cifar_images(20)
    members = cifar10_members(images, labels)
    del members["cifar-10-batches-bin/data_batch_4.bin"]
    archive = tmp_path / "cifar-10-binary.tar.gz"
    make_tar(archive, members)
    with pytest.raises(DataError, match=r"lacks cifar-10-batches-bin/data_batch_4.bin"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    shutil.copyfile(SUBSET / FILES[0], archive)  # a gzip file, but not a tar
    with pytest.raises(DataError, match="corrupt archive"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)

"""The decoded-data cache (forgetless.data.arrays): real MNIST files (tests/data/mnist-subset), copied
to a temporary folder so that they can be changed; the cache lives under a temporary XDG_CACHE_HOME."""

import shutil
import warnings

import numpy as np
import pytest
import torch

from forgetless.data import arrays, sources
from forgetless.data.idx import read_idx, write_idx
from forgetless.data.sources import load_dataset

FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


@pytest.fixture
def data(tmp_path, mnist_dir, monkeypatch):
    """A private copy of the MNIST subset, an empty cache, no in-process memo."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for f in FILES:
        shutil.copy(mnist_dir / f, folder / f)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(arrays.ENV, raising=False)
    arrays._warned.clear()
    sources._load_idx.cache_clear()
    yield folder
    sources._load_idx.cache_clear()


def load(folder):
    sources._load_idx.cache_clear()  # (a new process would not have it)
    return load_dataset("mnist", data_dir=folder, download=False)


def entries(tmp_path):
    return sorted((tmp_path / "xdg" / "forgetless" / "decoded" / "mnist").glob("*/manifest.json"))


def same(a, b):
    return all(torch.equal(x.raw, y.raw) and torch.equal(x.y, y.y) and x.scale == y.scale for x, y in zip(a, b))


def test_second_load_comes_from_the_cache_and_equals_the_first(data, tmp_path, monkeypatch):
    first = load(data)
    assert len(entries(tmp_path)) == 1
    assert first[0].raw.dtype == torch.uint8 and first[0].raw.shape == (8500, 1, 28, 28)
    assert torch.equal(first[0].raw[:, 0], torch.from_numpy(read_idx(data / FILES[0])))

    def no_decoding(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(sources, "read_idx", no_decoding)
    second = load(data)
    assert same(first, second)
    assert second[0].y.dtype == torch.int64
    original = int(read_idx(data / FILES[0])[0, 0, 0])
    second[0].raw[0, 0, 0, 0] = original + 7  # copy-on-write map: writable, and the file is not changed
    assert int(np.load(entries(tmp_path)[0].parent / "train_images.npy")[0, 0, 0]) == original


def test_a_changed_source_is_decoded_again(data, tmp_path):
    first = load(data)
    labels, blob = read_idx(data / FILES[1]), (data / FILES[1]).read_bytes()
    write_idx(data / FILES[1], (labels + 1) % 10)
    second = load(data)
    assert torch.equal(second[0].y, torch.from_numpy(((labels + 1) % 10).astype(np.int64)))
    assert not torch.equal(first[0].y, second[0].y)
    assert torch.equal(first[0].raw, second[0].raw) and torch.equal(first[1].y, second[1].y)
    assert len(entries(tmp_path)) == 2  # another content, another entry
    (data / FILES[1]).write_bytes(blob)  # back to the original bytes: the first entry serves them
    assert torch.equal(load(data)[0].y, first[0].y)
    assert len(entries(tmp_path)) == 2


@pytest.mark.parametrize("damage", ["truncate", "garbage", "pickle", "manifest"])
def test_a_damaged_cache_entry_is_rebuilt_with_a_warning(data, tmp_path, damage):
    first = load(data)
    entry = entries(tmp_path)[0].parent
    target = entry / "train_images.npy"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:1000])
    elif damage == "garbage":
        target.write_bytes(b"\x00" * 4096)
    elif damage == "pickle":  # an object array can only be stored by pickling: never loaded
        np.save(target, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        (entry / "manifest.json").write_text("{not json")
    with pytest.warns(RuntimeWarning, match="damaged.*rebuilding"):
        second = load(data)
    assert same(first, second)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert same(first, load(data))  # rebuilt: no warning now


def test_an_unwritable_cache_dir_still_loads(data, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.warns(RuntimeWarning, match="cannot write the decoded-data cache"):
        got = load(data)
    assert torch.equal(got[0].raw[:, 0], torch.from_numpy(read_idx(data / FILES[0])))
    assert blocker.read_text().startswith("a file")


def test_the_cache_can_be_turned_off(data, tmp_path, monkeypatch):
    monkeypatch.setenv(arrays.ENV, "off")
    got = load(data)
    assert not (tmp_path / "xdg").exists()
    assert len(got[0]) == 8500

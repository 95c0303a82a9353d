"""IDX reading and writing, on real MNIST-subset data and on damaged copies of it."""

import gzip

import numpy as np
import pytest
from conftest import MNIST_SUBSET as SUBSET
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from forgetless.data import read_idx, write_idx
from forgetless.errors import DataError


@pytest.fixture(scope="module")
def digits():
    """The first 64 real training digits, uint8 [64, 28, 28]."""
    return read_idx(SUBSET / "train-images-idx3-ubyte.gz")[:64]


def raises_data_error(path, pattern):
    """Read `path`, expect a one-line DataError naming the file and matching `pattern`."""
    with pytest.raises(DataError, match=pattern) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def test_reads_the_real_subset():
    images = read_idx(SUBSET / "train-images-idx3-ubyte.gz")
    labels = read_idx(SUBSET / "train-labels-idx1-ubyte.gz")
    assert images.shape == (8500, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (8500,) and set(np.unique(labels)) == set(range(10))
    assert 0 < images.mean() < 255 and images.max() == 255
    assert images.flags.writeable


# Real digits mapped onto each IDX type, using its sign and range.
TRANSFORMS = {
    np.uint8: lambda d: d,
    np.int8: lambda d: (d.astype(np.int16) - 128).astype(np.int8),
    np.int16: lambda d: (d.astype(np.int16) - 128) * 250,
    np.int32: lambda d: (d.astype(np.int32) - 128) * 16_000_000,
    np.float32: lambda d: d.astype(np.float32) / 255,
    np.float64: lambda d: d / 255 - 0.5,
}


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", list(TRANSFORMS))
def test_round_trip(tmp_path, digits, dtype, suffix):
    array = TRANSFORMS[dtype](digits)
    assert array.dtype == dtype
    path = tmp_path / f"a-idx{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        st.sampled_from(["u1", "i1", ">i2", "<i4", "f4", "f8"]),
        hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
    )
)
def test_round_trip_any_array(tmp_path_factory, array):
    path = tmp_path_factory.mktemp("idx") / "x.idx"
    write_idx(path, array)
    np.testing.assert_array_equal(read_idx(path), array)


def test_gzip_is_detected_by_magic_bytes_not_suffix(tmp_path, digits):
    write_idx(tmp_path / "real.gz", digits)
    (tmp_path / "gzipped-without-suffix").write_bytes((tmp_path / "real.gz").read_bytes())
    write_idx(tmp_path / "raw-with-suffix", digits)
    (tmp_path / "raw-with-suffix").rename(tmp_path / "raw.gz")
    np.testing.assert_array_equal(read_idx(tmp_path / "gzipped-without-suffix"), digits)
    np.testing.assert_array_equal(read_idx(tmp_path / "raw.gz"), digits)


def test_truncated_file(tmp_path, digits):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, digits)
    path.write_bytes(path.read_bytes()[:-1000])
    message = raises_data_error(path, "truncated IDX file")
    assert f"expected {digits.size} bytes of data, found {digits.size - 1000}" in message


def test_truncated_gzipped_file(tmp_path, digits):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, digits)
    path.write_bytes(path.read_bytes()[:-50])
    raises_data_error(path, "corrupt gzip")


def test_truncated_header(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    raises_data_error(path, "truncated IDX header")


def test_trailing_bytes(tmp_path, digits):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    write_idx(path, digits)
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + b"garbage"))
    raises_data_error(path, "7 unexpected bytes after the IDX data")


@pytest.mark.parametrize("header", [b"\x00\x01\x08\x03", b"\x00\x00\x07\x03", b"<htm"])
def test_wrong_magic(tmp_path, digits, header):
    path = tmp_path / "images.gz"
    write_idx(path, digits)
    path.write_bytes(gzip.compress(header + gzip.decompress(path.read_bytes())[4:]))
    raises_data_error(path, "not an IDX file")


def test_zero_dimensions(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(bytes([0, 0, 8, 0]))
    raises_data_error(path, "0 dimensions")


def test_corrupt_gzip(tmp_path):
    blob = bytearray((SUBSET / "t10k-images-idx3-ubyte.gz").read_bytes())
    blob[len(blob) // 2 : len(blob) // 2 + 64] = bytes(64)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(bytes(blob))
    raises_data_error(path, "corrupt gzip")


def test_missing_file(tmp_path):
    raises_data_error(tmp_path / "nope.gz", "cannot read")


@pytest.mark.parametrize("array", [np.zeros(3, np.uint16), np.zeros(3, bool), np.float32(1.0)])
def test_write_rejects_what_idx_cannot_store(tmp_path, array):
    with pytest.raises(ValueError):
        write_idx(tmp_path / "x", array)
    assert not list(tmp_path.iterdir())

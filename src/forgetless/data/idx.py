"""Read and write IDX files (the MNIST format), raw or gzipped.

Layout: two zero bytes, a type code, the number of dimensions, each dimension as a
big-endian uint32, then the values in C order, big-endian.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from .cache import atomic_write_bytes

_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {(t.kind, t.itemsize): code for code, t in _TYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
_FIX = "delete it and download again"


def read_idx(path) -> np.ndarray:
    """Return the array stored in IDX file `path` (gzip detected by its magic bytes).

    The array is a writable copy in native byte order. Any defect raises a one-line
    DataError that names the file.
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if blob[:2] == _GZIP_MAGIC:
        try:
            blob = gzip.decompress(blob)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt gzip data ({e}); {_FIX}") from None

    if len(blob) < 4 or blob[:2] != b"\0\0" or blob[2] not in _TYPES:
        raise DataError(f"{path}: not an IDX file (magic bytes {blob[:4].hex() or 'missing'}); {_FIX}")
    dtype, ndim = _TYPES[blob[2]], blob[3]
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions; {_FIX}")
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise DataError(f"{path}: truncated IDX header: expected {header} bytes, found {len(blob)}; {_FIX}")
    shape = tuple(int(d) for d in np.frombuffer(blob, ">u4", count=ndim, offset=4))

    expected = math.prod(shape) * dtype.itemsize  # exact: np.prod would wrap around for huge dims
    found = len(blob) - header
    if found < expected:
        raise DataError(f"{path}: truncated IDX file: expected {expected} bytes of data, found {found}; {_FIX}")
    if found > expected:
        raise DataError(
            f"{path}: {found - expected} unexpected bytes after the IDX data "
            f"(expected {expected} bytes for shape {shape}); {_FIX}"
        )
    try:
        data = np.frombuffer(blob, dtype, offset=header).reshape(shape)
    except ValueError as e:  # no data, but other dimensions too large for numpy: (0, 2**32 - 1, ...)
        raise DataError(f"{path}: IDX header declares an impossible shape {shape} ({e}); {_FIX}") from None
    return data.astype(dtype.newbyteorder("="))


def write_idx(path, array) -> None:
    """Write `array` to `path` as IDX, gzipped when the name ends in ``.gz`` (atomically)."""
    array = np.asarray(array)
    code = _CODES.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    blob = header + array.astype(_TYPES[code]).tobytes()
    if str(path).endswith(".gz"):
        blob = gzip.compress(blob, mtime=0)
    atomic_write_bytes(path, blob)

"""Rebuild tests/data/fashion-mnist-slice/ from the full Fashion-MNIST (see its README.md).

    python tests/data/make_fashion_slice.py [--source /usr/share/datasets/fashion-mnist] [--check]

The slice is class-balanced: from the training set the first TRAIN_PER_CLASS images of every class of a
random permutation (numpy default_rng(SEED)), from the test set the first TEST_PER_CLASS, each split then
put back into the original file order. The files are the standard IDX format (magic 0x0803 images,
0x0801 labels, big-endian sizes) gzipped with mtime 0 and no file name, so the same source gives the same
bytes. ``--check`` rebuilds in memory and compares the content with the files in the repository, writing nothing.
Only numpy and the standard library are used.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import struct
import sys
from pathlib import Path

import numpy as np

SEED = 0
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
SPLITS = {"train": TRAIN_PER_CLASS, "t10k": TEST_PER_CLASS}
OUT = Path(__file__).resolve().parent / "fashion-mnist-slice"


def read_idx_gz(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        sys.exit(f"{path}: not a uint8 IDX file")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def idx_gz_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + np.ascontiguousarray(array, np.uint8).tobytes(), compresslevel=9, mtime=0)


def pick(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `per_class` examples of every class, drawn at random, in the original order."""
    order = rng.permutation(len(labels))
    chosen = [order[labels[order] == c][:per_class] for c in range(10)]
    if any(len(c) < per_class for c in chosen):
        sys.exit(f"fewer than {per_class} examples in some class")
    return np.sort(np.concatenate(chosen))


def build(source: Path) -> dict[str, bytes]:
    rng = np.random.default_rng(SEED)
    files = {}
    for split, per_class in SPLITS.items():
        images = read_idx_gz(source / f"{split}-images-idx3-ubyte.gz")
        labels = read_idx_gz(source / f"{split}-labels-idx1-ubyte.gz")
        keep = pick(labels, per_class, rng)
        files[f"{split}-images-idx3-ubyte.gz"] = idx_gz_bytes(images[keep])
        files[f"{split}-labels-idx1-ubyte.gz"] = idx_gz_bytes(labels[keep])
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--source",
        type=Path,
        default=Path("/usr/share/datasets/fashion-mnist"),
        help="folder with the four Fashion-MNIST IDX .gz files (default: Debian's copy)",
    )
    ap.add_argument("--check", action="store_true", help="compare with the files in the repository, write nothing")
    args = ap.parse_args()
    files = build(args.source)
    bad = 0
    for name, blob in files.items():
        digest = hashlib.sha256(blob).hexdigest()
        if args.check:
            # compared decompressed: another zlib may compress the same content to other bytes
            same = (OUT / name).is_file() and gzip.decompress((OUT / name).read_bytes()) == gzip.decompress(blob)
            bad += not same
            print(f"{'same' if same else 'DIFFERENT'}  {digest}  {name}")
        else:
            OUT.mkdir(exist_ok=True)
            (OUT / name).write_bytes(blob)
            print(f"{digest}  {len(blob):>8} bytes  {name}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

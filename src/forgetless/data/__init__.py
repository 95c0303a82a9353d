"""Datasets as in-memory tensors: IDX/CIFAR parsing, verified downloads, atomic writes."""

from .base import TensorData
from .cache import atomic_write_bytes, atomic_write_text, default_cache_dir, fetch
from .idx import read_idx, write_idx
from .sources import DATASETS, load_dataset

__all__ = [
    "DATASETS",
    "TensorData",
    "atomic_write_bytes",
    "atomic_write_text",
    "default_cache_dir",
    "fetch",
    "load_dataset",
    "read_idx",
    "write_idx",
]

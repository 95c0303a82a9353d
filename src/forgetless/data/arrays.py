"""A cache of decoded datasets: the uint8 arrays a source file decodes to, as ``.npy`` files that
later runs memory-map instead of gunzipping and parsing the source again (issue 17: 0.8 s for
Fashion-MNIST's IDX files here under load, 2.3 s in the first release; CIFAR's archives more).

Layout, under ``default_cache_dir()/decoded/<dataset>/`` (so ``$XDG_CACHE_HOME`` is respected):

- ``<key>/<array>.npy`` and ``<key>/manifest.json``: the arrays and what they must be (shape,
  dtype). ``key`` is the SHA-256 (first 32 hex digits) of the source files' own SHA-256s, in order,
  so the same bytes give the same entry wherever they lie, and other bytes another entry.
- ``sources.json``: a memo from each source file's identity (resolved path, device, inode, size,
  mtime and ctime in ns) to its SHA-256, so that a later run does not hash 31 MB again (0.08-0.17
  s here): a file that is rewritten, replaced, touched or moved gets a new ctime or inode, is hashed
  again, and so finds (or builds) the entry of its new contents.

Arrays are written with ``np.save(allow_pickle=False)`` through ``atomic_write_bytes`` (never a
half-written file under its final name), the manifest last; they are read with
``np.load(mmap_mode="c", allow_pickle=False)``: copy-on-write, so the pages are shared with the page
cache like a read-only map, but a tensor made from them (``torch.from_numpy``) that someone writes
to gets private pages instead of crashing the process on a read-only page. An entry whose files do
not match its manifest (a truncated or corrupt file) is rebuilt, with a warning. A cache directory
that cannot be written is skipped (the data is decoded each time, with one warning per process).
``FORGETLESS_DATA_CACHE=off`` (or 0 / no / false) turns the cache off.

Not detected: a bit flip inside an array whose header and size are intact (checking would mean
hashing the decoded arrays on every load).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .cache import atomic_write_bytes, atomic_write_text, default_cache_dir, sha256_file

ENV = "FORGETLESS_DATA_CACHE"
_warned: set[str] = set()


def enabled() -> bool:
    """Whether the decoded-data cache is used (unless $FORGETLESS_DATA_CACHE is 0, off, no or false)."""
    return os.environ.get(ENV, "").strip().lower() not in ("0", "off", "no", "false")


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _identity(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def source_hashes(folder: Path, sources: list[Path]) -> list[str]:
    """SHA-256 of each source, taken from ``folder/sources.json`` when its identity is unchanged."""
    memo_path = folder / "sources.json"
    memo = _read_json(memo_path)
    ids = [_identity(p) for p in sources]
    hashes = [memo.get(i) if isinstance(memo.get(i), str) else None for i in ids]
    if None in hashes:
        hashes = [h or sha256_file(p) for h, p in zip(hashes, sources)]
        memo.update(zip(ids, hashes))
        with contextlib.suppress(OSError):  # (the entry itself reports an unwritable cache)
            atomic_write_text(memo_path, json.dumps(dict(list(memo.items())[-64:]), indent=0))
    return hashes


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _load_entry(entry: Path, names: list[str]) -> dict[str, np.ndarray] | None:
    """The entry's arrays (memory-mapped), or None if absent; raises ValueError if it is damaged."""
    manifest_path = entry / "manifest.json"
    if not manifest_path.is_file():
        return None
    manifest = _read_json(manifest_path).get("arrays")
    if not isinstance(manifest, dict) or sorted(manifest) != sorted(names):
        raise ValueError(f"{manifest_path} is not a manifest of {', '.join(names)}")
    out = {}
    for name in names:
        path = entry / f"{name}.npy"
        try:
            array = np.load(path, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"{path}: {e}") from None
        want = manifest[name]
        if list(array.shape) != want.get("shape") or str(array.dtype) != want.get("dtype"):
            raise ValueError(f"{path}: {array.dtype}{list(array.shape)} instead of {want}")
        out[name] = array
    return out


def cached_arrays(
    dataset: str, sources: list, names: list[str], decode: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """``decode()``'s arrays (a dict with the keys ``names``) for these source files, from the cache
    when it holds them (see the module docstring); otherwise decoded, then stored for next time."""
    if not enabled():
        return decode()
    sources = [Path(s) for s in sources]
    folder = default_cache_dir() / "decoded" / dataset
    try:
        hashes = source_hashes(folder, sources)
    except OSError:
        return decode()
    key = hashlib.sha256("".join(hashes).encode()).hexdigest()[:32]
    entry = folder / key
    try:
        found = _load_entry(entry, list(names))
    except ValueError as e:
        _warn_once(f"forgetless: the decoded-data cache entry {entry} is damaged ({e}); rebuilding it")
        found = None
    if found is not None:
        return found
    arrays = decode()
    try:
        for name, array in arrays.items():
            atomic_write_bytes(entry / f"{name}.npy", _npy_bytes(array))
        manifest = {
            "dataset": dataset,
            "sources": [{"file": p.name, "sha256": h} for p, h in zip(sources, hashes)],
            "arrays": {n: {"shape": list(a.shape), "dtype": str(a.dtype)} for n, a in arrays.items()},
        }
        atomic_write_text(entry / "manifest.json", json.dumps(manifest, indent=1))
    except OSError as e:
        _warn_once(
            f"forgetless: cannot write the decoded-data cache under {folder} ({e.strerror or e}); "
            f"decoding the data every run (set {ENV}=off to silence this)"
        )
    return arrays

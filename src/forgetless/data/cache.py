"""Verified downloads, atomic file writes, full disks and the provenance of what forgetless wrote.

Nothing is ever visible under its final name until it is complete: data goes to a
temporary file in the same directory, is fsynced, checked, then moved into place
with ``os.replace``. Every write of forgetless goes through :func:`atomic_write_bytes` /
:func:`atomic_write_text` (or :func:`_atomic_file` for streams): a full disk (ENOSPC) or an
exhausted quota (EDQUOT) removes the temporary file and raises :class:`DiskFull`, a one-line
``UsageError`` naming the file and the free space it needed.

Provenance: every directory forgetless writes into gets a small manifest, ``.forgetless``, listing
the files it wrote there (:func:`record_written`); :func:`refuse_foreign` refuses to replace a
file that is not listed (a file the user put there), unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

from ..errors import DataError, UsageError

TIMEOUT = 30  # seconds per connection attempt or read
_CHUNK = 1 << 16


class DownloadError(DataError):
    """No mirror could be reached (as opposed to a mirror serving wrong bytes)."""


class _ChecksumMismatch(Exception):
    pass


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/forgetless``, or ``~/.cache/forgetless``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "forgetless"


def sha256_file(path) -> str:
    """Hex SHA-256 of a file's contents."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


_UMASK = os.umask(0)
os.umask(_UMASK)


class DiskFull(UsageError):
    """A write failed because the disk (or the user's quota) is full. One line: the file, the space
    it needed when known, what to do."""

    def __init__(
        self, path, needed: int | None = None, free: int | None = None, reason: str = "no space left on device"
    ):
        self.path, self.needed, self.free = str(path), needed, free
        need = f"; it needs about {_size(needed)} free" if needed else ""
        have = f" ({_size(free)} free now)" if free is not None else ""
        super().__init__(
            f"{reason} while writing {path}{need}{have}; free some space (or choose another folder) and run again"
        )


NO_SPACE = {getattr(__import__("errno"), n) for n in ("ENOSPC", "EDQUOT") if hasattr(__import__("errno"), n)}


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is a full disk or a full quota (ENOSPC, EDQUOT)."""
    return isinstance(error, OSError) and error.errno in NO_SPACE


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} bytes"


def _free(folder: Path) -> int | None:
    import shutil

    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full(error: OSError, path, needed: int | None = None) -> DiskFull:
    """The one-line error for ``error`` (ENOSPC or EDQUOT) while writing ``path``."""
    reason = (
        "disk quota exceeded"
        if error.errno == getattr(__import__("errno"), "EDQUOT", -1)
        else "no space left on device"
    )
    return DiskFull(path, needed, _free(Path(path).parent), reason)


@contextlib.contextmanager
def _atomic_file(path: Path, size: int | None = None):
    """Yield a temp file next to `path`; on success fsync it and move it onto `path`,
    on any exception delete it. A full disk becomes :class:`DiskFull` (``size``: the bytes to write,
    for the message)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed and renamed into place below)
            dir=path.parent, prefix=f".{path.name}.", suffix=".part", delete=False
        )
    except OSError as e:
        if is_disk_full(e):
            raise disk_full(e, path, size) from None
        raise
    try:
        with tmp:
            yield tmp
            tmp.flush()
            os.fsync(tmp.fileno())
            os.chmod(tmp.name, 0o666 & ~_UMASK)  # temp files are 0600; the result is an ordinary file
        os.replace(tmp.name, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp.name)
        if is_disk_full(e):
            raise disk_full(e, path, size or getattr(e, "needed_bytes", None)) from None
        raise
    if os.name == "posix":  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a mix.
    A full disk raises :class:`DiskFull` (one line) and leaves no temporary file behind."""
    with _atomic_file(Path(path), len(data)) as f:
        f.write(data)


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> None:
    """Text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode(encoding))


# ---- provenance: which files of a directory forgetless wrote --------------------------------------

MANIFEST = ".forgetless"


def written_by_forgetless(path) -> bool:
    """Whether the manifest of ``path``'s directory lists it (forgetless wrote it)."""
    import json

    path = Path(path)
    try:
        files = json.loads((path.parent / MANIFEST).read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(files, list) and path.name in files


def record_written(folder, *names: str) -> None:
    """Add ``names`` to the manifest of ``folder`` (the files forgetless wrote there)."""
    import json

    folder = Path(folder)
    try:
        data = json.loads((folder / MANIFEST).read_text())
        files = data.get("files", []) if isinstance(data, dict) else []
    except (OSError, ValueError):
        files = []
    files = sorted({f for f in files if isinstance(f, str)} | set(names))
    atomic_write_text(folder / MANIFEST, json.dumps({"written by": "forgetless", "files": files}, indent=1) + "\n")


def refuse_foreign(path, overwrite: bool = False, recognize=None, what: str = "--out") -> None:
    """Refuse to replace ``path`` when it exists and forgetless did not write it (its directory's
    manifest does not list it and ``recognize(path)`` does not know it), unless ``overwrite``."""
    path = Path(path)
    if overwrite or not (path.exists() or path.is_symlink()) or written_by_forgetless(path):
        return
    if recognize is not None:
        try:
            if recognize(path):
                return
        except (OSError, ValueError):
            pass
    raise UsageError(
        f"{path} exists and was not written by forgetless; choose another {what}, or add --overwrite to replace it"
    )


class _TextBar:
    """Minimal stand-in for tqdm: one self-overwriting line on stderr."""

    def __init__(self, total, desc):
        self.total, self.desc, self.done = total, desc, 0

    def update(self, n):
        self.done += n
        mb = self.done / 1e6
        if self.total:
            sys.stderr.write(f"\r{self.desc}: {100 * self.done // self.total:3d}% {mb:.1f}/{self.total / 1e6:.1f} MB")
        else:
            sys.stderr.write(f"\r{self.desc}: {mb:.1f} MB")
        sys.stderr.flush()

    def close(self):
        sys.stderr.write("\n")
        sys.stderr.flush()


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress_bar(total, desc, enabled):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _TextBar(total, desc)
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr)


def _download(url: str, out, desc: str, show: bool) -> str:
    """Stream `url` into the open file `out`; return the hex SHA-256 of what was written."""
    request = urllib.request.Request(url, headers={"User-Agent": "forgetless"})
    digest = hashlib.sha256()
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        bar = _progress_bar(total, desc, show)
        try:
            while chunk := response.read(_CHUNK):
                try:
                    out.write(chunk)
                except OSError as e:
                    e.needed_bytes = total  # (for the one-line DiskFull)
                    raise
                digest.update(chunk)
                bar.update(len(chunk))
        finally:
            bar.close()
    return digest.hexdigest()


def _reason(error: Exception) -> str:
    return str(getattr(error, "reason", None) or error) or type(error).__name__


def fetch(filename: str, urls: list[str], sha256: str, dest_dir, progress: bool = True) -> Path:
    """Return ``dest_dir/filename`` with SHA-256 `sha256`, downloading it if needed.

    `urls` are tried in turn, after ``$FORGETLESS_MIRROR/filename`` when that variable
    is set. A mirror serving other bytes is skipped. Raises DownloadError when no
    mirror could be reached, DataError when every reachable one served wrong bytes.
    """
    dest_dir = Path(dest_dir)
    target = dest_dir / filename
    if target.is_file() and sha256_file(target) == sha256:
        return target
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{dest_dir}: cannot create download directory ({e.strerror or e})") from None

    mirror = os.environ.get("FORGETLESS_MIRROR")
    if mirror:
        urls = [mirror.rstrip("/") + "/" + filename, *urls]
    show = progress and getattr(sys.stderr, "isatty", lambda: False)()
    failures, mismatched = [], False
    for url in urls:
        try:
            with _atomic_file(target) as out:
                digest = _download(url, out, filename, show)
                if digest != sha256:
                    raise _ChecksumMismatch(f"{url}: SHA-256 {digest[:16]}… instead of {sha256[:16]}…")
            return target
        except DiskFull:
            raise  # (another mirror would not help)
        except _ChecksumMismatch as e:
            failures.append(str(e))
            mismatched = True
        except (OSError, http.client.HTTPException) as e:
            failures.append(f"{url}: {_reason(e)}")
    if mismatched:
        raise DataError(
            f"{filename}: no mirror served the expected file ({'; '.join(failures)}); "
            "the download was corrupted or the file changed upstream"
        )
    raise DownloadError(f"could not download {filename} ({'; '.join(failures)})")

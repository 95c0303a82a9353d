"""Checkpoints after every task: written atomically, verified by checksum, read back safely (no code can run).

A checkpoint holds the model, the optimizer, the strategy's learned state, the RNG states and the
rows of the accuracy matrix so far; it is a ``torch.save`` file loaded with ``weights_only=True``,
so a crafted pickle that would run code is refused.

Integrity is checked positively, before ``torch.load`` sees a byte: next to ``checkpoint.pt`` a
sidecar ``checkpoint.pt.sha256`` lists the SHA-256 of the checkpoint. Saving writes the sidecar
first with both the new and the current checkpoint's hash, then the checkpoint (atomically), then
the sidecar with the new hash alone; whenever a process dies, the checkpoint on disk is one the
sidecar lists. A checkpoint whose hash is not listed (truncated, a flipped byte, a missing sidecar
next to a checkpoint forgetless wrote) is not loaded: a warning says why and that the run starts
over from task 1. A checkpoint without a sidecar and not recorded as forgetless's (written before
checksums existed) is loaded as before, ``weights_only`` still protecting it.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch

from .data.cache import atomic_write_bytes, atomic_write_text, written_by_forgetless
from .errors import UsageError

CHECKPOINT = "checkpoint.pt"
SIDECAR_SUFFIX = ".sha256"
_HEX = re.compile(r"[0-9a-f]{64}")


def sidecar(path: str | Path) -> Path:
    """The file beside a checkpoint that holds its SHA-256 (``checkpoint.pt.sha256``)."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _listed(path: Path) -> set[str] | None:
    """The hashes the sidecar of ``path`` accepts; None without a sidecar."""
    try:
        text = sidecar(path).read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return set()
    return {w for w in text.split() if _HEX.fullmatch(w)}


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` to ``path`` atomically, with its SHA-256 in the sidecar (see the module
    docstring for the order that keeps the pair consistent through a kill or a full disk)."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(state, buf)
    blob = buf.getvalue()
    new = hashlib.sha256(blob).hexdigest()
    old: set[str] = set()
    if path.exists():  # the checkpoint now on disk stays valid until the new one replaces it
        old = _listed(path) or set()
        if not old:  # (no checksum yet: a checkpoint from before checksums)
            try:
                old = {hashlib.sha256(path.read_bytes()).hexdigest()}
            except OSError:
                old = set()
    atomic_write_text(sidecar(path), "\n".join([new, *sorted(old)]) + f"  {path.name}\n")
    atomic_write_bytes(path, blob)
    atomic_write_text(sidecar(path), f"{new}  {path.name}\n")


def load_checkpoint(path: str | Path, quiet: bool = False) -> dict[str, Any] | None:
    """The checkpoint at ``path``; None (with a warning) when it is missing, truncated or corrupt.

    Its SHA-256 is checked against the sidecar before ``torch.load`` reads it; a checkpoint that
    could run code raises a one-line ``UsageError``."""
    path = Path(path)
    if not path.exists():
        return None
    reason = None
    try:
        blob = path.read_bytes()
    except OSError as e:
        blob, reason = None, f"cannot read it: {e.strerror or e}"
    if blob is not None:
        listed = _listed(path)
        if listed is None:
            if written_by_forgetless(path):
                reason = f"its checksum file {sidecar(path).name} is missing"
        elif hashlib.sha256(blob).hexdigest() not in listed:
            reason = (
                f"its SHA-256 does not match {sidecar(path).name}: truncated or corrupt"
                if listed
                else f"{sidecar(path).name} is unreadable"
            )
    if reason is None:
        try:
            state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            if isinstance(state, dict):
                return state
            reason = f"it holds a {type(state).__name__}, not a checkpoint"  # (damaged, without a checksum)
        except pickle.UnpicklingError as e:
            if "weights_only" in str(e) or "Unsupported global" in str(e):
                raise UsageError(
                    f"refusing to load {path}: it holds objects that could run code, not only "
                    f"tensors; delete it if you did not write it"
                ) from None
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        except (
            RuntimeError,
            EOFError,
            zipfile.BadZipFile,
            OSError,
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            AttributeError,
            UnicodeDecodeError,
            OverflowError,
            MemoryError,
        ) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    if not quiet:
        print(
            f"forgetless: warning: ignoring unreadable checkpoint {path} ({reason}); the run restarts "
            f"from task 1 (the beginning)",
            file=sys.stderr,
        )
    return None


__all__ = ["CHECKPOINT", "load_checkpoint", "save_checkpoint", "sidecar"]

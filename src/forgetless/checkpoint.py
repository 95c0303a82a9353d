"""Checkpoints after every task: written atomically, read back safely (no code can run).

A checkpoint holds the model, the optimizer, the strategy's learned state, the RNG states and the
rows of the accuracy matrix so far; it is a ``torch.save`` file loaded with ``weights_only=True``,
so a crafted pickle that would run code is refused.
"""
from __future__ import annotations

import io
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch

from .data.cache import atomic_write_bytes
from .errors import UsageError

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` with torch.save to ``path`` atomically (a crash leaves the old file or the new one)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``; None (with a warning) when it is missing, truncated or corrupt."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise UsageError(f"refusing to load {path}: it holds objects that could run code, not only "
                             f"tensors; delete it if you did not write it") from None
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    print(f"forgetless: warning: ignoring unreadable checkpoint {path} ({reason}); starting over",
          file=sys.stderr)
    return None

"""Importing Keras on demand, with one-line errors that say what to do."""

from __future__ import annotations

import importlib.util
import os
import sys

from ..errors import UsageError

INSTALL = 'pip install "forgetless[keras]"'


def require_keras():
    """The ``keras`` module (Keras 3), or a UsageError naming the install command."""
    try:
        import keras
    except ImportError as e:
        if not _installed():
            raise UsageError(f"Keras 3 is not installed; install it with: {INSTALL}") from None
        backend = os.environ.get("KERAS_BACKEND") or "the one in ~/.keras/keras.json"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(
            f"keras is installed but does not import with backend {backend} ({first}); set "
            "KERAS_BACKEND to an installed backend: torch, jax or tensorflow"
        ) from None
    major = str(getattr(keras, "__version__", "0")).split(".")[0]
    if not major.isdigit() or int(major) < 3:
        raise UsageError(
            f"forgetless needs Keras 3, found keras {getattr(keras, '__version__', '?')}; upgrade with: {INSTALL}"
        )
    return keras


def _installed() -> bool:
    if "keras" in sys.modules and sys.modules["keras"] is None:  # (blocked: as good as absent)
        return False
    try:
        return importlib.util.find_spec("keras") is not None
    except (ImportError, ValueError):
        return False


def require_torch_backend(what: str = "a Keras model inside forgetless's PyTorch loop"):
    """Keras, checked to run on the PyTorch backend (a Keras model is then a torch.nn.Module)."""
    keras = require_keras()
    backend = keras.backend.backend()
    if backend != "torch":
        raise UsageError(
            f"{what} needs KERAS_BACKEND=torch (Keras runs on {backend!r}; the backend is fixed "
            f"when keras is first imported: set KERAS_BACKEND=torch before starting Python, or "
            f"use forgetless.keras's model.fit methods, which run on any backend)"
        )
    return keras

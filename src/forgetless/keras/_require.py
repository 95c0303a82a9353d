"""Importing Keras on demand, with one-line errors that say what to do."""
from __future__ import annotations

import os

from ..errors import UsageError

INSTALL = 'pip install "forgetless[keras]"'


def require_keras():
    """The ``keras`` module (Keras 3), or a UsageError naming the install command."""
    try:
        import keras
    except ImportError:
        raise UsageError(f"Keras 3 is not installed; install it with: {INSTALL}") from None
    major = str(getattr(keras, "__version__", "0")).split(".")[0]
    if not major.isdigit() or int(major) < 3:
        raise UsageError(f"forgetless needs Keras 3, found keras {getattr(keras, '__version__', '?')}; "
                         f"upgrade with: {INSTALL}")
    return keras


def require_torch_backend(what: str = "a Keras model inside forgetless's PyTorch loop"):
    """Keras, checked to run on the PyTorch backend (a Keras model is then a torch.nn.Module)."""
    keras = require_keras()
    backend = keras.backend.backend()
    if backend != "torch":
        raise UsageError(f"{what} needs KERAS_BACKEND=torch (Keras runs on {backend!r}; the backend is fixed "
                         f"when keras is first imported: set KERAS_BACKEND=torch before starting Python, or "
                         f"use forgetless.keras's model.fit methods, which run on any backend)")
    return keras


def env_backend() -> str:
    return os.environ.get("KERAS_BACKEND", "tensorflow")

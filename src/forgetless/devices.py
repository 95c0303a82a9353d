"""Devices, precision and data movement: the only module that knows about CUDA (or MPS).

- ``resolve(spec)``: ``auto`` (``$FORGETLESS_DEVICE`` if set, else CUDA when present, else the CPU),
  ``cpu``, ``cuda``, ``cuda:N``, ``mps`` -> a ``torch.device``, or a one-line UsageError.
- ``put(t, device)``: move a (small, host-made) tensor such as a batch of indices to the device
  without stalling it: pinned memory and a non-blocking copy on CUDA (a plain copy from pageable
  memory would wait for every kernel queued before it).
- ``autocast(device, precision)``: the forward passes and losses of a run in ``float32`` (nothing),
  ``bf16`` or ``fp16`` (``torch.autocast`` on the device's type). Penalties are elementwise and stay
  in float32 under autocast; importance estimates, GEM's QP and evaluation statistics run outside it.
- ``grad_scaler(device, precision)``: ``torch.amp.GradScaler`` for fp16, None otherwise.
- ``optimizer_options(name, device)``: fused kernels where the device has them (one kernel for all
  parameters; with a GradScaler the fused step also skips an overflowed step without asking the
  host), foreach otherwise.
- ``synchronize(device)``: for timing only (benchmarks); the library never waits on the device.
"""
from __future__ import annotations

import contextlib
import os

import torch

from .errors import UsageError

PRECISIONS = ("float32", "bf16", "fp16")
DEVICE_HELP = "auto (CUDA when present, else CPU; $FORGETLESS_DEVICE overrides), cpu, cuda, cuda:N or mps"


def resolve(spec: str | torch.device | None = "auto") -> torch.device:
    """The device a run uses (see the module docstring); a one-line UsageError if it is not here."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        env = os.environ.get("FORGETLESS_DEVICE", "").strip()
        if env and env.lower() != "auto":
            return resolve(env)
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    kind, sep, index = spec.partition(":")
    if kind == "cpu" and not sep:
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec}: this machine has no CUDA device (or this torch build has no "
                             "CUDA support); use --device cpu or auto")
        if not sep:
            return torch.device("cuda", torch.cuda.current_device())
        if not index.isdigit():
            raise UsageError(f"--device {spec!r}: write cuda:N with N a device number, e.g. cuda:0")
        n = torch.cuda.device_count()
        if int(index) >= n:
            raise UsageError(f"--device {spec}: there {'is' if n == 1 else 'are'} {n} CUDA device"
                             f"{'' if n == 1 else 's'} (cuda:0..cuda:{n - 1})")
        return torch.device("cuda", int(index))
    if kind == "mps" and not sep:
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError("--device mps: MPS (Apple GPU) is not available here; use --device cpu or auto")
        return torch.device("mps")
    raise UsageError(f"unknown device {spec!r}; use {DEVICE_HELP}")


def describe(device: torch.device) -> str:
    """A short human name: 'cpu (2 threads)', 'cuda:0 (NVIDIA A100, 80 GiB)'."""
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{device} ({p.name}, {p.total_memory / 2 ** 30:.0f} GiB)"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def put(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; from the host to CUDA through pinned memory, without waiting."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"--precision bf16: {describe(device)} has no bfloat16 support; use fp16 or float32")
    if precision != "float32" and device.type == "mps":
        raise UsageError("--precision: mixed precision on MPS is not supported by forgetless; use float32")


def autocast(device: torch.device, precision: str):
    """The context of a run's forward passes: autocast to bf16/fp16 on the device, or nothing."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def grad_scaler(device: torch.device, precision: str):
    """A GradScaler for fp16 (gradients scaled so that small values survive half precision)."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def optimizer_options(name: str, device: torch.device) -> dict:
    """``fused=True`` where torch has a fused kernel for this optimizer and device, else ``foreach``."""
    if device.type in ("cpu", "cuda") and name in ("sgd", "adam"):
        return {"fused": True}
    if device.type == "mps" and name == "adam":
        return {"fused": True}
    return {"foreach": True}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timing only)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def to_device(obj, device: torch.device):
    """``obj`` (tensors in nested dicts, lists and tuples, as in a strategy's state) on ``device``.
    Checkpoints are read onto the CPU and moved with this, so one saved on a GPU resumes on a CPU
    and the other way round."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def rng_state(device: torch.device) -> dict:
    """The global RNG states a run uses (CPU, and the CUDA device's when it trains there)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state) -> None:
    """Restore ``rng_state`` (also the bare CPU state of older checkpoints); a CUDA state is
    restored only where the run continues on CUDA."""
    if isinstance(state, torch.Tensor):
        torch.set_rng_state(state.cpu())
        return
    torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def compile_model(model: torch.nn.Module) -> None:
    """``torch.compile`` the model's forward in place (``Module.compile``: parameter names and
    state_dict keys stay as they are). Copies of the model (teachers of LwF/iCaRL/BiC) are made
    with ``copy_model``, which drops the compiled call: it is bound to the original module."""
    try:
        model.compile()
    except Exception as e:  # noqa: BLE001 - report any backend failure in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"--compile: torch.compile is not available here ({first}); run without --compile") from None


def copy_model(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` that runs its own forward (never a compiled call of the original)."""
    import copy

    clone = copy.deepcopy(model)
    for m in clone.modules():
        if getattr(m, "_compiled_call_impl", None) is not None:
            m._compiled_call_impl = None
    return clone


__all__ = ["DEVICE_HELP", "PRECISIONS", "autocast", "check_precision", "compile_model", "copy_model", "describe",
           "grad_scaler", "optimizer_options", "put", "resolve", "rng_state", "set_rng_state", "synchronize",
           "to_device"]

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

Several processes (``torchrun --nproc-per-node N -m forgetless run ...``): one run trained
data-parallel with ``torch.distributed`` (gloo on the CPU, NCCL on CUDA).

- ``init_distributed(spec)`` joins the process group torchrun describes (RANK, WORLD_SIZE,
  LOCAL_RANK, MASTER_ADDR/PORT) and returns this process's device: the CPU, or ``cuda:LOCAL_RANK``
  when the device resolves to CUDA (decided here and nowhere else). Without WORLD_SIZE, or with 1,
  it is ``resolve(spec)`` and nothing else. ``rank()``, ``world_size()``, ``is_main()``,
  ``barrier()``, ``broadcast_(tensors)``, ``all_reduce_(tensors)`` / ``all_reduce_mean_`` (one
  flat buffer per dtype, one collective) are no-ops in a single process.
- Every process holds the whole benchmark and the same seeded generators, so it draws the same
  batches, replay samples and exemplars as the others (identical by construction, checked after
  every task with ``check_same``). ``loop.train_step`` runs ``adapt_batch`` on the whole (global)
  batch, then each process takes its contiguous part (``shard``), weighs its loss by
  n_part / n_batch, and ``sync_gradients_`` SUMS the gradients: the gradient of the global batch's
  mean loss. A penalty that depends only on the parameters is then counted once too, since the
  weights add up to 1. The sum happens after backward and before ``after_backward``, so every hook
  (closed-form penalties, GEM/A-GEM projections, SI's path integral) sees the global gradient.
- Why an explicit all-reduce of one flat gradient buffer rather than ``DistributedDataParallel``:
  hooks call autograd on the model themselves (GEM/A-GEM's reference gradients, the importance
  estimators' ``torch.func`` calls), teachers are deep copies of the model, and checkpoints hold
  its state_dict; all of that works on the plain module, while DDP's wrapper expects each forward
  through it to be followed by one backward, prefixes every state_dict key with ``module.`` and
  would have to be unwrapped at every one of those places; the explicit sum also keeps
  ``grad = None`` for a parameter no process has a gradient for, as in one process (Adam then
  leaves it alone). The price is no overlap of the communication with the backward pass: one
  collective per step, after it. Measured on a busy 2-core CPU with gloo, the homework MLP
  (0.8 M parameters, 3.2 MB of gradients): 21 ms a step with 2 processes against 11 ms with one,
  the all-reduce costing about a step; overlap would hide at most the backward's share of it. Where
  that matters (large models on GPUs), DDP's bucketed, overlapped reduction is the next step.
- Batch norm: each process normalizes with the statistics of its part of the batch (torch's
  ``SyncBatchNorm`` is CUDA-only, and one code path on every device is what the CPU tests check);
  the running statistics are averaged over the processes in the same collective as the gradients,
  after every step, so they stay identical everywhere. Models with batch norm therefore match a
  single process only approximately (as with DDP without SyncBatchNorm); models without it
  match to float tolerance.
- Evaluation (``loop.evaluate``): each process scores its contiguous part of every test set and
  the correct counts are summed (one collective per evaluation): the work is split rather than
  repeated (it grows with tasks x test sets), and integer counts lose nothing in the sum.
- Importances: EWC's Fisher and MAS (``distributed=True`` of ``fisher_diagonal`` /
  ``mas_importance``) sum per-sample terms over each process's part of the samples, then over the
  processes, then divide by the total count (sampled Fisher labels are drawn for all samples
  first, as one process draws them). GEM/A-GEM's reference gradients are computed in parts and
  summed before the projection (``replay.memory_loss_grad``). SCP and Hebbian MAS are computed
  whole by every process (the same numbers, the work repeated). SI's and RWalk's path integrals
  need nothing: they see the summed gradient.
- ``together()``: a block every process runs; an error in any of them is raised in all of them
  at its end (rank 0's directory lock and claim, a download on rank 0), so no process waits in a
  collective for one that stopped. ``main_first(fn)``: ``fn`` on rank 0, then on the others.
"""

from __future__ import annotations

import contextlib
import hashlib
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
            raise UsageError(
                f"--device {spec}: this machine has no CUDA device (or this torch build has no "
                "CUDA support); use --device cpu or auto"
            )
        if not sep:
            return torch.device("cuda", torch.cuda.current_device())
        if not index.isdigit():
            raise UsageError(f"--device {spec!r}: write cuda:N with N a device number, e.g. cuda:0")
        n = torch.cuda.device_count()
        if int(index) >= n:
            raise UsageError(
                f"--device {spec}: there {'is' if n == 1 else 'are'} {n} CUDA device"
                f"{'' if n == 1 else 's'} (cuda:0..cuda:{n - 1})"
            )
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
        return f"{device} ({p.name}, {p.total_memory / 2**30:.0f} GiB)"
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
    """A UsageError unless ``precision`` is one of PRECISIONS and the device supports it."""
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
    except Exception as e:  # report any backend failure in one line
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


# ---- several processes (torchrun) -------------------------------------------------------------
def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world_size() -> int:
    """Processes training this run together (1 without a process group)."""
    dist = _dist()
    return dist.get_world_size() if dist is not None else 1


def rank() -> int:
    """This process's rank: the process group's; before it exists, torchrun's RANK when torchrun
    started several processes (so that an error raised that early is printed by rank 0 only); else 0."""
    dist = _dist()
    if dist is not None:
        return dist.get_rank()
    value = os.environ.get("RANK", "0").strip()
    return int(value) if launched_by_torchrun() and value.isdigit() else 0


def is_main() -> bool:
    """True on the process that writes results, logs and checkpoints (rank 0)."""
    return rank() == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise UsageError(f"${name}={value!r} is not a number; start several processes with torchrun")
    return int(value)


def launched_by_torchrun() -> bool:
    """WORLD_SIZE > 1 in the environment: this process is one of several that torchrun started."""
    value = os.environ.get("WORLD_SIZE", "").strip()
    return value.isdigit() and int(value) > 1


def init_distributed(spec: str | torch.device | None = "auto") -> torch.device:
    """Join the process group that torchrun describes and return this process's device.

    WORLD_SIZE unset or 1: ``resolve(spec)``, nothing else. Otherwise gloo when the device is the
    CPU, NCCL when it is CUDA, with every process on ``cuda:LOCAL_RANK`` (``--device cuda`` or
    ``auto``; ``cuda:N`` is refused: each process takes its own GPU; an index in
    $FORGETLESS_DEVICE only says "CUDA"). A process group the caller made already is used as it is.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1 and _dist() is None:
        return resolve(spec)
    text = str(spec or "auto").strip().lower()
    if text.startswith("cuda:"):
        raise UsageError(
            f"--device {text}: under torchrun every process takes the GPU of its LOCAL_RANK; "
            "use --device cuda (or auto)"
        )
    if text == "auto" and os.environ.get("FORGETLESS_DEVICE", "").strip().lower().startswith("cuda"):
        text = "cuda"
    device = resolve(text)
    if device.type == "mps":
        raise UsageError(
            "several processes need CPUs (gloo) or CUDA GPUs (NCCL); MPS has no torch.distributed "
            "backend: use --device cpu, or one process"
        )
    if device.type == "cuda":
        local, n = _env_int("LOCAL_RANK", 0), torch.cuda.device_count()
        if local >= n:
            raise UsageError(
                f"process {local} of this machine has no GPU: there {'is' if n == 1 else 'are'} {n} "
                f"CUDA device{'' if n == 1 else 's'}; use --nproc-per-node {n} or fewer"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if _dist() is None:
        import torch.distributed as dist

        if not dist.is_available():
            raise UsageError("this torch build has no torch.distributed; run one process")
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None
        )
    return device


def shutdown_distributed() -> None:
    """Leave the process group (the CLI does, at the end of a command)."""
    dist = _dist()
    if dist is not None:
        dist.destroy_process_group()


def barrier(timeout: float | None = None) -> None:
    """Wait until every process gets here (``timeout`` seconds at most, then go on)."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return
    if timeout is None:
        dist.barrier()
        return
    import datetime

    with contextlib.suppress(Exception):  # a process that is gone: go on
        dist.barrier(async_op=True).wait(timeout=datetime.timedelta(seconds=timeout))


def leave_after_main(timeout: float = 30.0) -> None:
    """Before a process ends with an error that every process raised: the others wait for rank 0
    (which prints it), since torchrun stops every process as soon as one ends."""
    if _dist() is not None:
        barrier(timeout)
    elif launched_by_torchrun() and not is_main():  # (an error before the process group exists)
        import time

        time.sleep(1.0)


def _by_dtype(tensors):
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    return groups.values()


def _flat_collective(tensors, op) -> None:
    """``op(flat)`` on one flat copy of ``tensors`` per dtype, written back in place."""
    with torch.no_grad():
        for group in _by_dtype(tensors):
            flat = torch.cat([t.reshape(-1) for t in group])
            op(flat)
            i = 0
            for t in group:
                t.copy_(flat[i : i + t.numel()].view_as(t))
                i += t.numel()


def all_reduce_(tensors, mean: bool = False) -> None:
    """Sum (``mean``: average) every tensor over the processes, in place: one flat buffer, one
    collective per dtype. Nothing happens in a single process."""
    tensors = list(tensors)
    dist = _dist()
    if dist is None or dist.get_world_size() == 1 or not tensors:
        return
    n = dist.get_world_size()

    def reduce(flat):
        dist.all_reduce(flat)  # SUM (gloo has no AVG)
        if mean:
            flat.div_(n)

    _flat_collective(tensors, reduce)


def all_reduce_mean_(tensors) -> None:
    """Average ``tensors`` in place over the processes of a distributed run (nothing in a single process)."""
    all_reduce_(tensors, mean=True)


def broadcast_(tensors, src: int = 0) -> None:
    """Every tensor takes rank ``src``'s values, in place (one collective per dtype)."""
    tensors = list(tensors)
    dist = _dist()
    if dist is None or dist.get_world_size() == 1 or not tensors:
        return
    _flat_collective(tensors, lambda flat: dist.broadcast(flat, src))


def shard(n: int) -> slice:
    """This process's contiguous part of ``range(n)``: parts in rank order, sizes differing by at most
    one (some empty when n < processes); all of it in a single process."""
    w, r = world_size(), rank()
    if w == 1:
        return slice(0, n)
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return slice(start, start + base + (1 if r < extra else 0))


def running_stats(model: torch.nn.Module) -> list[torch.Tensor]:
    """The floating running statistics of the model's normalization layers in training mode (batch
    norm's running_mean and running_var): what a forward pass changes and processes must share."""
    from torch.nn.modules.batchnorm import _NormBase

    out = []
    for m in model.modules():
        if isinstance(m, _NormBase) and m.training and m.track_running_stats:
            out += [b for b in (m.running_mean, m.running_var) if b is not None and b.is_floating_point()]
    return out


def sync_gradients_(params, loss: torch.Tensor, stats=()) -> torch.Tensor:
    """After each process's backward on its part of the batch (losses already weighted by
    n_part / n_batch): ``p.grad`` = the SUM over processes, None where no process has a gradient
    (as in one process); ``stats`` (``running_stats``) averaged; returns the summed loss (the global
    batch's). One flat buffer, one collective; the host reads the flags of which gradients exist
    only when this process lacks one. A single process returns ``loss`` untouched."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return loss
    params, stats = list(params), list(stats)
    dtype = torch.float32
    for t in [*params, *stats]:
        dtype = torch.promote_types(dtype, t.dtype)
    device = loss.device
    local = [p.grad is not None for p in params]
    parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dtype) for p in params]
    flags = (
        torch.ones(len(params), dtype=dtype, device=device)
        if all(local)
        else put(torch.tensor(local, dtype=dtype, device="cpu"), device)
    )
    parts += [flags, loss.detach().reshape(1).to(dtype)] + [s.reshape(-1).to(dtype) for s in stats]
    flat = torch.cat(parts)
    dist.all_reduce(flat)
    n_grad = sum(p.numel() for p in params)
    present = local if all(local) else (flat[n_grad : n_grad + len(params)] > 0).tolist()
    i = 0
    for p, keep in zip(params, present):
        n = p.numel()
        if keep:
            g = flat[i : i + n].view(p.shape)
            if p.grad is None:
                p.grad = g.to(p.dtype).clone()
            else:
                p.grad.copy_(g)
        i += n
    i += len(params)
    total = flat[i].to(loss.dtype)
    i += 1
    w = dist.get_world_size()
    for s in stats:
        s.copy_(flat[i : i + s.numel()].view_as(s).div(w))
        i += s.numel()
    return total


def _agree(error: BaseException | None) -> None:
    """Every process calls this at the same point: raise ``error`` here, or, if another process
    failed, a UsageError with its message, so that all of them stop together."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        if error is not None:
            raise error
        return
    message = None if error is None else (str(error) or type(error).__name__)
    messages: list = [None] * dist.get_world_size()
    dist.all_gather_object(messages, message)
    if error is not None:
        raise error
    for r, m in enumerate(messages):
        if m is not None:
            raise UsageError(m if r == 0 else f"process {r}: {m}")


@contextlib.contextmanager
def together():
    """``with together(): ...``: a block every process runs; an error raised in any process's block
    is raised in every process when the block ends (see ``_agree``)."""
    try:
        yield
    except Exception as e:  # handed to every process, then re-raised here
        _agree(e)
    else:
        _agree(None)


def main_first(fn):
    """``fn()`` on rank 0, then on the other processes (a download or a cache filled once); returns
    its value on every process; an error anywhere stops every process."""
    result = None
    with together():
        if is_main():
            result = fn()
    if world_size() > 1:
        with together():
            if not is_main():
                result = fn()
    return result


def fingerprint(obj) -> str:
    """A digest of tensors and plain values in nested dicts, lists and tuples (bit-exact)."""
    h = hashlib.blake2b(digest_size=16)

    def walk(o):
        if isinstance(o, torch.Tensor):
            t = o.detach().reshape(-1).contiguous().cpu()
            h.update(f"{t.dtype}{tuple(o.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(o, dict):
            for k, v in o.items():
                h.update(repr(k).encode())
                walk(v)
        elif isinstance(o, (list, tuple)):
            h.update(b"[")
            for v in o:
                walk(v)
            h.update(b"]")
        else:
            h.update(repr(o).encode())

    walk(obj)
    return h.hexdigest()


def check_same(what: str, obj) -> None:
    """Raise a UsageError on every process if ``obj`` (see ``fingerprint``) differs between them."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return
    digests: list = [None] * dist.get_world_size()
    dist.all_gather_object(digests, fingerprint(obj))
    differ = [r for r, d in enumerate(digests) if d != digests[0]]
    if differ:
        raise UsageError(f"the processes disagree on {what} (process {differ[0]} differs from process 0)")


__all__ = [
    "DEVICE_HELP",
    "PRECISIONS",
    "all_reduce_",
    "all_reduce_mean_",
    "autocast",
    "barrier",
    "broadcast_",
    "check_precision",
    "check_same",
    "compile_model",
    "copy_model",
    "describe",
    "fingerprint",
    "grad_scaler",
    "init_distributed",
    "is_main",
    "launched_by_torchrun",
    "leave_after_main",
    "main_first",
    "optimizer_options",
    "put",
    "rank",
    "resolve",
    "rng_state",
    "running_stats",
    "set_rng_state",
    "shard",
    "shutdown_distributed",
    "sync_gradients_",
    "synchronize",
    "to_device",
    "together",
    "world_size",
]

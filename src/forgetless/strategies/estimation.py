"""Shared plumbing of the importance estimators (``fisher.py``, ``mas.py``, ``scp.py``).

Every estimator returns a list of tensors shaped like the model's trainable parameters (in
``model.parameters()`` order). Per-sample gradients use ``torch.func`` (``functional_call`` +
``vmap``) in chunks that bound memory (``auto_chunk``). The model is put in eval mode while
importance is computed (dropout off, batch norm on its running statistics) and restored afterwards
(``eval_mode``).

``classes`` is the LongTensor of output indices that compete for the task (from
``Benchmark.active_outputs``): the estimators see ``logits[:, classes]`` and the labels are mapped
to positions within ``classes`` (``positions``). ``None`` means every output.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.func import functional_call

from ..devices import copy_model
from ..errors import UsageError

CHUNK_FLOATS = 1 << 22  # per-sample gradients held at once: 2^22 floats = 16 MB (measured fastest on CPU)


def trainable(model: nn.Module) -> list[torch.nn.Parameter]:
    """The model's parameters that require a gradient, in order."""
    return [p for p in model.parameters() if p.requires_grad]


def split(model: nn.Module):
    """(names, detached trainable tensors, frozen dict of other parameters and buffers, the module
    to give ``functional_call``).

    A module reachable under two names (``nn.Sequential(shared, act, shared)``) makes torch's
    ``functional_call`` restore the wrong tensor on exit (the model's parameters are left replaced,
    with requires_grad off); such models are called through a deep copy (in eval mode) instead.
    """
    names, params, frozen = [], [], {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            names.append(name)
            params.append(p.detach())
        else:
            frozen[name] = p.detach()
    frozen.update(dict(model.named_buffers()))
    if not params:
        raise UsageError("the model has no trainable parameters: there is nothing to protect")
    target = model
    if len(list(model.named_modules(remove_duplicate=False))) != len(list(model.named_modules())):
        target = copy_model(model).eval()
    return names, tuple(params), frozen, target


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """A context in which the model is in eval mode; its previous mode is restored after."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def auto_chunk(params, per_sample: int = 1, cap: int = 256) -> int:
    """Samples per vmap chunk: ``per_sample`` gradients of every parameter within CHUNK_FLOATS."""
    n = sum(p.numel() for p in params) * per_sample
    return max(1, min(cap, CHUNK_FLOATS // max(n, 1)))


def default_generator(generator: torch.Generator | None) -> torch.Generator:
    """``generator``, or a new one seeded with 0 when it is None (estimates are reproducible)."""
    return generator if generator is not None else torch.Generator().manual_seed(0)


def subsample(x, y, samples: int | None, generator: torch.Generator | None):
    """The first ``samples`` of a generator-seeded permutation (all data when None or larger)."""
    n = len(x)
    if samples is None or samples >= n:
        return x, y
    samples = int(samples)
    if samples < 1:
        raise UsageError(f"samples must be >= 1 (or None for all), got {samples}")
    idx = torch.randperm(n, generator=default_generator(generator), device="cpu")[:samples].to(x.device)
    return x[idx], (None if y is None else y[idx])


def positions(y: torch.Tensor, classes: torch.Tensor | None, n_out: int) -> torch.Tensor:
    """Labels (output indices) -> positions within ``classes``."""
    if classes is None:
        return y
    lookup = torch.full((n_out,), -1, dtype=torch.long, device=y.device)
    lookup[classes] = torch.arange(len(classes), device=y.device)
    pos = lookup[y]
    if bool((pos < 0).any()):
        bad = sorted(set(y[pos < 0].tolist()))
        raise UsageError(f"labels {bad} are not among the competing outputs {classes.tolist()}")
    return pos


def sample_fn(model, names, frozen, classes):
    """f(params, x) -> the (selected) logits of ONE sample x (no batch dimension)."""

    def f(params, x):
        out = functional_call(model, (dict(zip(names, params)), frozen), (x.unsqueeze(0),))[0]
        return out if classes is None else out[classes]

    return f


def batch_fn(model, names, frozen, classes):
    """f(params, x) -> the (selected) logits of a batch x."""

    def f(params, x):
        out = functional_call(model, (dict(zip(names, params)), frozen), (x,))
        return out if classes is None else out[:, classes]

    return f


def as_long(classes) -> torch.Tensor | None:
    """Class indices as a LongTensor (None stays None)."""
    if classes is None:
        return None
    if isinstance(classes, torch.Tensor):
        return classes.long().flatten()
    return torch.tensor(list(classes), dtype=torch.long, device="cpu").flatten()

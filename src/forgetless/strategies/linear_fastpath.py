"""The nn.Linear fast path of the importance estimators (Fisher, MAS).

A Linear's per-sample gradient is the outer product ``delta_n a_n^T`` of the gradient at its output
(delta) and its input (a), so sums over samples of squared (or absolute) per-sample gradients are
single matrix products: no per-sample tensors, same numbers (~50x faster than ``torch.func`` on an
MLP; ``benchmarks/importance_speed.py``). It applies when every trainable parameter sits in an
``nn.Linear`` layer, each called once per forward on a [batch, features] input (``choose``).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..errors import UsageError

BACKENDS = ("auto", "vmap", "linear")


def linear_layers(model: nn.Module) -> list[nn.Linear] | None:
    """The nn.Linear layers when they hold every trainable parameter, else None."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    owned = {id(p) for m in linears for p in m.parameters(recurse=False)}
    if any(p.requires_grad and id(p) not in owned for p in model.parameters()):
        return None
    return linears


@contextlib.contextmanager
def tap(linears):
    """Record (layer, input, output, output version) of every Linear call."""
    records: list = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: records.append((mod, inp[0], out, out._version))) for m in linears
    ]
    try:
        yield records
    finally:
        for h in hooks:
            h.remove()


def choose(model: nn.Module, x: torch.Tensor, backend: str) -> list[nn.Linear] | None:
    """The Linear layers if the fast path applies (``backend`` auto/linear), None for vmap.

    The fast path needs: every trainable parameter in an nn.Linear, each Linear called once per
    forward on a [batch, features] input, its output not modified in place (``ReLU(inplace=True)``),
    and samples that do not interact within a batch (true in eval mode for the usual layers).
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "vmap":
        return None
    linears = linear_layers(model)
    ok = bool(linears)
    if ok:
        with tap(linears) as rec, torch.no_grad():
            model(x[:2])
        ok = (
            len({id(r[0]) for r in rec}) == len(rec)
            and all(r[1].dim() == 2 for r in rec)
            and all(r[2]._version == r[3] for r in rec)
        )
    if not ok and backend == "linear":
        raise UsageError(
            "backend='linear' needs a model whose trainable parameters are all in nn.Linear "
            "layers, each called once on [batch, features] inputs; use backend='auto'"
        )
    return linears if ok else None


def accumulate(acc: dict, records, out_grads, kind: str, weight: torch.Tensor | None = None) -> None:
    """Add ``sum_n w_n (delta_n a_n^T)^2 = (w delta^2)^T a^2`` (``kind="square"``) or
    ``sum_n |delta_n a_n^T| = |delta|^T |a|`` (``kind="abs"``) to ``acc[id(weight)]``, and the
    matching bias terms; ``out_grads`` are the gradients at the recorded layers' outputs."""
    for (mod, a, _, _), d in zip(records, out_grads):
        if d is None:  # this layer does not reach the quantity
            continue
        a = a.detach()
        D, A = (d * d, a * a) if kind == "square" else (d.abs(), a.abs())
        if weight is not None:
            D = D * weight[:, None]
        if mod.weight.requires_grad:
            acc[id(mod.weight)] += D.T @ A
        if mod.bias is not None and mod.bias.requires_grad:
            acc[id(mod.bias)] += D.sum(0)

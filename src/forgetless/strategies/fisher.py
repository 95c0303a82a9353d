"""The diagonal Fisher information (EWC's Omega): one switch over which labels enter the log-likelihood.

``fisher_targets`` turns ``labels`` into (targets, weights) per sample; one accumulation path
(``torch.func`` per-sample gradients, or the nn.Linear fast path of ``linear_fastpath.py``) then
computes ``mean_n sum_k w_nk (d log p(t_nk | x_n) / d theta)^2`` for every choice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jacrev, vmap

from .. import devices
from ..errors import UsageError
from . import linear_fastpath as lin
from .estimation import (
    as_long,
    auto_chunk,
    batch_fn,
    default_generator,
    eval_mode,
    positions,
    sample_fn,
    split,
    subsample,
    trainable,
)

LABELS = ("empirical", "sample", "exact")


def fisher_targets(
    labels: str, probs: torch.Tensor | None, y: torch.Tensor | None, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets [B, K], weights [B, K]): the classes whose log-likelihood enters the Fisher, and
    their weights, for each of B samples.

    - ``"empirical"``: the true label y_n (positions within the competing classes), weight 1 (K = 1);
    - ``"sample"``: one c ~ p(. | x_n) drawn with ``generator``, weight 1 (K = 1);
    - ``"exact"``: every competing class c, weight p(c | x_n) (K = number of classes).

    ``probs`` [B, C] is p(. | x) over the competing classes (unused for "empirical").
    """
    if labels == "empirical":
        return y[:, None], torch.ones(len(y), 1, device=y.device)
    if labels == "sample":
        # drawn on the CPU with the run's (CPU) generator: the same labels on every device
        drawn = torch.multinomial(probs.float().cpu(), 1, generator=generator).to(probs.device)
        return drawn, torch.ones(drawn.shape, dtype=probs.dtype, device=probs.device)
    if labels == "exact":
        B, C = probs.shape
        return torch.arange(C, device=probs.device).expand(B, C), probs
    raise UsageError(f"unknown Fisher labels {labels!r}; choose one of: {', '.join(LABELS)}")


def fisher_diagonal(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    classes=None,
    labels: str = "empirical",
    samples: int | None = None,
    chunk: int | None = None,
    generator: torch.Generator | None = None,
    backend: str = "auto",
    distributed: bool = False,
) -> list[torch.Tensor]:
    """Diagonal Fisher information ``F = mean_n E_c[ (d log p(c | x_n) / d theta)^2 ]``.

    EWC (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural networks", PNAS):
    squared PER-SAMPLE gradients of the log-likelihood, averaged over samples (not the square of the
    batch-mean gradient, which is a different and much smaller quantity). ``labels`` chooses c
    (``fisher_targets``): ``"empirical"`` the true label y_n (the "empirical Fisher"; needs ``y``);
    ``"sample"`` one c ~ p(. | x_n) per sample drawn with ``generator`` (an unbiased Monte-Carlo
    estimate of the true Fisher); ``"exact"`` the expectation ``sum_c p(c | x_n) g_c^2`` over every
    competing class (the true Fisher's diagonal).

    ``samples`` caps the count (the first N of a ``generator``-seeded permutation). No constant:
    the 1/2 of EWC's penalty is in ``lam`` (see ``penalty.py``). ``backend``: ``"vmap"`` computes
    per-sample gradients with ``torch.func`` (any module); ``"linear"`` uses the outer-product form of
    nn.Linear layers (same numbers, no per-sample tensors, 23-27x faster than a per-sample loop and
    29-43x faster than vmap on the 1024-512-256 MLP, see benchmarks/importance_speed.py); ``"auto"``
    takes the latter when the model allows it.

    ``distributed=True`` with several processes (every one of them must call it, with the same
    arguments): each process takes its contiguous part of the (subsampled) samples, and the sums of
    per-sample terms are added over the processes before the division by the total count, so every
    process gets one process's estimate (to float summation order). For ``labels="sample"`` the
    labels of all samples are drawn first, chunk by chunk as one process draws them, so they are
    the same labels.
    """
    if labels not in LABELS:
        raise UsageError(f"unknown Fisher labels {labels!r}; choose one of: {', '.join(LABELS)}")
    if labels == "empirical" and y is None:
        raise UsageError("the empirical Fisher needs the labels y")
    classes = as_long(classes)
    gen = default_generator(generator)
    x, y = subsample(x, y, samples, gen)
    names, params, frozen, fmodel = split(model)
    f = sample_fn(fmodel, names, frozen, classes)
    fb = batch_fn(fmodel, names, frozen, classes)
    n = len(x)
    keys = [id(p) for p in trainable(model)]  # the real parameters (``params`` are detached copies)
    acc = {k: torch.zeros_like(p) for k, p in zip(keys, params)}
    with eval_mode(model):
        linears = lin.choose(model, x, backend)
        with torch.no_grad():
            n_out = batch_fn(fmodel, names, frozen, None)(params, x[:1]).shape[1]
        n_cls = n_out if classes is None else len(classes)
        per_sample = n_cls if labels == "exact" else 1
        size = chunk or (1024 if linears is not None else auto_chunk(params, per_sample))
        rows, drawn = slice(0, n), None
        if distributed and devices.world_size() > 1:
            rows = devices.shard(n)
            if labels == "sample":
                drawn = _draw_sampled(model, fb, params, linears, x, classes, size, gen)
        for i in range(rows.start, rows.stop, size):
            j = min(i + size, rows.stop)
            xc = x[i:j]
            yc = positions(y[i:j], classes, n_out) if labels == "empirical" else None
            given = None if drawn is None else (drawn[0][i:j], drawn[1][i:j])
            if linears is not None:
                _linear_chunk(acc, model, linears, xc, yc, classes, labels, gen, given)
            else:
                if given is not None:
                    targets, weights = given
                else:
                    probs = None
                    if labels != "empirical":
                        with torch.no_grad():
                            probs = F.softmax(fb(params, xc), -1)  # [B, C]
                    targets, weights = fisher_targets(labels, probs, yc, gen)
                _vmap_chunk(acc, keys, f, params, xc, targets, weights, n_cls)
    if distributed:
        devices.all_reduce_(list(acc.values()))
    return [acc[k] / n for k in keys]


def _draw_sampled(model, fb, params, linears, x, classes, size: int, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets, weights) of ``labels="sample"`` for every sample, drawn chunk by chunk with the
    probabilities one process computes for each chunk (the same draws from ``gen``)."""
    targets, weights = [], []
    with torch.no_grad():
        for i in range(0, len(x), size):
            xc = x[i : i + size]
            if linears is not None:
                out = model(xc)
                probs = F.softmax(out if classes is None else out[:, classes], -1)
            else:
                probs = F.softmax(fb(params, xc), -1)
            t, w = fisher_targets("sample", probs, None, gen)
            targets.append(t)
            weights.append(w)
    return torch.cat(targets), torch.cat(weights)


def _vmap_chunk(acc, keys, f, params, xc, targets, weights, n_cls: int) -> None:
    """``acc += sum_n sum_k w_nk g_nk^2``, g_nk the gradient of log p(t_nk | x_n): one Jacobian row
    per target via ``vmap(jacrev)``. The targets pick their log-probabilities through a one-hot
    matrix product (``gather`` with per-sample indices under vmap is 2x slower for the exact Fisher)."""
    onehot = F.one_hot(targets, n_cls).to(params[0].dtype)  # [B, K, C]
    J = vmap(jacrev(lambda p, xi, oi: oi @ F.log_softmax(f(p, xi), -1)), in_dims=(None, 0, 0))(
        params, xc, onehot
    )  # per parameter: [B, K, *shape]
    for k, j in zip(keys, J):
        acc[k] += torch.einsum("bk,bk...->...", weights.to(j), j.square_())  # in place: no second copy of J


def _linear_chunk(acc, model, linears, xc, yc, classes, labels, gen, given=None) -> None:
    """The same sum with the Linear fast path: one backward per target column k, the squared
    outer products weighted by w_nk (``linear_fastpath.accumulate``); ``given``: (targets,
    weights) drawn beforehand (``_draw_sampled``)."""
    with lin.tap(linears) as rec, torch.enable_grad():
        out = model(xc)
        logits = out if classes is None else out[:, classes]
        logp = F.log_softmax(logits, -1)
        if given is not None:
            targets, weights = given
        else:
            probs = None if labels == "empirical" else F.softmax(logits.detach(), -1)
            targets, weights = fisher_targets(labels, probs, yc, gen)
        zs = [r[2] for r in rec]
        K = targets.shape[1]
        for k in range(K):
            value = logp.gather(1, targets[:, k : k + 1]).sum()
            d = torch.autograd.grad(value, zs, retain_graph=k < K - 1, allow_unused=True)
            lin.accumulate(acc, rec, d, "square", weights[:, k].to(logp))

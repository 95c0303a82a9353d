"""Memory Aware Synapses' importance (Aljundi et al. 2018, ECCV) and its local Hebbian form."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import grad, vmap

from .. import devices
from ..errors import UsageError
from . import linear_fastpath as lin
from .estimation import as_long, auto_chunk, eval_mode, sample_fn, split, trainable


def mas_importance(
    model: nn.Module,
    x: torch.Tensor,
    *,
    classes=None,
    chunk: int | None = None,
    backend: str = "auto",
    distributed: bool = False,
) -> list[torch.Tensor]:
    """MAS: ``Omega = mean_n | d ||f(x_n)||_2^2 / d theta |``.

    Aljundi et al. 2018, "Memory Aware Synapses: Learning what (not) to forget", ECCV, eq. 2-4: the
    gradient of the SQUARED L2 norm of the network output for each sample, its absolute value, then
    the mean over samples (per sample, as in the paper; the authors' code takes |.| of the gradient
    of a whole mini-batch's summed norm, a cheaper approximation). The output is the logits
    (pre-softmax) restricted to the competing outputs ``classes``, so the heads of other tasks get
    zero importance. Needs no labels. ``backend`` and ``distributed`` (each process sums its part
    of the samples, the sums are added over the processes) as for ``fisher_diagonal``.
    """
    classes = as_long(classes)
    names, params, frozen, fmodel = split(model)
    f = sample_fn(fmodel, names, frozen, classes)
    keys = [id(p) for p in trainable(model)]  # the real parameters (``params`` are detached copies)
    acc = {k: torch.zeros_like(p) for k, p in zip(keys, params)}
    with eval_mode(model):
        linears = lin.choose(model, x, backend)
        size = chunk or (1024 if linears is not None else auto_chunk(params))
        rows = devices.shard(len(x)) if distributed else slice(0, len(x))
        for i in range(rows.start, rows.stop, size):
            xc = x[i : min(i + size, rows.stop)]
            if linears is not None:
                with lin.tap(linears) as rec, torch.enable_grad():
                    out = model(xc)
                    sq = (out if classes is None else out[:, classes]).square().sum()
                    d = torch.autograd.grad(sq, [r[2] for r in rec], allow_unused=True)
                lin.accumulate(acc, rec, d, "abs")
                continue
            G = vmap(grad(lambda p, xi: f(p, xi).square().sum()), in_dims=(None, 0))(params, xc)
            for k, g in zip(keys, G):
                acc[k] += g.abs().sum(0)
    if distributed:
        devices.all_reduce_(list(acc.values()))
    return [acc[k] / len(x) for k in keys]


# activation functions a Linear's output may pass through (their autograd node names)
_ELEMENTWISE = {
    "ReluBackward0",
    "ReluBackward1",
    "TanhBackward0",
    "SigmoidBackward0",
    "GeluBackward0",
    "EluBackward0",
    "LeakyReluBackward0",
    "SiluBackward0",
    "HardtanhBackward0",
    "SoftplusBackward0",
    "MishBackward0",
    "HardswishBackward0",
    "HardsigmoidBackward0",
    "ThresholdBackward0",
    "ThresholdBackward1",
    "CeluBackward0",
    "SeluBackward0",
    "PreluBackward0",
}


def mas_hebbian(model: nn.Module, x: torch.Tensor, *, classes=None, chunk: int | None = None) -> list[torch.Tensor]:
    """Local (Hebbian) MAS: per ``nn.Linear``, ``Omega_ij = mean_n |y_i(x_n) x_j(x_n)|``, bias ``mean_n |y_i|``.

    Aljundi et al. 2018, section "Connection to Hebbian learning": MAS applied locally to one layer,
    with the squared norm of that layer's output, gives an importance proportional to the
    co-activation of the pre-synaptic input x_j and the post-synaptic output y_i (for ReLU the
    local gradient is exactly 2 y_i x_j; we drop the 2 - the scale lives in lam). y_i is the
    neuron's output AFTER its activation function when one follows the layer (found through the
    autograd graph, so ``nn.ReLU`` modules and ``F.relu`` calls both work); the output layer's
    y_i are the logits, and with ``classes`` its rows of non-competing outputs get zero.

    Only for models whose trainable parameters all belong to ``nn.Linear`` layers; others raise
    UsageError.
    """
    classes = as_long(classes)
    linears = lin.linear_layers(model)
    if linears is None:
        raise UsageError(
            "MAS with hebbian=true needs a model whose trainable parameters are all in nn.Linear "
            f"layers (and activations); {type(model).__name__} has others: use hebbian=false"
        )
    params = trainable(model)
    acc = {id(p): torch.zeros_like(p) for p in params}
    size = chunk or 1024
    with eval_mode(model), torch.enable_grad():
        for i in range(0, len(x), size):
            with lin.tap(linears) as records:
                out = model(x[i : i + size])
                for k, (mod, pre, z, _) in enumerate(records):
                    post = _post_activation(z, [r[1] for r in records[k + 1 :]] + [out])
                    pre2 = pre.detach().reshape(-1, pre.shape[-1]).abs()
                    post2 = post.detach().reshape(-1, post.shape[-1]).abs()
                    if classes is not None and (post is out or z is out):
                        keep = post2.new_zeros(post2.shape[1])
                        keep[classes] = 1
                        post2 = post2 * keep
                    if mod.weight.requires_grad:
                        acc[id(mod.weight)] += post2.T @ pre2
                    if mod.bias is not None and mod.bias.requires_grad:
                        acc[id(mod.bias)] += post2.sum(0)
    return [acc[id(p)] / len(x) for p in params]


def _post_activation(z: torch.Tensor, consumers: list[torch.Tensor]) -> torch.Tensor:
    """The activation of ``z`` among the tensors fed onward (z itself when none is found)."""
    for u in consumers:
        if u is z:
            return z
        fn = u.grad_fn
        if (
            fn is not None
            and type(fn).__name__ in _ELEMENTWISE
            and fn.next_functions
            and fn.next_functions[0][0] is z.grad_fn
        ):
            return u
    return z

"""Sliced Cramér Preservation's importance (Kolouri et al. 2020, ICLR)."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import vjp, vmap

from ..errors import UsageError
from .estimation import as_long, batch_fn, default_generator, eval_mode, split


def scp_importance(
    model: nn.Module,
    x: torch.Tensor,
    *,
    classes=None,
    slices: int = 50,
    generator: torch.Generator | None = None,
    chunk: int | None = None,
) -> list[torch.Tensor]:
    """Sliced Cramér Preservation: ``Gamma = (1/L) sum_l (d <xi_l, phi_bar> / d theta)^2``.

    Kolouri et al. 2020, "Sliced Cramér Synaptic Consolidation for Preserving Deeply Learned
    Representations", ICLR. Sources ("code" = Kolouri's ``SCP.consolidate``,
    ``utils/scp_utils/scp.py``, as shipped in lihr04/corel2m):

    - phi_bar = mean_n f(x_n), the mean output (logits on ``classes``) over the task's data,
      averaged BEFORE the projection (code: ``zmean`` then one backward per slice);
    - xi_1..xi_L uniform random unit vectors of S^{K-1} (paper; drawn with ``generator`` as
      normalized Gaussians). The code means the same (its comment: sample S^{K-1}) but normalizes
      the rows of its K x L Gaussian matrix and uses the columns, so its slices have norm about
      sqrt(K / L), not 1: a near-constant factor on Gamma, absorbed in lam; we follow the paper;
    - each slice's gradient squared, then averaged over slices (code). The code also divides by the
      dataset size; we do not (a constant, absorbed in lam).
    """
    if slices < 1:
        raise UsageError(f"SCP needs slices >= 1, got {slices}")
    classes = as_long(classes)
    names, params, frozen, fmodel = split(model)
    fb = batch_fn(fmodel, names, frozen, classes)
    n = len(x)
    size = chunk or 1024
    with eval_mode(model):
        with torch.no_grad():
            K = fb(params, x[:1]).shape[1]
        # on the CPU (the run's generator)
        xi = torch.randn(slices, K, generator=default_generator(generator), device="cpu")
        xi = (xi / xi.norm(dim=1, keepdim=True)).to(params[0])
        # project now (fewer slices than outputs), or build the Jacobian and project after
        cot = xi if slices <= K else torch.eye(K, device=params[0].device, dtype=params[0].dtype)
        acc = [p.new_zeros(len(cot), *p.shape) for p in params]
        for i in range(0, n, size):
            xc = x[i : i + size]
            _, pull = vjp(lambda *p, xc=xc: fb(p, xc).sum(0), *params)
            for a, g in zip(acc, vmap(pull)(cot)):
                a += g
    out = []
    for a in acc:
        g = a / n  # gradient of the projected MEAN output, one row per slice (or per output)
        if slices > K:
            g = torch.tensordot(xi, g, dims=1)
        out.append((g * g).mean(0))
    return out

"""Test oracles: plain-loop reference computations for the vectorized importance estimators
(tests and benchmarks only; not library code)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from forgetless.strategies.estimation import as_long, eval_mode, trainable


def per_sample_grads_loop(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, classes=None, target: str = "logp"
) -> list[torch.Tensor]:
    """Per-sample gradients with a plain Python loop and ``torch.autograd.grad``: the oracle for the
    vectorized estimators. Returns one [N, *shape] tensor per trainable parameter.

    ``target``: ``"logp"`` (log p(y_n | x_n) over ``classes``), ``"sqnorm"`` (||f(x_n)||^2) or an
    int c (log p(c | x_n), with c a position within ``classes``).
    """
    classes = as_long(classes)
    if classes is not None:
        classes = classes.to(x.device)  # compared with y on the data's device below
    params = trainable(model)
    rows = []
    with eval_mode(model):
        for i in range(len(x)):
            out = model(x[i : i + 1])[0]
            if classes is not None:
                out = out[classes]
            if target == "sqnorm":
                value = out.square().sum()
            else:
                logp = F.log_softmax(out, -1)
                if isinstance(target, int):
                    c = target
                else:
                    c = int(y[i]) if classes is None else int((classes == y[i]).nonzero()[0, 0])
                value = logp[c]
            rows.append(torch.autograd.grad(value, params))
    return [torch.stack([r[k] for r in rows]) for k in range(len(params))]

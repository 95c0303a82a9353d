"""HAT, hard attention to the task (Serra, Suris, Miron & Karatzoglou, "Overcoming Catastrophic
Forgetting with Hard Attention to the Task", ICML 2018; the authors' code: joansj/hat).

Every hidden layer l of the MLP gets, per task t, an embedding e_t^l (one value per unit, drawn from
N(0, 1) like ``nn.Embedding``) and a gate a_t^l = sigmoid(s * e_t^l) multiplying the layer's
output (after the ReLU). The notation below follows the paper (its equations in brackets).

- Annealing [eq. 3]: in training, s = 1/s_max + (s_max - 1/s_max) * (b - 1)/(B - 1) for batch
  b = 1..B of an epoch (B = ceil(n_train / batch_size); s = s_max when B = 1); s = s_max to test.
- Cumulative attention [after eq. 2]: after task t, a_{<=t}^l = max(a_{<=t-1}^l, a_t^l), the
  gates taken at s = s_max.
- Gradient conditioning [eq. 2]: while training task t > 1, the gradient of the weight from unit
  i of layer l-1 to unit j of layer l is multiplied by 1 - min(a_{<t,j}^l, a_{<t,i}^{l-1}) (the
  first layer: 1 - a_{<t,j}^1; a bias: 1 - a_{<t,j}^l). The output layer is not conditioned:
  in task-IL every task has its own outputs (the paper's separate heads).
- Attention regulariser [eq. 4], added to the loss: c * sum_l sum_i a_{t,i}^l (1 - a_{<t,i}^l)
  / sum_l sum_i (1 - a_{<t,i}^l) (task 1: c * sum a / number of units).
- Embedding gradient compensation [eq. 5]: the gradient of e_t is multiplied by
  s_max [cosh(s e_t) + 1] / (s [cosh(e_t) + 1]), the argument s e_t clamped to
  [-cosh_clamp, cosh_clamp] (the authors' code: 50) so that cosh does not overflow.
- Then the gradient norm of every parameter (model and embeddings) is clipped to ``clipgrad``
  (10,000), and after the optimizer step the embeddings are clamped to [-emb_clamp, emb_clamp]
  (6): both from the authors' code.

Defaults: s_max = 400 and c = 0.75, the values the paper chose by grid search. The paper trains
with plain SGD (lr 0.05); with it, a weight whose conditioned gradient is exactly 0 cannot move.
With momentum, weight decay or Adam (forgetless's default) the optimizer's state could still move
it, so here every weight whose factor 1 - min(...) is exactly 0 (units fully taken by earlier
tasks) and the output rows of earlier tasks are put back after each step: identical to the paper
with plain SGD, and the same protection with any other optimizer.

Supported models: forgetless's MLP with at least one hidden layer. The gates act through forward
hooks on the MLP's ReLU modules; task t's embeddings are trained by an optimizer of the run's kind
and settings (fresh at every task, following the run's learning rate), and are part of the
strategy's state. Evaluation runs the model once per task with that task's gates and takes each
task's outputs from its own pass. A training batch is gated with the current task's gates, all
of it: composing HAT with replay (old tasks' samples in the batch) is not what the paper does.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from .base import Param
from .pnn import TaskIsolation, mlp_parts


def gates(emb: list[torch.Tensor], s: float) -> list[torch.Tensor]:
    """a^l = sigmoid(s * e^l) for every layer l."""
    return [torch.sigmoid(s * e) for e in emb]


def attention_regulariser(a: list[torch.Tensor], cum: list[torch.Tensor] | None) -> torch.Tensor:
    """sum_l sum_i a_i (1 - cum_i) / sum_l sum_i (1 - cum_i); with no earlier task: the mean gate."""
    if cum is None:
        return sum(g.sum() for g in a) / sum(g.numel() for g in a)
    num = sum((g * (1 - c)).sum() for g, c in zip(a, cum))
    den = sum((1 - c).sum() for c in cum)
    return num / den.clamp_min(1e-12)  # (every unit taken: the numerator is 0 as well)


def conditioning(cum: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight factor [out, in], bias factor [out]) of every hidden layer: 1 - min(cum_out, cum_in)."""
    out = []
    for k, c in enumerate(cum):
        w = c.view(-1, 1) if k == 0 else torch.minimum(c.view(-1, 1), cum[k - 1].view(1, -1))
        out.append((1 - w, 1 - c))
    return out


def compensation(e: torch.Tensor, s: float, smax: float, clamp: float) -> torch.Tensor:
    """s_max [cosh(clamp(s e)) + 1] / (s [cosh(e) + 1]): the factor of the embeddings' gradient."""
    return smax / s * (torch.cosh((s * e).clamp(-clamp, clamp)) + 1) / (torch.cosh(e) + 1)


class HAT(TaskIsolation):
    """Hard attention to the task (see the module docstring for the formulas)."""

    name = "hat"
    help = "HAT: per-task sigmoid gates on the hidden units, gradients of earlier tasks' units masked (task-IL)"
    params = {
        "smax": Param(400.0, ">=1", "s_max, the final slope of the gates (paper: 400)"),
        "c": Param(0.75, ">=0", "strength of the attention regulariser (paper: 0.75)"),
        "clipgrad": Param(10000.0, ">0", "the gradients' norm is clipped to this (authors' code: 10000)"),
        "emb_clamp": Param(6.0, ">0", "embeddings are clamped to [-this, this] after each step (authors' code: 6)"),
        "cosh_clamp": Param(
            50.0, ">0", "s*e is clamped to [-this, this] in the gradient compensation (authors' code: 50)"
        ),
    }

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.emb_: list[list[torch.Tensor]] | None = None  # [task][layer] embeddings
        self.cum_: list[torch.Tensor] | None = None  # cumulative attention of the tasks trained so far
        self._gates: list[torch.Tensor] | None = None  # the gates of the next forward passes
        self._s = 1.0
        self._opt = None
        self._hooks: tuple[nn.Module, list[Any]] | None = None
        self._saved: list[torch.Tensor] = []

    # ---- the model ---------------------------------------------------------------------------
    def _parts(self, model):
        _, linears = mlp_parts(model, self.name)
        if len(linears) < 2:
            raise UsageError("hat needs an MLP with at least one hidden layer (e.g. --model mlp:400,400)")
        relus = [m for m in model.net if isinstance(m, nn.ReLU)]
        return linears, relus

    def _attach(self, ctx) -> None:
        model = ctx.model
        linears, relus = self._parts(model)
        if self.emb_ is None:
            with torch.inference_mode(False):  # (may be made first by an evaluation)
                self.emb_ = [
                    [torch.randn(lin.out_features, device=ctx.device) for lin in linears[:-1]]
                    for _ in ctx.benchmark.tasks
                ]
        if self._hooks is None or self._hooks[0] is not model:
            if self._hooks is not None:
                for h in self._hooks[1]:
                    h.remove()
            self._hooks = (model, [r.register_forward_hook(self._gate_hook(k)) for k, r in enumerate(relus)])

    def _gate_hook(self, k: int):
        def hook(module, args, output):
            return None if self._gates is None else output * self._gates[k]

        return hook

    def _schedule(self, ctx) -> float:
        """s for the coming step: batch b (from 0) of an epoch of B batches."""
        B, b = self._batches, ctx.step % self._batches
        return self.smax if B == 1 else 1 / self.smax + (self.smax - 1 / self.smax) * b / (B - 1)

    # ---- hooks -------------------------------------------------------------------------------
    def before_task(self, ctx, task):
        self.check_setup(ctx, own_optimizer=True)
        self._attach(ctx)
        got = self.train_data(ctx, task)
        self._batches = max(1, math.ceil(len(got[0]) / ctx.batch_size)) if got is not None else 1
        self._emb_t = [e.requires_grad_(True) for e in self.emb_[task.id]]
        self._opt = self.optimizer_like(ctx, self._emb_t)
        self._factors = conditioning(self.cum_) if self.cum_ is not None else None
        self._rows = self.output_owner(ctx) < task.id  # outputs of earlier tasks: fixed

    def adapt_batch(self, ctx, batch):
        self._s = self._schedule(ctx)
        self._gates = gates(self._emb_t, self._s)
        return batch

    def penalty(self, ctx, batch, out):
        return self.c * attention_regulariser(self._gates, self.cum_)

    def after_backward(self, ctx):
        linears, _ = self._parts(ctx.model)
        self._saved = []
        if self._factors is not None:
            for lin, (fw, fb) in zip(linears, self._factors):
                if lin.weight.grad is not None:
                    lin.weight.grad.mul_(fw)
                if lin.bias is not None and lin.bias.grad is not None:
                    lin.bias.grad.mul_(fb)
        for e in self._emb_t:
            if e.grad is not None:
                e.grad.mul_(compensation(e.detach(), self._s, self.smax, self.cosh_clamp))
        torch.nn.utils.clip_grad_norm_([*ctx.params(), *self._emb_t], self.clipgrad)
        self.step_own(ctx, self._opt)
        with torch.no_grad():
            for e in self._emb_t:
                e.clamp_(-self.emb_clamp, self.emb_clamp)
        self._gates = None
        if self._factors is not None:  # what must not move, as it is before the run's optimizer step
            self._saved = [p.detach().clone() for lin in linears for p in (lin.weight, lin.bias) if p is not None]

    @torch.no_grad()
    def after_step(self, ctx, batch):
        if not self._saved:
            return
        linears, _ = self._parts(ctx.model)
        saved = iter(self._saved)
        for k, lin in enumerate(linears):
            for p, factor in zip((lin.weight, lin.bias), self._keep_masks(k, lin)):
                if p is None:
                    continue
                before = next(saved)
                if factor is not None:
                    p.copy_(torch.where(factor, before, p))
        self._saved = []

    def _keep_masks(self, k: int, lin: nn.Linear) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Where layer k's weight and bias must stay as they were: factor exactly 0 (hidden layers),
        the rows of earlier tasks' outputs (the output layer)."""
        if k < len(self._factors):
            fw, fb = self._factors[k]
            return (fw == 0).expand_as(lin.weight), fb == 0
        return self._rows.view(-1, 1).expand_as(lin.weight), self._rows

    def after_task(self, ctx, task):
        with torch.no_grad():
            a = [g.detach() for g in gates(self.emb_[task.id], self.smax)]
            self.cum_ = a if self.cum_ is None else [torch.maximum(c, g) for c, g in zip(self.cum_, a)]
        for e in self.emb_[task.id]:
            e.requires_grad_(False)
            e.grad = None
        self._opt, self._gates, self._factors = None, None, None

    def predict(self, ctx, x):
        self._attach(ctx)
        logits = []
        try:
            for j in range(max(ctx.seen_upto, 0) + 1):
                self._gates = gates(self.emb_[j], self.smax)
                logits.append(ctx.model(x))
        finally:
            self._gates = None
        return self.assemble(ctx, logits)

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        emb = None if self.emb_ is None else [[e.detach().clone() for e in task] for task in self.emb_]
        return {"emb_": emb, "cum_": self.cum_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.emb_, self.cum_ = state["emb_"], state["cum_"]


__all__ = ["HAT", "attention_regulariser", "compensation", "conditioning", "gates"]

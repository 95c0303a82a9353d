"""LUCIR: a unified classifier learnt incrementally via rebalancing (Hou, Pan, Loy, Wang & Lin,
CVPR 2019, "Learning a Unified Classifier Incrementally via Rebalancing")."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..memory import ExemplarSet
from .base import Context, Param
from .distill import WithOldModel
from .icarl import features, last_linear, update_exemplars, with_exemplars
from .replay import MEMORY


def features_and_cosine(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(x), cos(f(x), theta_c) for every class c): f is the input of the model's last nn.Linear
    (caught with a forward hook, gradients kept), theta_c the rows of its weight; its bias is not
    used (the paper's cosine layer has none)."""
    layer = last_linear(model)
    caught: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda mod, inputs, output: caught.append(inputs[0]))
    try:
        model(x)
    finally:
        handle.remove()
    if not caught:
        raise UsageError(
            f"{type(model).__name__}: its last nn.Linear layer is not used in forward; "
            f"lucir needs the output layer to be the last nn.Linear"
        )
    f = caught[-1].flatten(1)
    return f, F.normalize(f, dim=1) @ F.normalize(layer.weight, dim=1).T


def margin_ranking(
    cos: torch.Tensor, y: torch.Tensor, new: torch.Tensor, margin: float, k: int, rows: torch.Tensor
) -> torch.Tensor:
    """LUCIR's inter-class separation (margin ranking loss) on the examples ``rows`` (a boolean mask:
    those of old classes), summed over the K hardest new classes and averaged over those examples
    (0 when there are none; no host sync):

        L_mr(x) = sum_{k=1..K} max(0, m - cos(f(x), theta_y) + cos(f(x), theta^k))

    theta^k: the K new classes of largest cosine on x (``new``: their output indices). The authors'
    code averages over the K pairs instead (a factor K)."""
    gt = cos.gather(1, y[:, None])
    hard = cos[:, new].topk(min(k, len(new)), dim=1).values
    per = (margin - gt + hard).clamp_min(0).sum(1)
    w = rows.to(per.dtype)
    return (per * w).sum() / w.sum().clamp_min(1)


class LUCIR(WithOldModel):
    """LUCIR (Hou et al., CVPR 2019). Class-incremental only.

    Cosine normalisation: the logits are sigma * cos(f(x), theta_c), with f the
    penultimate features (the input of the model's last nn.Linear, whose weight rows are the
    theta_c; its bias unused) and sigma a learnt scale (initial 1; learnt by its own plain SGD at
    ``sigma_lr``, the run's optimizer does not hold it). Training data of task k: its own data plus
    the exemplars of the old classes (``memory`` exemplars in total, m = memory // classes seen per
    class, chosen by iCaRL's herding on f at each task end, old sets cut to their first m). The
    loss (replacing the loop's cross-entropy):

        L = CE(sigma * cos, y)  over the classes seen so far
          + lambda * (1 - cos(f*(x), f(x)))     less-forget constraint: f* the old model's
                                                features, averaged over the batch
          + L_mr                                margin ranking on the batch's old-class
                                                examples: ``margin`` m = 0.5, ``hard`` K = 2

    with lambda = ``lam_base`` * sqrt(|C_old| / |C_new|) (the adaptive weight; lambda_base = 5,
    the paper's CIFAR value: the constraint grows as old classes accumulate). Before a new task, the
    new classes' weights are imprinted (the paper's initialisation): theta_c = the normalised mean
    of the normalised features of class c's training data, times the mean norm of the old classes'
    weights. Prediction: the cosine logits (the paper's "CNN" classifier). Not done: the
    class-balanced finetuning (optional in the paper). fp16 is refused: its gradient scaler would
    not unscale sigma's gradient (float32 and bf16 work).
    """

    name = "lucir"
    family = "replay"
    data_parallel = False
    scenarios = ("class",)
    params = {
        "memory": MEMORY,
        "lam_base": Param(5.0, ">=0", "base weight of the less-forget constraint (lambda_base)"),
        "margin": Param(0.5, ">=0", "margin m of the ranking loss"),
        "hard": Param(2, ">=1", "K hardest new classes in the ranking loss"),
        "sigma_lr": Param(0.1, ">=0", "learning rate of the cosine scale sigma (plain SGD)"),
    }
    help = "LUCIR: cosine classifier, less-forget feature distillation, margin ranking on exemplars (class-IL)"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.exemplars = ExemplarSet()
        self.sigma_: torch.Tensor | None = None

    def sigma(self, ctx: Context) -> torch.Tensor:
        if self.sigma_ is None or self.sigma_.device != ctx.device:
            value = 1.0 if self.sigma_ is None else float(self.sigma_)
            with torch.inference_mode(False):  # (an evaluation may ask first)
                self.sigma_ = torch.tensor(value, device=ctx.device, requires_grad=True)
        return self.sigma_

    # ---- hooks ------------------------------------------------------------------------------
    def before_task(self, ctx, task):
        if ctx.precision == "fp16":
            raise UsageError(
                "lucir does not support --precision fp16 (its cosine scale sigma is outside the "
                "gradient scaler); use --precision bf16 or float32"
            )
        self.sigma(ctx)
        if task.id > 0:
            self.snapshot(ctx)
            self.imprint(ctx, task)

    @torch.no_grad()
    def imprint(self, ctx, task) -> None:
        """The new classes' weights from their normalised feature means, at the old weights' norm."""
        weight = last_linear(ctx.model).weight
        old = ctx.benchmark.index_before(task.id)
        norm = weight[old].norm(dim=1).mean()
        for c in task.classes:
            xc = task.train.take(task.train.y == c)
            if len(xc):
                phi = F.normalize(features(ctx.model, xc), dim=1)
                weight[c] = F.normalize(phi.mean(0), dim=0) * norm

    def train_data(self, ctx, task):
        return with_exemplars(task, None, self.exemplars, ctx.benchmark.classes_before(task.id))

    def lam(self, benchmark, task_id: int) -> float:
        old, new = len(benchmark.classes_before(task_id)), len(benchmark.tasks[task_id].classes)
        return self.lam_base * math.sqrt(old / new)

    def task_loss(self, ctx, batch, out, loss):
        """Replaces the loop's CE by LUCIR's three terms (on the cosine logits)."""
        bench, c = ctx.benchmark, ctx.task_id
        f, cos = features_and_cosine(ctx.model, batch.x)
        logits = self.sigma(ctx) * cos
        total = F.cross_entropy(ctx.mask(logits, batch.t), batch.y)
        old = self.old_model(ctx)
        if c == 0 or old is None:
            return total
        with torch.no_grad():
            f_old, _ = features_and_cosine(old, batch.x)
        less_forget = (1 - F.cosine_similarity(f, f_old.detach(), dim=1)).mean()
        new = self.new_classes(ctx)
        ranking = margin_ranking(cos, batch.y, new, self.margin, self.hard, torch.isin(batch.y, bench.index_before(c)))
        return total + self.lam(bench, c) * less_forget + ranking

    def new_classes(self, ctx) -> torch.Tensor:
        """The current task's output indices on the device (made once per task)."""
        key = (id(ctx.benchmark), ctx.task_id, ctx.device)
        if getattr(self, "_new_key", None) != key:
            classes = sorted(ctx.benchmark.tasks[ctx.task_id].classes)
            self._new = torch.tensor(classes, dtype=torch.long, device="cpu").to(ctx.device)
            self._new_key = key
        return self._new

    def after_step(self, ctx, batch):
        s = self.sigma_
        if s is not None and s.grad is not None:
            with torch.no_grad():
                s -= self.sigma_lr * s.grad
            s.grad = None

    def after_task(self, ctx, task):
        update_exemplars("lucir", self.exemplars, self.memory, ctx, task)

    def predict(self, ctx, x):
        return self.sigma(ctx).detach() * features_and_cosine(ctx.model, x)[1]

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "exemplars_": self.exemplars.state_dict(),
            "old_model_": self.old_model_,
            "sigma_": None if self.sigma_ is None else self.sigma_.detach().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.exemplars = ExemplarSet()
        self.exemplars.load_state_dict(state["exemplars_"])
        self.old_model_, self._old = state["old_model_"], None
        sigma = state["sigma_"]
        self.sigma_ = None if sigma is None else sigma.clone().requires_grad_(True)


__all__ = ["LUCIR", "features_and_cosine", "margin_ranking"]

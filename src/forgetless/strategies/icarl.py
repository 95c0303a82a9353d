"""iCaRL (Rebuffi et al. 2017), and the penultimate-layer features it (and BiC) needs."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.base import TensorData
from ..errors import UsageError
from ..memory import ExemplarSet, herding
from .distill import WithOldModel
from .replay import MEMORY

FEATURE_BATCH = 1024


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` (in ``model.modules()`` order): assumed to be the output layer."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UsageError(
            f"{type(model).__name__} has no nn.Linear layer: iCaRL and BiC take the input of the "
            f"model's last nn.Linear (its output layer) as the feature vector; use --model mlp or cnn"
        )
    return linears[-1]


def extract(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of ``x``: features are the input of the model's last nn.Linear layer
    (the penultimate representation, flattened), caught with a forward hook; no gradients, eval mode."""
    layer = last_linear(model)
    caught: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda mod, inputs, output: caught.append(inputs[0]))
    was_training = model.training
    model.eval()
    feats, outs = [], []
    try:
        with torch.no_grad():
            for i in range(0, len(x), FEATURE_BATCH):
                caught.clear()
                outs.append(model(x[i : i + FEATURE_BATCH]))
                if not caught:
                    raise UsageError(
                        f"{type(model).__name__}: its last nn.Linear layer is not used in forward; "
                        f"iCaRL and BiC need the output layer to be the last nn.Linear"
                    )
                feats.append(caught[-1].flatten(1))
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(feats), torch.cat(outs)


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the model's last ``nn.Linear`` for ``x``: the feature vectors iCaRL and BiC use."""
    return extract(model, x)[0]


def update_exemplars(who: str, exemplars: ExemplarSet, memory: int, ctx, task) -> None:
    """iCaRL's exemplar management after ``task``: m = memory // (classes seen) per class; every old
    set is cut to its first m (ReduceExemplarSet), each new class gets m by herding on the model's
    features (ConstructExemplarSet). Shared by iCaRL and LUCIR."""
    seen = ctx.benchmark.classes_upto(task.id)
    m = memory // len(seen)
    if m < 1:
        raise UsageError(
            f"{who}: memory={memory} is smaller than the {len(seen)} classes seen; "
            f"it needs at least one exemplar per class"
        )
    exemplars.reduce(m)
    for c in task.classes:
        xc = task.train.take(task.train.y == c)
        if len(xc):
            exemplars.set(c, xc[herding(features(ctx.model, xc), m)], task.id)


def with_exemplars(task, keep: torch.Tensor | None, exemplars: ExemplarSet, old_classes: list[int]):
    """(TensorData, task indices): the task's training data (rows ``keep``) plus the old classes' exemplars."""
    data = task.train if keep is None else task.train.subset(keep)
    t = task.ids(len(data))
    stored = exemplars.tensors(old_classes)
    if stored is None:
        return data, t
    ex, ey, et = stored
    return TensorData.cat([data, TensorData(ex, ey)]), torch.cat([t, et])


class ICaRL(WithOldModel):
    """iCaRL (Rebuffi, Kolesnikov, Sperl & Lampert 2017, "iCaRL: Incremental Classifier and
    Representation Learning"). Class-incremental only.

    Features phi(x) = the input of the model's last nn.Linear (the penultimate layer, L2-normalised;
    the assumption is checked and a model without an nn.Linear is refused).

    - Training data of task k: its own data plus the exemplars P_y of every old class.
    - Loss (replaces the loop's cross-entropy through the ``task_loss`` hook): sigmoid binary
      cross-entropy over the classes seen so far, summed over classes, averaged over the batch:

          L = - sum_y [ t_y log sigmoid(g_y(x)) + (1 - t_y) log(1 - sigmoid(g_y(x))) ]
          t_y = [y == label]               for the new classes of task k
          t_y = sigmoid(g_old_y(x))        for the classes seen before (the previous model's outputs)

    - After the task: K = ``memory`` exemplars in total, m = K // (classes seen) per class. Old sets
      are cut to their first m (ReduceExemplarSet); each new class gets m exemplars by herding
      (``memory.herding``: the running mean of the chosen normalised features closest to the class
      mean).
    - Prediction: nearest mean of exemplars. mu_y = normalised mean of the normalised features of
      P_y, recomputed whenever the model's parameters or the exemplars change; the score of class y
      is -||phi(x) - mu_y||. Classes of the current task that have no exemplars yet (evaluation in
      the middle of a task) use the mean of their training data; classes with neither score -inf.
      Before any exemplar exists, predict falls back to the model's logits.
    Params: memory (total exemplars K).
    """

    name = "icarl"
    family = "replay"
    params = {"memory": MEMORY}
    scenarios = ("class",)
    help = "iCaRL: herding exemplars, sigmoid distillation, nearest-mean-of-exemplars classifier (class-IL)"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.exemplars = ExemplarSet()
        self._means_key = None
        self._means: torch.Tensor | None = None

    # ---- hooks ------------------------------------------------------------------------------
    def before_task(self, ctx, task):
        if task.id > 0:
            self.snapshot(ctx)

    def train_data(self, ctx, task):
        return with_exemplars(task, None, self.exemplars, ctx.benchmark.classes_before(task.id))

    def task_loss(self, ctx, batch, out, loss):
        """Replaces the cross-entropy it is given by iCaRL's sigmoid loss with distillation."""
        bench = ctx.benchmark
        seen = bench.index_upto(ctx.seen_upto)
        target = F.one_hot(batch.y, bench.n_outputs).to(out.dtype)
        old_classes = bench.index_before(ctx.task_id)
        old = self.old_model(ctx)
        if len(old_classes) and old is not None:
            with torch.no_grad():
                target[:, old_classes] = torch.sigmoid(old(batch.x)[:, old_classes]).to(out.dtype)
        bce = F.binary_cross_entropy_with_logits(out[:, seen], target[:, seen], reduction="none")
        return bce.sum(1).mean()

    def after_task(self, ctx, task):
        update_exemplars("icarl", self.exemplars, self.memory, ctx, task)
        self._means_key = None

    def predict(self, ctx, x):
        if not len(self.exemplars):
            return ctx.model(x)
        phi, _ = extract(ctx.model, x)
        means = self.class_means(ctx)
        dist = torch.cdist(F.normalize(phi, dim=1), means.nan_to_num(0.0))
        return (-dist).masked_fill(means.isnan().any(1)[None, :], float("-inf"))

    # ---- nearest mean of exemplars ----------------------------------------------------------
    def class_means(self, ctx) -> torch.Tensor:
        """[n_outputs, d] normalised class means (NaN rows: classes without a mean)."""
        key = (id(ctx.model), ctx.task_id, len(self.exemplars), tuple(p._version for p in ctx.model.parameters()))
        if key == self._means_key and self._means is not None:
            return self._means
        sources: dict[int, torch.Tensor] = {c: self.exemplars.x[c] for c in self.exemplars.classes}
        task = ctx.benchmark.tasks[ctx.task_id]
        for c in task.classes:
            if c not in sources:
                sources[c] = task.train.take(task.train.y == c)
        sources = {c: v for c, v in sources.items() if len(v)}
        xs = torch.cat(list(sources.values()))
        phi = F.normalize(features(ctx.model, xs), dim=1)
        means = torch.full((ctx.benchmark.n_outputs, phi.shape[1]), float("nan"), device=phi.device)
        i = 0
        for c, v in sources.items():
            means[c] = F.normalize(phi[i : i + len(v)].mean(0), dim=0)
            i += len(v)
        self._means_key, self._means = key, means
        return means

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"exemplars_": self.exemplars.state_dict(), "old_model_": self.old_model_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.exemplars = ExemplarSet()
        self.exemplars.load_state_dict(state["exemplars_"])
        self.old_model_, self._old, self._means_key = state["old_model_"], None, None


__all__ = ["ICaRL", "extract", "features", "last_linear"]

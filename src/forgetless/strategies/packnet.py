"""PackNet (Mallya & Lazebnik, "PackNet: Adding Multiple Tasks to a Single Network by Iterative
Pruning", CVPR 2018): one network, its weights shared out among the tasks by pruning.

Every weight of the prunable layers (the weights of every ``nn.Linear`` and ``nn.Conv2d`` but the
output layer) has an owner: a task, or "free". For task t:

1. train: only the free weights move (their gradient is kept, every other one zeroed, and after
   every optimizer step the weights that must not move are put back exactly, so no optimizer
   state - Adam's moments, momentum, weight decay - can shift them);
2. prune: of the weights still free, the fraction ``prune`` with the smallest magnitude |w| (per
   layer, as in the paper: 0.5 or 0.75 there) is set to 0 and stays free for later tasks; the
   others now belong to task t;
3. retrain for ``retrain`` epochs over task t's data, only task t's kept weights moving (the
   pruned ones held at 0);
4. freeze: task t's weights never change again.

Evaluation of task j uses the weights of tasks <= j, every later (or free) weight set to 0
(``torch.func.functional_call`` with the masked weights: the model is never modified to
evaluate), so an old task's outputs are bit-identical after later tasks (BWT exactly 0, tested).

Biases, batch-norm parameters and anything else that is not a prunable weight: as in the paper
(its Sec. 3), trained with task 1 and then fixed. Batch-norm running
statistics are fixed after task 1 as well (restored after every later step; later tasks still
normalise their training batches by the batch's own statistics, so training and evaluation differ
there as in train mode with frozen statistics). The output layer is not pruned: task-IL gives each
task its own outputs (the paper's per-task classifiers), so the rows (and biases) of task t's
outputs are trained with task t and then fixed; they are the only part of that layer task t moves.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from .base import Batch, Param
from .icarl import last_linear
from .pnn import TaskIsolation

FREE = -1


class PackNet(TaskIsolation):
    """Iterative pruning and freezing (see the module docstring)."""

    name = "packnet"
    help = "PackNet: after each task prune its free weights by magnitude, retrain the kept ones, freeze them (task-IL)"
    params = {
        "prune": Param(
            0.5,
            "[0, 1)",
            "fraction of the still-free weights of each layer pruned after a task "
            "(by magnitude; the paper uses 0.5 and 0.75)",
        ),
        "retrain": Param(2, ">=0", "epochs of retraining the kept weights after pruning"),
    }

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.owner_: dict[str, torch.Tensor] | None = None  # prunable weight name -> owner task (int16; -1 free)
        self._work: list[tuple[torch.Tensor, Any, torch.Tensor | None]] = []  # (param, may move, value to keep)
        self._buffers: list[tuple[torch.Tensor, torch.Tensor]] = []

    # ---- which weight is what ----------------------------------------------------------------
    def _layout(self, model: nn.Module) -> tuple[list[str], tuple[str, str | None]]:
        """(prunable weight names, (head weight name, head bias name or None))."""
        head = last_linear(model)
        names = {id(p): n for n, p in model.named_parameters()}
        if id(head.weight) not in names or not any(
            isinstance(m, (nn.Linear, nn.Conv2d)) and m is not head for m in model.modules()
        ):
            raise UsageError(
                f"{self.name} prunes the nn.Linear / nn.Conv2d layers of forgetless's models "
                f"(--model mlp:..., cnn, resnet...); {type(model).__name__} has none it can own"
            )
        prunable = [
            names[id(m.weight)]
            for m in model.modules()
            if isinstance(m, (nn.Linear, nn.Conv2d)) and m is not head and id(m.weight) in names
        ]
        bias = names.get(id(head.bias)) if head.bias is not None else None
        return prunable, (names[id(head.weight)], bias)

    def _phase(self, ctx, task, owned_by: int) -> None:
        """Let move: the prunable weights owned by ``owned_by`` (FREE: the free ones), the output
        rows of ``task``, and the rest only in task 0; record the values of what must not move."""
        model = ctx.model
        _prunable, (head_w, head_b) = self._layout(model)
        rows = torch.zeros(ctx.benchmark.n_outputs, dtype=torch.bool, device=ctx.device)
        rows[self.output_owner(ctx) == task.id] = True
        self._work = []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if name in self.owner_:
                moves: Any = self.owner_[name] == owned_by
            elif name == head_w:
                moves = rows.view(-1, *([1] * (p.dim() - 1))).expand_as(p)
            elif name == head_b:
                moves = rows
            else:
                moves = task.id == 0
            if moves is not True:
                self._work.append((p, moves, p.detach().clone()))
        self._buffers = [(b, b.detach().clone()) for _, b in model.named_buffers()] if task.id > 0 else []

    # ---- hooks -------------------------------------------------------------------------------
    def before_task(self, ctx, task):
        self.check_setup(ctx)
        if self.owner_ is None:
            params = dict(ctx.model.named_parameters())
            self.owner_ = {
                n: torch.full(params[n].shape, FREE, dtype=torch.int16, device=ctx.device)
                for n in self._layout(ctx.model)[0]
            }
        self._phase(ctx, task, FREE)

    def after_backward(self, ctx):
        for p, moves, _ in self._work:
            if p.grad is None:
                continue
            if moves is False:
                p.grad.zero_()
            else:
                p.grad.masked_fill_(~moves, 0.0)

    @torch.no_grad()
    def after_step(self, ctx, batch):
        for p, moves, keep in self._work:
            p.copy_(keep if moves is False else torch.where(moves, p, keep))
        for b, keep in self._buffers:
            b.copy_(keep)

    def after_task(self, ctx, task):
        self.prune_task(ctx, task)
        self._phase(ctx, task, task.id)
        if self.retrain:
            self._retrain(ctx, task)
        self._work, self._buffers = [], []

    @torch.no_grad()
    def prune_task(self, ctx, task) -> None:
        """Of each layer's free weights, zero the ``prune`` fraction smallest in magnitude (they stay
        free); the others become ``task``'s."""
        params = dict(ctx.model.named_parameters())
        for name, owner in self.owner_.items():
            flat, own = params[name].detach().view(-1), owner.view(-1)
            free = (own == FREE).nonzero().squeeze(1)
            k = round(self.prune * len(free))
            order = torch.argsort(flat[free].abs(), stable=True)
            flat[free[order[:k]]] = 0.0
            own[free[order[k:]]] = task.id

    def _retrain(self, ctx, task) -> None:
        from ..loop import train_step  # (the loop imports the strategies package)

        data, ids = self.train_data(ctx, task)
        was = ctx.model.training
        ctx.model.train()
        for _ in range(self.retrain):
            perm = ctx.put(torch.randperm(len(data), generator=ctx.generator, device="cpu"))
            for i in range(0, len(data), ctx.batch_size):
                idx = perm[i : i + ctx.batch_size]
                train_step(ctx, self, Batch(data.take(idx), data.y[idx], ids[idx]))
        ctx.model.train(was)

    def masked_params(self, ctx, j: int) -> dict[str, torch.Tensor]:
        """The prunable weights as task ``j`` sees them: those of tasks <= j, every other one 0."""
        params = dict(ctx.model.named_parameters())
        return {
            n: torch.where(
                (own >= 0) & (own <= j), params[n], torch.zeros((), device=own.device, dtype=params[n].dtype)
            )
            for n, own in self.owner_.items()
        }

    def predict(self, ctx, x):
        if self.owner_ is None or ctx.task_id == 0:
            return ctx.model(x)
        logits = [
            torch.func.functional_call(ctx.model, self.masked_params(ctx, j), (x,))
            for j in range(min(ctx.task_id, len(ctx.benchmark.tasks)))
        ]
        logits.append(ctx.model(x))  # the task being trained (or just trained) and later ones: every weight
        return self.assemble(ctx, logits)


__all__ = ["PackNet"]

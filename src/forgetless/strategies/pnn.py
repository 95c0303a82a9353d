"""Progressive Neural Networks (Rusu et al. 2016, arXiv:1606.04671), and what the parameter-isolation
strategies (PNN, PackNet, HAT) share: task-IL only, and scores put together task by task.

PNN: task k gets a new column, a copy of the run's MLP architecture with fresh weights; every
earlier column is frozen. Column k's layer i (i >= 1, the output layer included) adds lateral
input from layer i-1 of every earlier column j < k through an adapter (the paper's non-linear
lateral connections, its Sec. 2 "Adapters"):

    h_i^(k) = relu( W_i^(k) h_{i-1}^(k) + b_i^(k)
                    + U_i^(k) relu( V_i^(k) (alpha_i^(k) * [h_{i-1}^(j)]_{j<k}) + c_i^(k) ) )

(no relu at the output layer). [h^(j)]_{j<k} concatenates the earlier columns' activations
(k * n_{i-1} values); V projects them onto n_{i-1} dimensions (the "dimensionality reduction" of
the paper, so that the lateral parameters are of the order of one column's), U maps to n_i;
alpha is a learned scalar initialised at a small random value (uniform in [0, 0.1)). The first
layer has no lateral input (the input image is shared).

Supported models: forgetless's MLP (``--model mlp:W1,W2,...``, with or without a ``Normalize``
first layer). Column 0 IS the run's model (trained by the run's optimizer in task 0); columns
1, 2, ... live in the strategy (their state in the strategy's state dict) and each is trained, during
its own task, by an optimizer of the run's kind and settings (``type(ctx.optimizer)(params,
**ctx.optimizer.defaults)``, following the run's learning rate at every step). A frozen column is
evaluated under ``torch.no_grad``, so the run's optimizer never sees a gradient for column 0 after
task 0 (torch's optimizers skip parameters without a gradient: Adam's moments cannot move them),
and an old task's outputs are bit-identical after later tasks (BWT exactly 0, tested).

How it plugs into the one training step without changing the loop: a forward hook on the run's
model replaces its output by the columns' scores once there is more than one column; the outputs
of task j come from column j (tasks not yet trained: the newest column), which is exactly
"task j predicts with column j" under task-IL's evaluation, where only task j's outputs compete.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from .base import Strategy


class TaskIsolation(Strategy):
    """What PNN, PackNet and HAT share: task-IL only; the output indices of every task (disjoint);
    scores assembled from one set of logits per task; an optimizer like the run's for parameters
    that live in the strategy."""

    family = "isolation"
    scenarios = ("task",)
    data_parallel = False  # its own parameters and masks are not synchronised across processes

    def check_setup(self, ctx, own_optimizer: bool = False) -> None:
        if ctx.benchmark.scenario != "task":
            raise UsageError(
                f"{self.name} is task-incremental only (it needs the task of every test sample); "
                f"run it with --scenario task"
            )
        if own_optimizer and ctx.scaler is not None:
            raise UsageError(
                f"{self.name} trains parameters of its own, outside the run's gradient scaler: "
                f"use --precision float32 or bf16, not fp16"
            )
        self.output_owner(ctx)

    def output_owner(self, ctx) -> torch.Tensor:
        """[n_outputs] LongTensor on the run's device: the task owning each output (outputs no task
        owns: the last task). An error if two tasks share an output."""
        bench = ctx.benchmark
        cached = getattr(self, "_owner", None)
        if cached is not None and cached[0] is bench and cached[1].device == ctx.device:
            return cached[1]
        owner = [len(bench.tasks) - 1] * bench.n_outputs
        taken: set[int] = set()
        for task in bench.tasks:
            if taken & set(task.classes):
                raise UsageError(
                    f"{self.name} needs every task to have its own outputs; tasks of {bench.name} share outputs"
                )
            taken |= set(task.classes)
            for c in task.classes:
                owner[c] = task.id
        with torch.inference_mode(False):
            idx = torch.tensor(owner, dtype=torch.long, device=ctx.device)
        self._owner = (bench, idx)
        return idx

    def assemble(self, ctx, logits: list[torch.Tensor]) -> torch.Tensor:
        """Scores whose outputs of task j come from ``logits[min(j, len(logits) - 1)]``."""
        if len(logits) == 1:
            return logits[0]
        owner = self.output_owner(ctx).clamp(max=len(logits) - 1)
        stacked = torch.stack(logits, 0)
        return stacked.gather(0, owner.view(1, 1, -1).expand(1, *stacked.shape[1:])).squeeze(0)

    @staticmethod
    def optimizer_like(ctx, params) -> torch.optim.Optimizer:
        """An optimizer of the run's kind and settings (fresh state) over ``params``."""
        opt = ctx.optimizer
        return type(opt)(list(params), **opt.defaults)

    @staticmethod
    def step_own(ctx, opt: torch.optim.Optimizer) -> None:
        """One step of ``opt`` at the run's current learning rate, then its gradients cleared."""
        lr = ctx.optimizer.param_groups[0]["lr"]
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        opt.zero_grad(set_to_none=True)


# ---- the MLP, taken apart --------------------------------------------------------------------
def mlp_parts(model: nn.Module, who: str) -> tuple[nn.Module | None, list[nn.Linear]]:
    """(the Normalize layer or None, the Linear layers in order) of forgetless's MLP; else an error."""
    from ..models.mlp import MLP

    if not isinstance(model, MLP):
        raise UsageError(f"{who} supports forgetless's MLP only (--model mlp:W1,W2,...), not {type(model).__name__}")
    linears = [m for m in model.net if isinstance(m, nn.Linear)]
    return model._modules.get("normalize"), linears


def mlp_forward(model: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(hidden activations after each ReLU, logits) of the MLP, with the model's own layers."""
    norm, linears = mlp_parts(model, "pnn")
    h = norm(x) if norm is not None else x
    h = h.flatten(1)
    acts = []
    for i, lin in enumerate(linears):
        h = lin(h)
        if i < len(linears) - 1:
            h = F.relu(h)
            acts.append(h)
    return acts, h


class Column(nn.Module):
    """Column k >= 1: the MLP's layers (``sizes``: input, hidden..., outputs) and, for every layer
    after the first, an adapter from the k earlier columns' previous layer."""

    def __init__(self, k: int, sizes: list[int], device):
        super().__init__()
        self.k = k
        self.layers = nn.ModuleList(nn.Linear(a, b, device=device) for a, b in itertools.pairwise(sizes))
        self.alpha = nn.ParameterList(nn.Parameter(0.1 * torch.rand((), device=device)) for _ in sizes[2:])
        self.down = nn.ModuleList(nn.Linear(k * a, a, device=device) for a in sizes[1:-1])
        self.up = nn.ModuleList(nn.Linear(a, b, bias=False, device=device) for a, b in itertools.pairwise(sizes[1:]))

    def forward(self, x: torch.Tensor, earlier: list[list[torch.Tensor]]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``x`` flattened (and normalised); ``earlier[j]``: column j's hidden activations."""
        h, acts = x, []
        for i, lin in enumerate(self.layers):
            z = lin(h)
            if i >= 1:
                lateral = torch.cat([col[i - 1] for col in earlier], 1)
                z = z + self.up[i - 1](F.relu(self.down[i - 1](self.alpha[i - 1] * lateral)))
            if i < len(self.layers) - 1:
                h = F.relu(z)
                acts.append(h)
            else:
                h = z
        return acts, h


class PNN(TaskIsolation):
    """Progressive Neural Networks (Rusu et al. 2016): a new column per task with adapters from the
    earlier columns (see the module docstring for the formula and how it fits the loop)."""

    name = "pnn"
    help = "progressive networks: a new MLP column per task, lateral adapters from the frozen earlier ones (task-IL)"
    params: dict = {}

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.columns = nn.ModuleList()  # columns 1, 2, ... (column 0 is the run's model)
        self.training_column_ = -1  # the column being trained (-1: none)
        self._pending: list[dict[str, torch.Tensor]] | None = None  # loaded, built at the next hook
        self._opt = None
        self._hooked: tuple[nn.Module, Any] | None = None

    # ---- the model ---------------------------------------------------------------------------
    def sizes(self, model) -> list[int]:
        _, linears = mlp_parts(model, self.name)
        return [linears[0].in_features] + [lin.out_features for lin in linears]

    def _materialise(self, ctx) -> None:
        if self._pending is not None:
            sizes = self.sizes(ctx.model)
            # (built without drawing initial values: the RNG must stay where the checkpoint left it)
            self.columns = nn.ModuleList(
                Column(k + 1, sizes, "meta").to_empty(device=ctx.device) for k in range(len(self._pending))
            )
            for col, state in zip(self.columns, self._pending):
                col.load_state_dict(state)
            self._pending = None
        if self._hooked is None or self._hooked[0] is not ctx.model:
            if self._hooked is not None:
                self._hooked[1].remove()
            self._hooked = (ctx.model, ctx.model.register_forward_hook(self._hook))

    def _hook(self, model, args, output):
        if not len(self.columns):
            return None  # one column: the model's own output
        return self.forward_columns(model, args[0])

    def forward_columns(self, model, x: torch.Tensor) -> torch.Tensor:
        """Every column on ``x``; the frozen ones without gradients; scores assembled by task."""
        norm, _ = mlp_parts(model, self.name)
        flat = (norm(x) if norm is not None else x).flatten(1)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.training_column_ == 0):
            acts0, logits0 = mlp_forward(model, x)
        acts, logits = [acts0], [logits0]
        for col in self.columns:
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.training_column_ == col.k):
                a, out = col(flat, acts)
            acts.append(a)
            logits.append(out)
        return self.assemble(self._ctx, logits)

    # ---- hooks -------------------------------------------------------------------------------
    def before_task(self, ctx, task):
        self.check_setup(ctx, own_optimizer=True)
        self._ctx = ctx
        self._materialise(ctx)
        while len(self.columns) < task.id:  # column k for task k (k >= 1)
            self.columns.append(Column(len(self.columns) + 1, self.sizes(ctx.model), ctx.device))
        self.training_column_ = task.id
        self._opt = self.optimizer_like(ctx, self.columns[task.id - 1].parameters()) if task.id > 0 else None

    def after_backward(self, ctx):
        if self._opt is not None:
            self.step_own(ctx, self._opt)

    def after_task(self, ctx, task):
        self.training_column_ = -1
        self._opt = None

    def predict(self, ctx, x):
        self._ctx = ctx
        self._materialise(ctx)
        return ctx.model(x)

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        cols = (
            self._pending
            if self._pending is not None
            else [{k: v.detach().clone() for k, v in col.state_dict().items()} for col in self.columns]
        )
        return {"columns_": cols, "training_column_": self.training_column_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = list(state["columns_"])
        self.columns = nn.ModuleList()
        self.training_column_ = state["training_column_"]


__all__ = ["PNN", "TaskIsolation", "mlp_forward", "mlp_parts"]

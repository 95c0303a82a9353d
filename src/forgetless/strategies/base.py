"""Strategy: the hooks of the one training loop, each doing nothing by default.

A method overrides only the hooks it needs (see DESIGN.md). The loop calls, for every task::

    s.before_task(ctx, task)
    data = s.train_data(ctx, task)                 # what this task trains on (cumulative, joint)
    for each batch (x, y, t) of data:              # t: the task index of every sample
        x, y, t = s.adapt_batch(ctx, x, y, t)      # replay mixes memory in here
        out = model(x)                             # raw logits, every output
        loss = s.task_loss(ctx, x, y, t, out)      # None: CE(ctx.mask(out, t), y), masked by the loop
        pen = s.penalty(ctx, x, y, out)            # None or a scalar tensor
        backward; s.after_backward(ctx); opt.step(); s.after_step(ctx)
    s.after_task(ctx, task)

and ``s.predict(ctx, x)`` gives the scores used for evaluation (before masking).

Hyperparameters are constructor arguments declared in ``params`` (name -> default); learned state
lives in attributes ending with ``_`` and travels through ``state_dict`` / ``load_state_dict``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from ..benchmarks import Benchmark, Task
    from ..data.base import TensorData

ALL_SCENARIOS = ("task", "domain", "class")


@dataclass
class Context:
    """What the hooks may read: the model, the optimizer, the benchmark and where training is."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    benchmark: "Benchmark"
    task_id: int = 0
    epoch: int = 0
    step: int = 0  # optimizer steps in the current task
    global_step: int = 0  # optimizer steps since the start of the run
    seen_upto: int = -1  # the highest task index whose data has been trained on (class-IL masks)
    loss: torch.Tensor | None = None  # the task loss of the current batch (before penalties)
    batch_size: int = 128
    precision: str = "float32"  # "bf16": the loop's forward pass, losses and evaluation run under CPU autocast
    generator: torch.Generator = field(default_factory=torch.Generator)
    extra: dict[str, Any] = field(default_factory=dict)  # per-run scratch space for strategies

    @property
    def scenario(self) -> str:
        return self.benchmark.scenario

    @property
    def task(self) -> "Task":
        return self.benchmark.tasks[self.task_id]

    def mask(self, logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits with the scenario's mask applied; ``t`` holds each sample's task index."""
        return self.benchmark.mask_logits(logits, t, self.task_id)

    def params(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


class Strategy:
    """Naive fine-tuning: every hook does nothing. Subclasses declare ``name`` and ``params``."""

    name = "naive"
    params: dict[str, Any] = {}
    scenarios: tuple[str, ...] = ALL_SCENARIOS
    help = "fine-tuning: train on each task in turn, nothing against forgetting (lower bound)"

    def __init__(self, **kwargs: Any):
        unknown = set(kwargs) - set(self.params)
        if unknown:
            from ..errors import UsageError, closest

            key = sorted(unknown)[0]
            known = ", ".join(sorted(self.params)) or "none"
            raise UsageError(
                f"unknown parameter {key!r} for strategy {self.name!r}"
                f"{closest(key, self.params)}; its parameters: {known}"
            )
        for key, default in self.params.items():
            setattr(self, key, kwargs.get(key, default))

    def hparams(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.params}

    # ---- hooks ------------------------------------------------------------------------------
    def before_task(self, ctx: Context, task: "Task") -> None:
        pass

    def train_data(self, ctx: Context, task: "Task") -> tuple["TensorData", torch.Tensor] | None:
        """(data, task index of every sample) to train on for ``task``; None to skip training."""
        return task.train, torch.full((len(task.train),), task.id, dtype=torch.long)

    def adapt_batch(self, ctx: Context, x, y, t):
        return x, y, t

    def task_loss(self, ctx: Context, x, y, t, logits) -> torch.Tensor | None:
        """A loss that replaces the loop's masked cross-entropy (iCaRL, BiC); None keeps it."""
        return None

    def penalty(self, ctx: Context, x, y, logits) -> torch.Tensor | None:
        return None

    def after_backward(self, ctx: Context) -> None:
        pass

    def after_step(self, ctx: Context) -> None:
        pass

    def after_task(self, ctx: Context, task: "Task") -> None:
        pass

    def predict(self, ctx: Context, x: torch.Tensor) -> torch.Tensor:
        return ctx.model(x)

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Learned state: every attribute whose name ends with ``_``."""
        return {k: v for k, v in vars(self).items() if k.endswith("_")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class Compose(Strategy):
    """Several strategies at once: hooks run in order, penalties add up, the last predict wins."""

    name = "compose"

    def __init__(self, strategies: list[Strategy]):
        self.strategies = list(strategies)
        self.scenarios = tuple(
            s for s in ALL_SCENARIOS if all(s in st.scenarios for st in self.strategies)
        )

    def hparams(self):
        return {st.name: st.hparams() for st in self.strategies}

    def before_task(self, ctx, task):
        for st in self.strategies:
            st.before_task(ctx, task)

    def train_data(self, ctx, task):
        custom = [st for st in self.strategies if type(st).train_data is not Strategy.train_data]
        return custom[-1].train_data(ctx, task) if custom else super().train_data(ctx, task)

    def adapt_batch(self, ctx, x, y, t):
        for st in self.strategies:
            x, y, t = st.adapt_batch(ctx, x, y, t)
        return x, y, t

    def task_loss(self, ctx, x, y, t, logits):
        losses = [loss for st in self.strategies if (loss := st.task_loss(ctx, x, y, t, logits)) is not None]
        return losses[-1] if losses else None

    def penalty(self, ctx, x, y, logits):
        total = None
        for st in self.strategies:
            p = st.penalty(ctx, x, y, logits)
            if p is not None:
                total = p if total is None else total + p
        return total

    def after_backward(self, ctx):
        for st in self.strategies:
            st.after_backward(ctx)

    def after_step(self, ctx):
        for st in self.strategies:
            st.after_step(ctx)

    def after_task(self, ctx, task):
        for st in self.strategies:
            st.after_task(ctx, task)

    def predict(self, ctx, x):
        custom = [st for st in self.strategies if type(st).predict is not Strategy.predict]
        return custom[-1].predict(ctx, x) if custom else ctx.model(x)

    def state_dict(self):
        return {str(i): st.state_dict() for i, st in enumerate(self.strategies)}

    def load_state_dict(self, state):
        for i, st in enumerate(self.strategies):
            st.load_state_dict(state[str(i)])

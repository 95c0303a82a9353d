"""GDumb: a greedy class-balanced sampler and a dumb learner (Prabhu, Torr & Dokania, ECCV 2020,
"GDumb: A Simple Approach that Questions Our Progress in Continual Learning")."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F

from ..memory import ReplayBuffer
from .base import ALL_SCENARIOS, Context, Param, Strategy
from .replay import MEMORY


def sgdr_rate(epoch: int, max_lr: float, min_lr: float) -> float:
    """GDumb's schedule, per epoch: a warm-up epoch at max_lr / 10, then SGDR (Loshchilov & Hutter
    2017) with T_0 = 1, T_mult = 2: cosine cycles of 1, 2, 4, ... epochs from max_lr to min_lr,

        lr = min_lr + (max_lr - min_lr) (1 + cos(pi T_cur / T_i)) / 2   (epochs 1, 2, ...)."""
    if epoch == 0:
        return max_lr * 0.1
    e, length = epoch - 1, 1
    while e >= length:
        e, length = e - length, length * 2
    return min_lr + (max_lr - min_lr) * (1 + math.cos(math.pi * e / length)) / 2


class GDumb(Strategy):
    """GDumb (Prabhu et al., ECCV 2020).

    Sampler: a memory of K = ``memory`` examples filled greedily and class-balanced from the stream
    (``ReplayBuffer(..., "greedy")``): an example is stored while the memory has room; when it is
    full, an example whose class is not among the largest evicts a random example of (one of) the
    largest class(es); otherwise it is not stored. Training on the stream does nothing else: there
    is no learning from it: each incoming batch is offered to the sampler (the first len(data)
    examples after each ``train_data`` call, i.e. one pass over each task's data, so that with
    several epochs an example is not offered again; in the library's loop and a user's alike) and the step's
    loss is 0 (zero gradients: whatever the optimizer then does, every fit starts from the initial
    weights).

    Learner: before each evaluation after the memory changed (the end of every task, or any
    evaluation during an online or task-free stream: ``predict`` refits first) the model is
    re-initialised (to the run's initial weights, saved when the first task starts, or at the first
    step) and trained from scratch on the memory alone: ``fit_epochs`` epochs of SGD (momentum 0.9,
    weight decay ``weight_decay``) in batches of ``fit_batch_size``, learning rate by ``sgdr_rate``
    (a warm-up epoch at max_lr / 10, then SGDR with T_0 = 1, T_mult = 2 between ``max_lr`` 0.05 and
    ``min_lr`` 0.0005: the paper's recipe), the
    cross-entropy masked by the scenario as the loop masks (class-IL: classes seen so far; task-IL:
    each example's own task), the run's augmentation applied, in float32 whatever the run's
    precision. CutMix (optional in the paper) is not
    done here. The batch order comes from a generator seeded once (from the run's generator) when
    the first task starts, so the model after a task is a function of the memory alone (and of the
    initial weights and that seed). The paper trains 256 epochs on CIFAR; ``fit_epochs`` defaults to 32,
    enough for the small MLPs of the digit benchmarks (a few hundred examples).
    """

    name = "gdumb"
    family = "replay"
    data_parallel = False
    scenarios = ALL_SCENARIOS
    params = {
        "memory": MEMORY,
        "fit_epochs": Param(32, ">=1", "epochs of training from scratch on the memory, at every task end"),
        "fit_batch_size": Param(16, ">=1", "batch size of that training"),
        "max_lr": Param(0.05, ">0", "SGDR's largest learning rate"),
        "min_lr": Param(0.0005, ">=0", "SGDR's smallest learning rate"),
        "weight_decay": Param(1e-6, ">=0", "SGD weight decay of that training"),
    }
    help = "GDumb: greedy class-balanced memory; before evaluating, retrain from scratch on the memory only"
    task_free = True

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.buffer_ = ReplayBuffer(self.memory, "greedy")
        self.init_: dict[str, torch.Tensor] | None = None
        self.seed_: int | None = None
        self.offered_ = 0  # batches offered to the sampler
        self.budget_ = 0  # examples still to offer from the current task's data (one pass)
        self.fitted_ = -1  # ``offered_`` when the model was last fitted on the memory

    def _start(self, ctx) -> None:
        if self.init_ is None:
            self.init_ = copy.deepcopy(ctx.model.state_dict())
            self.seed_ = int(torch.randint(2**62, (1,), generator=ctx.generator, device="cpu"))

    def before_task(self, ctx, task):
        self._start(ctx)

    def train_data(self, ctx, task):
        got = super().train_data(ctx, task)
        self.budget_ = 0 if got is None else len(got[0])
        return got

    def adapt_batch(self, ctx, batch):
        self._start(ctx)
        take = min(self.budget_, len(batch.y))
        if take > 0:
            self.buffer_.add(batch.x[:take], batch.y[:take], batch.t[:take], ctx.generator)
            self.budget_ -= take
            self.offered_ += 1
        return batch

    def task_loss(self, ctx, batch, out, loss):
        return out.sum() * 0.0  # nothing is learnt from the stream (zero gradients; the refit starts afresh)

    def after_task(self, ctx, task):
        self.refit(ctx)

    def refit(self, ctx: Context) -> None:
        """Retrain on the memory if it changed since the last fit."""
        if self.fitted_ != self.offered_ and len(self.buffer_) > 0:
            with torch.inference_mode(False), torch.autocast(ctx.device.type, enabled=False):
                self.retrain(ctx)
            self.fitted_ = self.offered_

    def predict(self, ctx, x):
        self.refit(ctx)
        return ctx.model(x)

    def retrain(self, ctx: Context) -> None:
        """Re-initialise ``ctx.model`` to the initial weights and train it on the memory only."""
        model = ctx.model
        model.load_state_dict(self.init_)
        x, y, t = self.buffer_.tensors()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=self.max_lr, momentum=0.9, weight_decay=self.weight_decay)
        g = torch.Generator().manual_seed(self.seed_)
        was_training = model.training
        model.train()
        with torch.enable_grad():
            for epoch in range(self.fit_epochs):
                for group in opt.param_groups:
                    group["lr"] = sgdr_rate(epoch, self.max_lr, self.min_lr)
                perm = ctx.put(torch.randperm(len(y), generator=g, device="cpu"))
                for i in range(0, len(y), self.fit_batch_size):
                    idx = perm[i : i + self.fit_batch_size]
                    bx = x[idx] if ctx.augment is None else ctx.augment(x[idx])
                    loss = F.cross_entropy(ctx.mask(model(bx), t[idx]), y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        model.train(was_training)

    def state_dict(self) -> dict[str, Any]:
        return {
            "buffer_": self.buffer_.state_dict(),
            "init_": self.init_,
            "seed_": self.seed_,
            "offered_": self.offered_,
            "fitted_": self.fitted_,
            "budget_": self.budget_,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer_ = ReplayBuffer(self.memory, "greedy")
        self.buffer_.load_state_dict(state["buffer_"])
        self.init_, self.seed_ = state["init_"], state["seed_"]
        self.offered_, self.fitted_ = state.get("offered_", 0), state.get("fitted_", -1)
        self.budget_ = state.get("budget_", 0)


__all__ = ["GDumb", "sgdr_rate"]

"""Experience replay (ER) and Averaged GEM (A-GEM): a small memory of past examples."""

from __future__ import annotations

from typing import Any

import torch

from .. import devices
from ..memory import POLICIES, ReplayBuffer
from .base import ALL_SCENARIOS, Batch, Context, Param, Strategy

MEMORY = Param(1000, ">=1", "examples kept in memory in total")


def flat_grad(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """The gradients of ``params`` as one flat vector (zeros where a gradient is missing)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def set_flat_grad(params: list[torch.nn.Parameter], flat: torch.Tensor) -> None:
    """Write a flat vector back into ``p.grad`` of every parameter."""
    i = 0
    for p in params:
        n = p.numel()
        if p.grad is None:
            p.grad = flat[i : i + n].view_as(p).clone()
        else:
            p.grad.copy_(flat[i : i + n].view_as(p))
        i += n


def memory_loss_grad(ctx: Context, x, y, t) -> torch.Tensor:
    """The flat gradient of the task loss on a memory batch, masked like the loop masks training
    samples (task-IL: each sample's own task; class-IL: the classes seen so far).

    Several processes: each computes its part of the batch (``local_memory_grad``) and the parts
    are summed (``devices.all_reduce_``), so every process gets the same, global gradient."""
    g = local_memory_grad(ctx, x, y, t)
    devices.all_reduce_([g])
    return g


def local_memory_grad(ctx: Context, x, y, t) -> torch.Tensor:
    """``memory_loss_grad`` without the sum over processes: in one process the gradient itself;
    with several, the gradient of this process's contiguous part (``devices.shard``) of the mean
    loss, weighted by n_part / n (zeros for an empty part), whose sum over processes is the gradient."""
    params = ctx.params()
    weight = 1.0
    if devices.world_size() > 1:
        rows = devices.shard(len(y))
        weight = (rows.stop - rows.start) / max(len(y), 1)
        if weight == 0:
            return torch.cat([torch.zeros_like(p).reshape(-1) for p in params])
        x, y, t = x[rows], y[rows], t[rows]
    loss = torch.nn.functional.cross_entropy(ctx.mask(ctx.model(x), t), y)
    if weight != 1.0:
        loss = loss * weight
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


class _Buffered(Strategy):
    """Shared parameters and state of the methods that keep a ``ReplayBuffer``."""

    family = "replay"
    params = {
        "memory": MEMORY,
        "sampling": Param("reservoir", POLICIES, "how the memory is filled"),
        "replay_batch_size": Param(0, ">=0", "memory examples per step (0: the batch size)"),
    }

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.buffer_ = ReplayBuffer(self.memory, self.sampling)

    def replay_size(self, ctx: Context) -> int:
        return self.replay_batch_size or ctx.batch_size

    def state_dict(self) -> dict[str, Any]:
        return {"buffer_": self.buffer_.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer_ = ReplayBuffer(self.memory, self.sampling)
        self.buffer_.load_state_dict(state["buffer_"])


class ER(_Buffered):
    """Experience replay (Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual Learning").

    A memory of at most ``memory`` examples (x, y, task index). At every step a batch of
    ``replay_batch_size`` examples (0: the training batch size) is drawn uniformly from the memory
    and concatenated to the current batch, so the loop's single loss is

        CE over [current batch ; memory batch]    (the mean over both, equal weight per example)

    Each memory example keeps its task index, so task-IL masks it by its own task's head; in
    class-IL it competes over every class seen so far.

    Memory update:
      * ``sampling=reservoir`` (the paper's): streaming, during training. After its replay batch is
        drawn, every incoming batch is offered to the reservoir (algorithm R: uniform over the
        stream; with several epochs an example is offered once per epoch, as in Mammoth's ER). The
        memory therefore holds current-task examples too.
      * ``sampling=balanced``: at the end of each task, the task's training examples are offered in
        a random order to a class-balanced memory (equal slots per class seen); while training a
        task, the memory holds only earlier tasks.
    """

    name = "er"
    scenarios = ALL_SCENARIOS
    task_free = True  # with the reservoir (the balanced memory is filled at task ends)
    help = "experience replay: mix a batch from a small memory (reservoir or class-balanced) into every step"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.task_free = self.sampling == "reservoir"

    def adapt_batch(self, ctx, batch):
        x, y, t = batch
        if len(self.buffer_) > 0:
            mx, my, mt = self.buffer_.sample(self.replay_size(ctx), ctx.generator)
            mixed = Batch(torch.cat([x, mx]), torch.cat([y, my]), torch.cat([t, mt]))
        else:
            mixed = batch
        if self.sampling == "reservoir":
            self.buffer_.add(x, y, t, ctx.generator)
        return mixed

    def after_task(self, ctx, task):
        if self.sampling == "balanced":
            order = ctx.put(torch.randperm(len(task.train), generator=ctx.generator, device="cpu"))
            self.buffer_.add(task.train.take(order), task.train.y[order], task.ids(), ctx.generator)


def agem_project(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """A-GEM's projection: g if g . g_ref >= 0, else g - (g . g_ref / g_ref . g_ref) g_ref.

    The result has a non-negative dot product with g_ref (zero when projected): the update does not
    increase the loss on the memory batch to first order. Computed without asking the host which
    case holds: the coefficient is 0 when g is kept (and g - 0 * g_ref is g exactly).
    """
    dot = torch.dot(g, g_ref)
    norm2 = torch.dot(g_ref, g_ref)
    coef = torch.where((dot < 0) & (norm2 > 0), dot / norm2.clamp_min(torch.finfo(norm2.dtype).tiny), 0.0)
    return g - coef * g_ref


class AGEM(_Buffered):
    """Averaged Gradient Episodic Memory (Chaudhry et al. 2019, "Efficient Lifelong Learning with A-GEM").

    After the backward pass of every step (from the second task on), a reference gradient g_ref is
    computed on a batch of ``replay_batch_size`` examples (0: the batch size) drawn from the memory
    of earlier tasks, with its own forward and backward pass (``torch.autograd.grad``: the loop's
    gradients are untouched). With g the flat gradient of the training loss:

        if g . g_ref < 0:   g <- g - (g . g_ref) / (g_ref . g_ref) * g_ref

    The memory (``memory`` examples in total, ``sampling`` reservoir or balanced) is updated at the
    end of each task with the task's training examples, so it only ever holds earlier tasks (as in
    the paper's episodic memory).
    """

    name = "agem"
    scenarios = ALL_SCENARIOS
    help = "A-GEM: project the gradient so the loss on a memory batch does not increase"

    def after_backward(self, ctx):
        if len(self.buffer_) == 0:
            return
        params = ctx.params()
        x, y, t = self.buffer_.sample(self.replay_size(ctx), ctx.generator)
        g_ref = memory_loss_grad(ctx, x, y, t)
        g = flat_grad(params)
        set_flat_grad(params, agem_project(g, g_ref))

    def after_task(self, ctx, task):
        order = ctx.put(torch.randperm(len(task.train), generator=ctx.generator, device="cpu"))
        self.buffer_.add(task.train.take(order), task.train.y[order], task.ids(), ctx.generator)


__all__ = ["AGEM", "ER", "agem_project", "flat_grad", "local_memory_grad", "memory_loss_grad", "set_flat_grad"]

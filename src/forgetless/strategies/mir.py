"""MIR: Maximally Interfered Retrieval (Aljundi, Caccia, Belilovsky, Caccia, Lin, Charlin &
Tuytelaars, NeurIPS 2019, "Online Continual Learning with Maximally Interfered Retrieval")."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from .. import devices
from ..memory import ReplayBuffer
from .base import ALL_SCENARIOS, Batch, Context, Param, Strategy
from .replay import MEMORY


def interference(ctx: Context, batch: Batch, cx: torch.Tensor, cy: torch.Tensor, ct: torch.Tensor) -> torch.Tensor:
    """MIR's score of each candidate (cx, cy, ct): l(theta_v; x_c) - l(theta; x_c), with
    theta_v = theta - lr * grad_theta CE(batch; theta) the virtual SGD step on the incoming batch
    (lr: the optimizer's current rate) and l the per-example masked cross-entropy. The model
    itself is untouched: the forward passes use ``torch.func.functional_call`` with copies of its
    buffers (batch-norm statistics), and no gradient reaches ``.grad``."""
    model = ctx.model
    named = dict(model.named_parameters())
    trainable = [n for n, p in named.items() if p.requires_grad]
    buffers = lambda: {n: b.clone() for n, b in model.named_buffers()}  # noqa: E731
    lr = ctx.optimizer.param_groups[0]["lr"]
    with devices.autocast(ctx.device, ctx.precision):
        out = functional_call(model, ({**named, **buffers()}), (batch.x,))
        loss = F.cross_entropy(ctx.mask(out, batch.t), batch.y)
    grads = torch.autograd.grad(loss, [named[n] for n in trainable], allow_unused=True)
    virtual = dict(named)
    for n, g in zip(trainable, grads):
        if g is not None:
            virtual[n] = named[n].detach() - lr * g
    with torch.no_grad(), devices.autocast(ctx.device, ctx.precision):
        before = F.cross_entropy(
            ctx.mask(functional_call(model, {**named, **buffers()}, (cx,)), ct), cy, reduction="none"
        )
        after = F.cross_entropy(
            ctx.mask(functional_call(model, {**virtual, **buffers()}, (cx,)), ct), cy, reduction="none"
        )
    return after.float() - before.float()


class MIR(Strategy):
    """Maximally Interfered Retrieval (Aljundi et al., NeurIPS 2019), ER with a chosen replay batch.

    At every step, with B the incoming batch: draw C = ``candidates`` examples uniformly from the
    reservoir memory, take the virtual SGD step theta_v = theta - lr * grad CE(B; theta) (lr: the
    optimizer's current learning rate; a plain SGD step even when the run's optimizer is Adam),
    score every candidate by how much its loss increases,

        s(x_c) = l(theta_v; x_c) - l(theta; x_c),

    and replay the k = ``replay_batch_size`` candidates of largest score (``torch.topk``) with B: the
    loop's loss is the cross-entropy over [B ; chosen] (the mean over both, as ER), masked as the
    loop masks (task-IL: each example's own task; class-IL: the classes seen so far). The memory is
    then offered B (reservoir, as ER). Defaults: k = the batch size (the paper's online setting
    replays 10 memory examples with every incoming batch of 10) and C = 5 k (our choice: the paper
    tunes C; with C = k, MIR is ER).
    Under several processes it is refused (the scores would be computed per process part).
    """

    name = "mir"
    family = "replay"
    task_free = True
    data_parallel = False
    scenarios = ALL_SCENARIOS
    params = {
        "memory": MEMORY,
        "candidates": Param(0, ">=0", "memory examples scored at every step (C; 0: five times k)"),
        "replay_batch_size": Param(0, ">=0", "candidates replayed, the k of largest loss increase (0: the batch size)"),
    }
    help = "MIR: replay the memory examples whose loss a virtual step on the incoming batch increases most"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.buffer_ = ReplayBuffer(self.memory, "reservoir")

    def sizes(self, ctx: Context) -> tuple[int, int]:
        """(C, k): candidates drawn and examples replayed per step."""
        k = self.replay_batch_size or ctx.batch_size
        return (self.candidates or 5 * k), k

    def choose(self, ctx: Context, batch: Batch):
        """(x, y, t) of the k memory examples of largest interference among C drawn candidates."""
        C, k = self.sizes(ctx)
        idx = ctx.put(self.buffer_.draw(C, ctx.generator))
        cx, cy, ct = self.buffer_.x[idx], self.buffer_.y[idx], self.buffer_.t[idx]
        k = min(k, len(idx))
        top = interference(ctx, batch, cx, cy, ct).topk(k).indices
        return cx[top], cy[top], ct[top]

    def adapt_batch(self, ctx, batch):
        x, y, t = batch
        mixed = batch
        if len(self.buffer_) > 0:
            mx, my, mt = self.choose(ctx, batch)
            mixed = Batch(torch.cat([x, mx]), torch.cat([y, my]), torch.cat([t, mt]))
        self.buffer_.add(x, y, t, ctx.generator)
        return mixed

    def state_dict(self) -> dict[str, Any]:
        return {"buffer_": self.buffer_.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer_ = ReplayBuffer(self.memory, "reservoir")
        self.buffer_.load_state_dict(state["buffer_"])


__all__ = ["MIR", "interference"]

"""Dark Experience Replay: DER and DER++ (Buzzega, Boschini, Porrello, Abati & Calderara, NeurIPS 2020,
"Dark Experience for General Continual Learning: a Strong, Simple Baseline")."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..memory import ReplayBuffer
from .base import ALL_SCENARIOS, Batch, Context, Param, Strategy
from .replay import MEMORY

REPLAY_BATCH = Param(0, ">=0", "memory examples per replay batch (0: the batch size)")


class _StreamMemory(Strategy):
    """A reservoir memory filled from the stream after every step, and the rows of the incoming batch.

    ``adapt_batch`` remembers the incoming (un-augmented) batch; ``after_step`` offers it to the
    reservoir together with whatever ``stored(ctx)`` returns (extra per-example tensors, e.g. DER's
    logits). The replay batches are drawn (``replay``) after the incoming batch is seen and before
    it is offered, as in ER. Several processes are refused (``data_parallel``): the replay terms are
    computed on the global batch, not split."""

    task_free = True
    family = "replay"
    data_parallel = False
    params = {"memory": MEMORY, "replay_batch_size": REPLAY_BATCH}

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.buffer_ = ReplayBuffer(self.memory, "reservoir")
        self._incoming: Batch | None = None

    def replay_size(self, ctx: Context) -> int:
        return self.replay_batch_size or ctx.batch_size

    def replay(self, ctx: Context):
        """A replay batch drawn uniformly from the memory: (slots on the device, x, y, t), x augmented
        like the training batches (``ctx.augment``)."""
        idx = ctx.put(self.buffer_.draw(self.replay_size(ctx), ctx.generator))
        x = self.buffer_.x[idx]
        if ctx.augment is not None:
            x = ctx.augment(x)
        return idx, x, self.buffer_.y[idx], self.buffer_.t[idx]

    def stored(self, ctx: Context) -> dict[str, torch.Tensor]:
        return {}

    def adapt_batch(self, ctx, batch):
        self._incoming = batch
        return batch

    def after_step(self, ctx, batch):
        x, y, t = self._incoming
        self.buffer_.add(x, y, t, ctx.generator, **self.stored(ctx))
        self._incoming = None

    def state_dict(self) -> dict[str, Any]:
        return {"buffer_": self.buffer_.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer_ = ReplayBuffer(self.memory, "reservoir")
        self.buffer_.load_state_dict(state["buffer_"])


def logit_mse(z: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """(1 / (m C)) sum_i ||z_i - stored_i||^2 over m examples and C outputs (torch's mse_loss mean)."""
    return F.mse_loss(z.float(), stored.float())


class DER(_StreamMemory):
    """Dark Experience Replay (Buzzega et al., NeurIPS 2020).

    A reservoir memory M of (x, z) where z = h_theta(x) are the raw logits (every output) the
    network gave x when x was trained on (the forward pass of that step, before its update). At
    every step, with B the incoming batch and (x', z') a batch of ``replay_batch_size`` examples
    (0: the batch size) drawn uniformly from M:

        L = CE(B)  +  alpha * (1 / (m C)) sum_{(x', z')} || h_theta(x') - z' ||^2

    (CE(B): the loop's masked cross-entropy; the MSE is the mean over the m replayed examples and
    the C outputs, as in the authors' code (mammoth ``models/der.py``); the paper writes the squared
    L2 norm, which differs by the constant C). The replayed inputs get the run's augmentation; the
    incoming batch (un-augmented x, and the logits of its augmented view) then enters the reservoir.
    Default alpha = 0.2: the paper's best value on Seq-MNIST with a 200-example memory (Appendix,
    best hyperparameters; 1.0 at 500). Under several processes it is refused (the replay term is
    not split between them).
    """

    name = "der"
    scenarios = ALL_SCENARIOS
    params = {**_StreamMemory.params, "alpha": Param(0.2, ">=0", "weight of the MSE on the stored logits")}
    help = "DER: replay stored logits with an MSE (reservoir memory of x and its logits)"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._logits: torch.Tensor | None = None

    def stored(self, ctx):
        return {"logits": self._logits}

    def replay_terms(self, ctx: Context) -> torch.Tensor:
        idx, x, _, _ = self.replay(ctx)
        return self.alpha * logit_mse(ctx.model(x), self.buffer_.extra["logits"][idx])

    def penalty(self, ctx, batch, out):
        self._logits = out.detach()[: len(self._incoming.y)].float()
        if len(self.buffer_) == 0:
            return None
        return self.replay_terms(ctx)


class DERpp(DER):
    """DER++ (Buzzega et al., NeurIPS 2020): DER plus a label term on a second,
    independently drawn memory batch (x'', y''):

        L = CE(B) + alpha * (1 / (m C)) sum || h_theta(x') - z' ||^2 + beta * CE(h_theta(x''), y'')

    where the replay cross-entropy is masked like the loop's (task-IL: each example's own task;
    class-IL: every class seen so far). Defaults alpha = 0.2, beta = 1.0: the paper's best values on
    Seq-MNIST with a 200-example memory (alpha = 1.0, beta = 0.5 at 500).
    """

    name = "derpp"
    params = {**DER.params, "beta": Param(1.0, ">=0", "weight of the cross-entropy on a second memory batch")}
    help = "DER++: DER's logit MSE plus cross-entropy on the labels of a second memory batch"

    def replay_terms(self, ctx):
        loss = super().replay_terms(ctx)
        _, x2, y2, t2 = self.replay(ctx)
        return loss + self.beta * F.cross_entropy(ctx.mask(ctx.model(x2), t2), y2)


__all__ = ["DER", "DERpp", "logit_mse"]

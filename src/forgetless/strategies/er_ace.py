"""ER-ACE: experience replay with asymmetric cross-entropy (Caccia, Aljundi, Asadi, Tuytelaars,
Pineau & Belilovsky, ICLR 2022, "New Insights on Reducing Abrupt Representation Change in Online
Continual Learning")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ALL_SCENARIOS
from .der import _StreamMemory


def present_mask(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``logits`` with every output whose class is absent from the labels ``y`` set to -inf (made
    on the device without asking the host which classes are present)."""
    present = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    present[y] = True
    return logits.masked_fill(~present, float("-inf"))


class ERACE(_StreamMemory):
    """ER-ACE (Caccia et al., ICLR 2022): the incoming batch B's cross-entropy is taken
    over the classes present in B only, the replay's over every class seen:

        L = CE_{C_B}(B) + CE_{seen}(B_M)

    with C_B the set of labels in B (the logits of the other classes are masked out, on top of the
    scenario's mask: class-IL the seen classes, task-IL the example's task head), and B_M a batch of
    ``replay_batch_size`` examples (0: the batch size) drawn uniformly from a reservoir memory
    (masked like the loop: class-IL every class seen so far). The two terms are means over their
    own batches, summed (ER instead averages over the concatenation). The memory is updated with
    the incoming batch after the replay batch is drawn (reservoir, as ER). The incoming term keeps
    new classes from pushing the logits of old classes down, which is what drifts their features
    when they first arrive (the paper's "abrupt representation change").
    """

    name = "er-ace"
    scenarios = ALL_SCENARIOS
    help = "ER-ACE: replay, with the incoming batch's cross-entropy over its own classes only"

    def task_loss(self, ctx, batch, out, loss):
        """Replaces the loop's CE by the asymmetric one over the classes present in ``batch``."""
        return F.cross_entropy(present_mask(ctx.mask(out, batch.t), batch.y), batch.y)

    def penalty(self, ctx, batch, out):
        if len(self.buffer_) == 0:
            return None
        _, x, y, t = self.replay(ctx)
        return F.cross_entropy(ctx.mask(ctx.model(x), t), y)


__all__ = ["ERACE", "present_mask"]

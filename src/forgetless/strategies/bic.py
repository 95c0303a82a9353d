"""BiC: bias correction for class-incremental learning (Wu et al. 2019)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..memory import ExemplarSet, herding
from .base import Param
from .distill import WithOldModel, distillation_loss
from .icarl import extract, features, with_exemplars
from .replay import MEMORY

BETA_L2 = 0.1  # weight of beta^2 / 2 in stage 2, as in the authors' code


class BiC(WithOldModel):
    """Bias Correction (Wu, Chen, Wang, Ye, Liu, Guo & Fu 2019, "Large Scale Incremental Learning").
    Class-incremental only.

    Memory: K = ``memory`` examples in total, m = K // (classes seen) per class, of which
    n_val = ceil(val_fraction * m) are validation exemplars and m - n_val training exemplars (the
    paper's 9:1 train/val split of the exemplars for val_fraction = 0.1). At the start of task k, the
    stored sets are cut to the new quotas and n_val examples of every new class are held out of
    its training data (drawn at random): the validation set val_old + val_new is balanced, n_val
    per class, and never trained on in stage 1. Training exemplars are chosen by herding
    (iCaRL's, on the model's penultimate features) at the end of each task.

    Stage 1 (the task's training, on its data minus the held-out part plus the old classes'
    training exemplars), with n old and m new classes, lambda = n / (n + m):

        L = lambda * L_d + (1 - lambda) * L_c
        L_c = CE over the classes seen so far,  L_d = - sum_{k old} pi_hat_k(x) log pi_k(x)

    with pi = softmax(o / T) over the old classes of the model, pi_hat the same for the previous
    model (temperature T = 2), both after the bias layers learnt so far (``correct``). L_d is the
    paper's soft-target cross-entropy without a T^2 factor (``distillation_loss / T^2``: same value
    up to the teacher's entropy, same gradient). This replaces the loop's CE (the ``task_loss`` hook).

    Stage 2 (after stage 1, from the second task on): with the model frozen, the logits o of task
    k's new classes are corrected as q = alpha_k * o + beta_k (other logits unchanged) and
    (alpha_k, beta_k) minimise the cross-entropy over the classes seen so far on the validation
    set (the paper's Eq. 5) plus 0.1 * beta_k^2 / 2, the small L2 term of the authors' code: on a
    validation set this small the classes are often separable and the plain cross-entropy then
    drives (alpha, beta) to infinity. The problem is convex in (alpha, beta); it is solved on the
    cached logits with L-BFGS (the same optimum as the code's 200 epochs of SGD, reached exactly).
    ``predict`` applies every learnt (alpha_j, beta_j) to task j's logits.
    Params: memory, temperature (T = 2), val_fraction (0.1).
    """

    name = "bic"
    family = "replay"
    params = {
        "memory": MEMORY,
        "temperature": Param(2.0, ">0", "distillation temperature T"),
        "val_fraction": Param(0.1, "(0, 1)", "share of each class's exemplars kept for the bias stage"),
    }
    scenarios = ("class",)
    help = "BiC: exemplars + distillation, then a 2-parameter bias correction of the new classes' logits (class-IL)"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.exemplars = ExemplarSet()  # training exemplars, herding order
        self.val = ExemplarSet()  # validation exemplars (held out of training)
        self.bias_: torch.Tensor | None = None  # [tasks, 2]: (alpha_j, beta_j), (1, 0) until learnt
        self._keep: torch.Tensor | None = None  # rows of the current task's data used in stage 1

    # ---- the bias layers --------------------------------------------------------------------
    def correct(self, benchmark, logits: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Logits with task j's outputs replaced by alpha_j * o + beta_j for every task j (``bias``:
        [tasks, 2], default the learnt ``bias_``; (1, 0) leaves a task unchanged)."""
        bias = self.bias_ if bias is None else bias
        if bias is None:
            return logits
        bias = bias.to(logits.device)
        owner = self._owner(benchmark, logits.device)
        ones = torch.ones(1, dtype=bias.dtype, device=bias.device)
        zeros = torch.zeros(1, dtype=bias.dtype, device=bias.device)
        alpha = torch.where(owner >= 0, torch.cat([bias[:, 0], ones])[owner], ones)
        beta = torch.where(owner >= 0, torch.cat([bias[:, 1], zeros])[owner], zeros)
        return logits * alpha + beta

    def _owner(self, benchmark, device) -> torch.Tensor:
        """The task owning each output (-1: none), on ``device``; made once per benchmark."""
        key = (id(benchmark), device)
        if getattr(self, "_owner_key", None) != key:
            with torch.inference_mode(False):  # (first made during an evaluation, used in training)
                owner = torch.full((benchmark.n_outputs,), -1, dtype=torch.long, device="cpu")
                for task in benchmark.tasks:
                    owner[task.classes] = task.id
                self._owner_key, self._owner_t = key, owner.to(device)
        return self._owner_t

    def _ensure_bias(self, benchmark, device=None) -> None:
        if self.bias_ is None or len(self.bias_) != len(benchmark.tasks):
            self.bias_ = torch.tensor([[1.0, 0.0]] * len(benchmark.tasks), device=device)

    # ---- hooks ------------------------------------------------------------------------------
    def quotas(self, benchmark, task_id: int) -> tuple[int, int]:
        """(training exemplars, validation exemplars) per class once task ``task_id``'s classes are in."""
        n_seen = len(benchmark.classes_upto(task_id))
        m = self.memory // n_seen
        n_val = math.ceil(self.val_fraction * m)
        if m - n_val < 1 or n_val < 1:
            raise UsageError(
                f"bic: memory={self.memory} is too small for {n_seen} classes: it needs at least "
                f"2 examples per class (one training and one validation exemplar)"
            )
        return m - n_val, n_val

    def before_task(self, ctx, task):
        self._ensure_bias(ctx.benchmark, ctx.device)
        if task.id > 0:
            self.snapshot(ctx)
        n_train, n_val = self.quotas(ctx.benchmark, task.id)
        self.exemplars.reduce(n_train)
        self.val.reduce(n_val)
        keep = []
        for c in task.classes:
            rows = (task.train.y == c).nonzero().flatten()
            rows = rows[ctx.put(torch.randperm(len(rows), generator=ctx.generator, device="cpu"))]
            if len(rows) <= n_val:
                raise UsageError(
                    f"bic: class {c} has {len(rows)} training examples, too few to hold out "
                    f"{n_val} for validation; lower memory or val_fraction"
                )
            self.val.set(c, task.train.take(rows[:n_val]), task.id)
            keep.append(rows[n_val:])
        self._keep = torch.cat(keep).sort().values

    def train_data(self, ctx, task):
        return with_exemplars(task, self._keep, self.exemplars, ctx.benchmark.classes_before(task.id))

    def distill_weight(self, benchmark, task_id: int) -> float:
        """lambda = n / (n + m): n old classes, m new ones (the paper's Eq. 3)."""
        return len(benchmark.classes_before(task_id)) / len(benchmark.classes_upto(task_id))

    def task_loss(self, ctx, batch, out, loss):
        """lambda * L_d + (1 - lambda) * L_c. L_c is the loop's masked cross-entropy ``loss`` while
        no learnt bias layer changes the logits; otherwise the same CE (``ctx.mask``) of the
        corrected logits."""
        bench = ctx.benchmark
        fitted = ctx.task_id >= 2  # bias layers are learnt after tasks 2, 3, ...: none changes task 1 or 2's logits
        z = self.correct(bench, out) if fitted else out
        ce = F.cross_entropy(ctx.mask(z, batch.t), batch.y) if fitted else loss
        old_classes = bench.index_before(ctx.task_id)
        old = self.old_model(ctx)
        if not len(old_classes) or old is None:
            return ce
        lam = self.distill_weight(bench, ctx.task_id)
        with torch.no_grad():
            target = self.correct(bench, old(batch.x))
        T = self.temperature
        kd = distillation_loss(z[:, old_classes], target[:, old_classes], T) / (T * T)
        return lam * kd + (1 - lam) * ce

    def after_task(self, ctx, task):
        self._ensure_bias(ctx.benchmark, ctx.device)
        if task.id > 0:
            self.fit_bias(ctx, task)
        n_train, _ = self.quotas(ctx.benchmark, task.id)
        keep = task.train.subset(self._keep) if self._keep is not None else task.train
        for c in task.classes:
            xc = keep.take(keep.y == c)
            if len(xc):
                self.exemplars.set(c, xc[herding(features(ctx.model, xc), n_train)], task.id)
        self._keep = None

    def fit_bias(self, ctx, task) -> None:
        """Stage 2: learn (alpha_k, beta_k) of ``task`` on the balanced validation exemplars."""
        bench = ctx.benchmark
        vx, vy, _ = self.val.tensors(bench.classes_upto(task.id))
        _, logits = extract(ctx.model, vx)
        logits = logits.detach().double()
        fixed = self.bias_.double()
        ab = torch.tensor([1.0, 0.0], dtype=torch.float64, device=logits.device, requires_grad=True)
        opt = torch.optim.LBFGS(
            [ab], lr=1.0, max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-14, line_search_fn="strong_wolfe"
        )
        rows = torch.arange(len(fixed), device=fixed.device)

        def closure():
            opt.zero_grad()
            bias = torch.where((rows == task.id)[:, None], ab[None, :], fixed)
            loss = F.cross_entropy(bench.mask_logits(self.correct(bench, logits, bias), None, task.id), vy)
            loss = loss + BETA_L2 / 2 * ab[1] ** 2
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        self.bias_[task.id] = ab.detach().float()

    def predict(self, ctx, x):
        return self.correct(ctx.benchmark, ctx.model(x))

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "exemplars_": self.exemplars.state_dict(),
            "val_": self.val.state_dict(),
            "bias_": None if self.bias_ is None else self.bias_.clone(),
            "old_model_": self.old_model_,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.exemplars, self.val = ExemplarSet(), ExemplarSet()
        self.exemplars.load_state_dict(state["exemplars_"])
        self.val.load_state_dict(state["val_"])
        self.bias_ = None if state["bias_"] is None else state["bias_"].clone()
        self.old_model_, self._old = state["old_model_"], None


__all__ = ["BiC"]

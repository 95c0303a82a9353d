"""The regularization family: one quadratic penalty (``penalty.py``), six ways to weigh it (the estimators
``fisher.py``, ``mas.py``, ``scp.py``, ``path_integral.py``).

Every method adds ``lam * sum_i Omega_i (theta_i - theta*_i)^2`` (no 1/2; see ``penalty.py`` for
how each paper's constant maps onto lam) from the second task on. At the end of every task
(``after_task``) the method estimates Omega on the task's TRAINING data, with the outputs that
compete in the scenario (``benchmark.active_outputs(task.id)``), and anchors theta* at the
parameters reached.

By default (``closed_form=true``) the penalty's gradient ``2 lam Omega (theta - theta*)`` is added to
``p.grad`` in ``after_backward`` with ``torch._foreach_*`` ops instead of going through autograd:
same result, cheaper. Then the ``penalty`` hook returns None, so the loop's logged loss is the task
loss; ``penalty_value(ctx)`` gives the value. With ``closed_form=false`` the hook returns the
differentiable value and autograd does the rest.

Default lam values are chosen by one protocol on validation data (docs/results.md, "Default lam
values"; ``benchmarks/select_defaults.py``, ``benchmarks/defaults_selection.json``): a x10 grid widened
until the best is inside it, on Permuted Fashion-MNIST (5 tasks x 1 epoch, the homework MLP, Adam
1e-3), on the homework protocol on Fashion-MNIST (10 epochs, Adam 1e-4, a fresh optimizer per task)
and on task-IL Split MNIST (MLP 400-400, 500 iterations per task); the default is the value with
the best mean rank over the three benchmarks. EWC and online EWC use the min-max normalized Fisher by
default (``normalize="minmax"``, RWalk's normalization): with the raw Fisher their best lam moves from
10 (Permuted Fashion-MNIST) to 10^9 (task-IL Split MNIST, whose fitted 2-class heads have a tiny
Fisher), and no default served both; normalized, the best values are 10-100 on both
(``benchmarks/ewc_normalisation.py``). ``normalize="none"`` is the papers' raw penalty.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import ALL_SCENARIOS, Context, Param, Strategy
from .fisher import LABELS, fisher_diagonal
from .mas import mas_hebbian, mas_importance
from .path_integral import PathIntegral, RiemannianWalk, minmax
from .penalty import QuadraticPenalty, flatten, views
from .scp import scp_importance

CLOSED_FORM = Param(True, help="add the penalty's gradient in closed form (false: through autograd)")


NORMALIZE = Param(
    "minmax",
    ("none", "minmax"),
    "scale of each task's Fisher: min-max to [0, 1] (the default), or raw (none: the paper's)",
)


def lam(default: float) -> Param:
    """The ``lam`` parameter of a quadratic-penalty strategy, with its default."""
    return Param(default, ">=0", "strength of the quadratic penalty")


def task_generator(ctx: Context, task, salt: int) -> torch.Generator:
    """A generator for one task's importance estimate, derived from the run's seed without drawing
    from ``ctx.generator`` (so the batch order of later tasks does not depend on the method)."""
    return torch.Generator().manual_seed((ctx.generator.initial_seed() * 1_000_003 + 7919 * task.id + salt) % 2**63)


class Regularizer(Strategy):
    """A quadratic penalty anchored at the end of every task; subclasses define ``consolidate``."""

    name = "regularizer"
    family = "regularization"
    params: dict[str, Param] = {"lam": lam(1.0), "closed_form": CLOSED_FORM}
    scenarios = ALL_SCENARIOS
    keep_terms = False  # keep every task's (Omega, anchor) separately (separate-penalty EWC)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.quad = QuadraticPenalty(keep_terms=self.keep_terms)
        self.tasks_seen_ = 0

    # ---- hooks ------------------------------------------------------------------------------
    def penalty(self, ctx, batch, out):
        if self.closed_form or not self.quad.active:
            return None
        return self.quad.value(ctx.params(), self.lam)

    keeps_grads = False  # SI, RWalk: hold on to the task-loss gradient tensors (see ``_task_grads``)

    def after_backward(self, ctx):
        if self.closed_form:
            self.quad.add_grad_(ctx.params(), self.lam, inplace=not self.keeps_grads)

    def after_task(self, ctx, task):
        self.consolidate(ctx, task)
        self.tasks_seen_ += 1

    def consolidate(self, ctx: Context, task) -> None:
        raise NotImplementedError

    # ---- helpers ----------------------------------------------------------------------------
    def penalty_value(self, ctx: Context) -> float:
        """The current penalty ``lam * sum Omega (theta - theta*)^2`` (for logging)."""
        if not self.quad.active:
            return 0.0
        with torch.no_grad():
            return float(self.quad.value(ctx.params(), self.lam))

    @staticmethod
    def _data(ctx: Context, task):
        data = task.train  # (TensorData.images(): converted chunk by chunk, no float32 copy of the whole set)
        x = data.images() if hasattr(data, "images") else data.x
        return x, data.y, ctx.benchmark.active_outputs(task.id).to(data.y.device)

    def _task_grads(self, ctx: Context, buffer_owner) -> None:
        """Give ``buffer_owner.capture`` the gradient of the task loss alone (before this
        strategy's penalty: in closed form p.grad does not hold it yet; in autograd mode subtract it).

        In closed form with the penalty active the p.grad tensors themselves are kept, not copied:
        the penalty's gradient then goes into new grad tensors (``add_grad_(inplace=False)``), so
        nothing that later writes into p.grad (the optimizer, another strategy) touches them."""
        params = ctx.params()
        if not buffer_owner.started:
            buffer_owner.begin(params)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if self.closed_form and self.quad.active and self.lam != 0:
            buffer_owner.capture(grads, copy=False)
            return
        buffer_owner.capture(grads)
        if not self.closed_form and self.quad.active:
            torch._foreach_sub_(buffer_owner.grad, self.quad.grad(params, self.lam))

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "penalty": self.quad.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.quad.load_state_dict(state.pop("penalty"))
        super().load_state_dict(state)


class L2(Regularizer):
    """L2 to the previous task's parameters: ``lam * ||theta - theta*||^2`` (Omega = 1).

    The baseline of Kirkpatrick et al. 2017 (PNAS, fig. 2): every parameter equally important.
    """

    name = "l2"
    help = "L2 pull towards the parameters after the previous task (every parameter equally important)"
    params = {"lam": lam(0.01), "closed_form": CLOSED_FORM}  # lam: see the module docstring

    def consolidate(self, ctx, task):
        params = ctx.params()
        self.quad.set([torch.ones_like(p) for p in params], params)


class EWC(Regularizer):
    """Elastic Weight Consolidation: Omega = diagonal Fisher at the end of each task.

    Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural networks", PNAS:
    ``L = L_B + sum_i lambda/2 F_i (theta_i - theta*_A,i)^2``, so ``lam = lambda/2``. The Fisher is
    the mean of squared per-sample gradients of log p(y|x) (``fisher``: "empirical" = true labels,
    "sample" = labels drawn from the model, "exact" = expectation over the competing classes) on up
    to ``samples`` training samples (None: all). Separate penalties: one (F_k, theta*_k) per task,
    all kept (memory grows with the tasks, as in the paper), merged exactly for the gradient.
    Online EWC (one running Fisher, one anchor) is the strategy ``online-ewc`` (``OnlineEWC``).

    ``normalize="minmax"`` rescales each task's Fisher to [0, 1] over all parameters at once,
    ``(F - min F) / (max F - min F)``, before it enters the penalty: RWalk's normalization of its
    Fisher (Chaudhry et al. 2018; facebookresearch/agem ``normalize_fisher_at_minima``). The raw
    Fisher's scale follows how confident the model is (a fitted 2-class head has a Fisher thousands
    of times smaller than a 10-class one), so a raw lam that works on one benchmark does nothing on
    another; normalized, lam means "stiffness of the most important parameter" on every benchmark.
    ``normalize="none"`` is the paper's penalty exactly; the default is "minmax" (module docstring).
    """

    name = "ewc"
    help = "Elastic Weight Consolidation: Fisher-weighted pull towards each task's parameters"
    # lam: see the module docstring; samples: 1000 per-sample gradients are plenty for
    # a diagonal Fisher and keep the cost per task small on 60k-image tasks
    params = {
        "lam": lam(100.0),
        "fisher": Param("empirical", LABELS, "labels of the Fisher: true (empirical), sampled, or exact"),
        "samples": Param(1000, ">=1", "training samples the Fisher is estimated on", optional=True),
        "normalize": NORMALIZE,
        "closed_form": CLOSED_FORM,
    }
    keep_terms = True

    def _fisher(self, ctx, task) -> list[torch.Tensor]:
        x, y, classes = self._data(ctx, task)
        fisher = fisher_diagonal(
            ctx.model,
            x,
            y,
            classes=classes,
            labels=self.fisher,
            samples=self.samples,
            generator=task_generator(ctx, task, 1),
            distributed=True,
        )
        if self.normalize == "minmax":
            fisher = views(minmax(flatten(fisher)), fisher)
        return fisher

    def consolidate(self, ctx, task):
        self.quad.add(self._fisher(ctx, task), ctx.params())


class OnlineEWC(EWC):
    """Online EWC: one running Fisher, decayed by gamma, and one anchor at the latest parameters.

    Schwarz et al. 2018, "Progress & Compress: A scalable framework for continual learning", ICML
    (section 2, the compress step; also Huszár 2018, "Note on the quadratic penalties in EWC",
    PNAS): after task k the running Fisher is ``F*_k = gamma F*_{k-1} + F_k`` and the penalty while
    learning task k+1 is ``1/2 ||theta - theta*_k||^2_{gamma F*_k}``, i.e. the stored Fisher is
    decayed once more inside the penalty. van de Ven's implementation (GMvandeVen/continual-learning,
    ``models/cl/continual_learner.py``: ``estimate_fisher`` stores ``F_k + gamma * F*_{k-1}``,
    ``ewc_loss`` multiplies the stored Fisher by gamma again, factor 1/2) does the same. So
    ``Omega_k = gamma F*_k = gamma (Omega_{k-1} + F_k)``: after three tasks
    ``gamma F_3 + gamma^2 F_2 + gamma^3 F_1``. ``lam = lambda/2`` as for EWC; gamma in (0, 1]
    (gamma = 1 is the undecayed running sum; gamma = 0 would switch the penalty off).
    """

    name = "online-ewc"
    help = "online EWC: one running Fisher (decayed by gamma) and one anchor; memory does not grow"
    # lam 100 for the normalized Fisher
    params = {**EWC.params, "lam": lam(100.0), "gamma": Param(1.0, "(0, 1]", "decay of the running Fisher")}
    keep_terms = False

    def consolidate(self, ctx, task):
        fisher = flatten(self._fisher(ctx, task))
        running = fisher if not self.quad.active else self.quad.omega + fisher  # Omega = gamma F*: F* + F_k
        self.quad.set(self.gamma * running, ctx.params())


class SI(Regularizer):
    """Synaptic Intelligence: importance from each parameter's contribution to the loss decrease.

    Zenke, Poole & Ganguli 2017, "Continual Learning Through Synaptic Intelligence", ICML:
    ``omega_k = -sum_steps g_k * delta_k`` (g: task-loss gradient; see ``PathIntegral``),
    ``Omega_k <- max(0, Omega_k + omega_k / (Delta_k^2 + xi))`` at the end of each task (the clamp of
    the cumulative sum as in the authors' code), penalty ``c * sum Omega (theta - theta*)^2``: lam = c.
    xi = 0.1 as in the authors' permuted-MNIST runs (their split CIFAR runs use 1e-3).
    """

    name = "si"
    help = "Synaptic Intelligence: importance = path integral of the loss decrease along training"
    params = {
        "lam": lam(10.0),
        "xi": Param(0.1, ">0", "damping of the path-integral importance"),
        "closed_form": CLOSED_FORM,
    }  # lam: module docstring (Zenke et al.: c = 0.1 on permuted MNIST)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.path = PathIntegral()
        self.keeps_grads = self.closed_form

    def before_task(self, ctx, task):
        self.path.begin(ctx.params())

    def after_backward(self, ctx):
        self._task_grads(ctx, self.path)
        super().after_backward(ctx)

    def after_step(self, ctx, batch):
        self.path.step(ctx.params())

    def consolidate(self, ctx, task):
        params = ctx.params()
        if not self.path.started:  # no training step in this task
            self.path.begin(params)
        new = flatten(self.path.importance(params, self.xi))
        total = new if not self.quad.active else self.quad.omega + new
        self.quad.set(total.clamp_min(0), params)
        self.path.started = False


class MAS(Regularizer):
    """Memory Aware Synapses: importance = sensitivity of the squared output norm.

    Aljundi et al. 2018, "Memory Aware Synapses: Learning what (not) to forget", ECCV:
    ``Omega = mean_n |d ||f(x_n)||^2 / d theta|`` (per sample, logits on the competing outputs),
    accumulated over tasks (``Omega <- Omega + Omega_k``, as in the authors' code) with the anchor at
    the latest parameters; penalty ``lambda * sum Omega (theta - theta*)^2``: lam = lambda.
    ``hebbian=true``: the local Hebbian form (``mas_hebbian``; Linear layers only).
    """

    name = "mas"
    help = "Memory Aware Synapses: importance = sensitivity of the output norm (no labels needed)"
    params = {
        "lam": lam(0.01),
        "hebbian": Param(False, help="the local Hebbian form (Linear layers only)"),
        "closed_form": CLOSED_FORM,
    }  # lam: see the module docstring

    def consolidate(self, ctx, task):
        x, _, classes = self._data(ctx, task)
        new = flatten(
            mas_hebbian(ctx.model, x, classes=classes)
            if self.hebbian  # (every process: all samples)
            else mas_importance(ctx.model, x, classes=classes, distributed=True)
        )
        self.quad.set(new if not self.quad.active else self.quad.omega + new, ctx.params())


class RWalk(Regularizer):
    """Riemannian Walk: normalized online Fisher + normalized KL-scaled path-integral scores.

    Chaudhry, Dokania, Ajanthan & Torr 2018, "Riemannian Walk for Incremental Learning", ECCV.
    Fisher as an EMA of squared mini-batch gradients (``alpha``), scores
    ``s += max(0, -g delta / (0.5 F Delta^2 + eps))`` every ``interval`` steps (``RiemannianWalk``
    says which part follows the paper and which the authors' code). At the end of task k:

    - ``S = (S + s_k) / 2`` (S = s_1 after the first task): the paper's averaging of the scores
      "to reduce the rigidity". The authors' code (facebookresearch/agem ``model/model.py``,
      ``update_score``) writes ``S += (S + s_k) / 2``, i.e. 1.5 S + 0.5 s_k, with the first task's
      score doubled beforehand (``scale_score``) so that its first "average" is s_1: the doubling
      and the code's comment say an average was meant. We follow the paper (the repository is the
      official code of A-GEM, ICLR 2019, and replicates that paper's results, not RWalk's);
    - ``Omega = minmax(F) + minmax(S)``, each min-max normalized over all parameters at once
      (``minmax``: the code's normalization);
    - penalty ``lambda * sum (F + s)(theta - theta*)^2`` (paper and code ``loss_and_gradients``,
      no 1/2): lam = lambda.

    This is RWalk's regularizer; the paper's replay of a few old samples composes: ``er+rwalk``.
    """

    name = "rwalk"
    help = "Riemannian Walk: normalized online Fisher + KL-normalized path-integral scores"
    params = {
        "lam": lam(1.0),
        "alpha": Param(0.9, "(0, 1]", "weight of the new interval in the Fisher's EMA"),
        "eps": Param(1e-3, ">0", "damping of the KL-normalized score"),
        "interval": Param(10, ">=1", "steps between score updates"),
        "closed_form": CLOSED_FORM,
    }  # lam: module docstring

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.walk = RiemannianWalk(self.alpha, self.eps, self.interval)
        self.keeps_grads = self.closed_form
        self.fisher_: torch.Tensor | None = None  # the running Fisher (flat), carried across tasks
        self.score_: torch.Tensor | None = None  # the averaged score S (flat)

    def before_task(self, ctx, task):
        self._begin(ctx.params())

    def _begin(self, params):
        self.walk.begin(params)
        if self.fisher_ is not None and self.walk.fisher is None:  # resumed from a state_dict
            self.walk.fisher = [v.clone() for v in views(self.fisher_, params)]

    def after_backward(self, ctx):
        if not self.walk.started:
            self._begin(ctx.params())
        self._task_grads(ctx, self.walk)
        super().after_backward(ctx)

    def after_step(self, ctx, batch):
        self.walk.step(ctx.params())

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.walk.fisher = None  # taken from fisher_ at the next task's start
        self.walk.started = False

    def consolidate(self, ctx, task):
        params = ctx.params()
        if not self.walk.started:
            self._begin(params)
        self.walk.flush(params)
        if self.walk.fisher is None:  # no training step at all yet
            self.walk.fisher = [torch.zeros_like(p) for p in params]
        s_k = flatten(self.walk.score)
        self.score_ = s_k if self.score_ is None else 0.5 * (self.score_ + s_k)
        self.fisher_ = flatten(self.walk.fisher)
        self.quad.set(minmax(self.fisher_) + minmax(self.score_), params)
        self.walk.started = False


class SCP(Regularizer):
    """Sliced Cramér Preservation: importance = sensitivity of random 1-D projections of the mean output.

    Kolouri et al. 2020, "Sliced Cramér Synaptic Consolidation for Preserving Deeply Learned
    Representations", ICLR: ``Gamma_k = (1/L) sum_l (d <xi_l, phi_bar> / d theta)^2`` with phi_bar the
    mean logits (competing outputs) over the task's training data and L = ``slices`` random unit
    vectors (``scp_importance`` says which part follows the paper and which the authors' code).
    Accumulated online as in the authors' code (Kolouri's ``SCP.consolidate``, the file
    ``utils/scp_utils/scp.py`` as shipped in lihr04/corel2m): ``Gamma <- alpha Gamma + (1 - alpha)
    Gamma_k`` from Gamma = 0, so after task 1 Gamma = (1 - alpha) Gamma_1 and after task 2
    ``alpha (1 - alpha) Gamma_1 + (1 - alpha) Gamma_2`` (alpha = 0.5, their default), anchored at
    the latest parameters; penalty ``lambda * sum Gamma (theta - theta*)^2`` (the code's
    ``penalty``, no 1/2): lam = lambda.
    """

    name = "scp"
    help = "Sliced Cramer Preservation: importance from random projections of the mean output"
    params = {
        "lam": lam(100.0),
        "slices": Param(50, ">=1", "random projections of the mean output"),
        "alpha": Param(0.5, "[0, 1)", "weight of the old importance in the running average"),
        "closed_form": CLOSED_FORM,
    }  # lam: module docstring

    def consolidate(self, ctx, task):
        x, _, classes = self._data(ctx, task)
        new = flatten(
            scp_importance(ctx.model, x, classes=classes, slices=self.slices, generator=task_generator(ctx, task, 2))
        )
        old = self.quad.omega if self.quad.active else torch.zeros_like(new)
        self.quad.set(self.alpha * old + (1 - self.alpha) * new, ctx.params())

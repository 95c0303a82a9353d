"""Importance accumulated along the training path: SI's ``PathIntegral``, RWalk's ``RiemannianWalk``
and RWalk's ``minmax`` normalization.

Both helpers are updated after every optimizer step with in-place ``torch._foreach_*`` ops (no
per-step temporaries, no host sync).
"""

from __future__ import annotations

import torch

from ..errors import UsageError


def _zeros_like(params):
    return [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in params]


def _copy(params):
    return [p.detach().clone(memory_format=torch.contiguous_format) for p in params]


class PathIntegral:
    """SI's running path integral (Zenke, Poole & Ganguli 2017, "Continual Learning Through Synaptic
    Intelligence", ICML, eq. 3-5).

    After every optimizer step: ``omega += -g * delta`` where delta = theta_after - theta_before and g
    is the gradient of the TASK loss only. The paper's g is "the gradient of the loss", and the
    authors' code (ganguli-lab/pathint, ``unreg_grads``) uses the gradient of the unregularized loss,
    not of the loss plus the SI penalty; ``capture`` must be given that gradient (the strategy takes
    ``p.grad`` in ``after_backward`` before adding the closed-form penalty gradient, or subtracts it
    in autograd mode). At the task's end ``omega / (Delta^2 + xi)`` with Delta = theta_end -
    theta_start is the task's contribution to Omega (``importance``).
    """

    def __init__(self):
        self.started = False

    def begin(self, params) -> None:
        self.start = _copy(params)
        self.prev = _copy(params)
        self.omega = _zeros_like(params)
        self.grad = _zeros_like(params)
        self.started = True

    @torch.no_grad()
    def capture(self, grads, copy: bool = True) -> None:
        """The task-loss gradient of this step: copied, or (``copy=False``) the tensors themselves,
        which the caller promises not to modify before ``step``."""
        if copy:
            torch._foreach_copy_(self.grad, list(grads))
        else:
            self.grad = list(grads)

    @torch.no_grad()
    def step(self, params) -> None:
        self._accumulate(list(params))

    def _accumulate(self, params: list[torch.Tensor]) -> None:
        """``omega += -g * delta``, in place with no temporary: prev <- prev - theta = -delta (exactly)."""
        torch._foreach_sub_(self.prev, params)
        torch._foreach_addcmul_(self.omega, self.grad, self.prev)
        torch._foreach_copy_(self.prev, params)

    @torch.no_grad()
    def importance(self, params, xi: float) -> list[torch.Tensor]:
        """``omega / (Delta^2 + xi)``, Delta = theta_now - theta_at_begin."""
        d = torch._foreach_sub(list(params), self.start)
        den = torch._foreach_mul(d, d)
        torch._foreach_add_(den, xi)
        return torch._foreach_div(self.omega, den)


class RiemannianWalk(PathIntegral):
    """RWalk's online Fisher and KL-normalized path-integral score (Chaudhry, Dokania, Ajanthan &
    Torr 2018, "Riemannian Walk for Incremental Learning", ECCV, eq. 8-10).

    Where each formula comes from ("code" = the authors' implementation in facebookresearch/agem,
    ``model/model.py``: ``create_fisher_ops``, ``create_pathint_ops``; the step order is in its
    drivers, e.g. ``fc_permute_mnist.py``):

    - every step, with g the task-loss gradient of the mini-batch: ``tmp += g^2`` (paper and code:
      squared mini-batch gradients, ``set_tmp_fisher``) and ``omega += -g * delta`` (the path
      integral, as for SI; code ``update_small_omega``);
    - every ``interval`` steps, the Fisher's moving average (paper: EWC++;
      code ``set_running_fisher``): ``F = alpha * mean_interval(g^2) + (1 - alpha) * F``, alpha = 0.9
      weighting the new estimate (code ``FISHER_EMA_DECAY = 0.9``; interval 10 =
      ``FISHER_UPDATE_AFTER``). The first interval initializes F here; the code starts from F = 0
      (``set_initial_running_fisher`` copies the still-empty accumulator), so its first estimate is
      0.9 of ours and the difference decays as 0.1^k;
    - then the interval's score (paper: the KL-normalized path integral;
      code ``update_big_omega_riemann``)::

        s_task += max(0, omega / (0.5 * F * Delta^2 + eps)),     Delta = theta_now - theta_interval_start

      The 1/2 is the paper's second-order KL ``0.5 * F * Delta^2``; the code drops it. We keep the
      paper's: the repository's README calls it the official implementation of A-GEM (ICLR 2019)
      and replicates that paper's results, not the RWalk paper's. The clamp at 0 and eps = 1e-3
      (``PARAM_XI_STEP``) are the code's (the paper does not fix them; a negative path integral
      means the loss went up along the interval: no importance earned). F is the Fisher after this
      interval's update, F at the time
      the score is taken; the code uses the previous interval's, which for the first interval is its
      F = 0, a denominator of eps alone.

    ``flush`` closes a partial interval at the task's end (the code drops it), so no step of the
    path is lost. The Fisher persists across tasks; the per-task score is reset by ``begin``.
    """

    def __init__(self, alpha: float = 0.9, eps: float = 1e-3, interval: int = 10):
        if not 0 < alpha <= 1:
            raise UsageError(f"RWalk alpha must be in (0, 1], got {alpha}")
        if interval < 1:
            raise UsageError(f"RWalk interval must be >= 1, got {interval}")
        self.alpha, self.eps, self.interval = alpha, eps, interval
        self.fisher: list[torch.Tensor] | None = None
        self.started = False

    def begin(self, params) -> None:
        self.prev = _copy(params)
        self.ref = _copy(params)
        self.omega = _zeros_like(params)
        self.tmp = _zeros_like(params)
        self.grad = _zeros_like(params)
        self.score = _zeros_like(params)
        self.count = 0
        self.started = True

    @torch.no_grad()
    def step(self, params) -> None:
        params = list(params)
        torch._foreach_addcmul_(self.tmp, self.grad, self.grad)
        self._accumulate(params)  # the same path integral as SI
        self.count += 1
        if self.count >= self.interval:
            self.flush(params)

    @torch.no_grad()
    def flush(self, params) -> None:
        if self.count == 0:
            return
        params = list(params)
        torch._foreach_div_(self.tmp, float(self.count))
        if self.fisher is None:
            self.fisher = [t.clone() for t in self.tmp]
        else:
            torch._foreach_mul_(self.fisher, 1.0 - self.alpha)
            torch._foreach_add_(self.fisher, self.tmp, alpha=self.alpha)
        # in place in ref and omega (both reset below), no temporaries: same numbers
        den = self.ref
        torch._foreach_sub_(den, params)  # -d; squared next
        torch._foreach_mul_(den, den)
        torch._foreach_mul_(den, self.fisher)
        torch._foreach_mul_(den, 0.5)
        torch._foreach_add_(den, self.eps)
        torch._foreach_div_(self.omega, den)
        torch._foreach_clamp_min_(self.omega, 0.0)
        torch._foreach_add_(self.score, self.omega)
        torch._foreach_zero_(self.tmp)
        torch._foreach_zero_(self.omega)
        torch._foreach_copy_(self.ref, params)
        self.count = 0


def minmax(flat: torch.Tensor, eps: float = 1e-32) -> torch.Tensor:
    """``(v - min) / (max - min + eps)`` over ALL parameters at once: RWalk's normalization of F and
    s to [0, 1] (the authors' code, facebookresearch/agem ``model/model.py``: ``normalize_scores`` and
    ``normalize_fisher_at_minima`` take the min and max over every layer together, EPSILON = 1e-32)."""
    lo, hi = flat.min(), flat.max()
    return (flat - lo) / (hi - lo + eps)

"""The one quadratic penalty of the regularization family (L2, EWC, online EWC, SI, MAS, RWalk, SCP).

Convention (the same for every method, no 1/2)::

    value = lam * sum_i Omega_i * (theta_i - theta*_i)^2          gradient = 2 * lam * Omega * (theta - theta*)

How each paper's constant maps onto ``lam``:

- EWC (Kirkpatrick et al. 2017, PNAS, eq. 3) and online EWC (Schwarz et al. 2018) write
  ``lambda/2 * sum F (theta - theta*)^2``: ``lam = lambda_paper / 2``.
- SI (Zenke et al. 2017, eq. 4: ``c * sum Omega (theta~ - theta)^2``): ``lam = c``.
- MAS (Aljundi et al. 2018, eq. 3: ``lambda * sum Omega (theta - theta*)^2``): ``lam = lambda``.
- RWalk (Chaudhry et al. 2018, eq. 11, ``lambda * sum (F + s)(theta - theta*)^2``): ``lam = lambda``.
- SCP (Kolouri et al. 2020, ``lambda * sum Gamma (theta - theta*)^2``): ``lam = lambda``.
- L2: ``lam * ||theta - theta*||^2`` (Omega = 1).

Several terms with their own anchors (EWC with one penalty per task) are merged exactly by
completing the square::

    sum_k O_k (theta - a_k)^2 = A (theta - m)^2 + c,    A = sum_k O_k,  m = sum_k O_k a_k / A,
                                                        c = sum_k O_k (a_k - m)^2

so one step costs the same for one term or K terms: the gradient ``2 lam A (theta - m)`` needs only
the two accumulated vectors A and m (m = a_k wherever A = 0). The constant c keeps ``value`` equal
to the sum of the separate terms. The separate terms can still be kept (``keep_terms=True``; EWC does,
which is what makes its memory grow with the number of tasks).

State lives in flat vectors (one for A, one for m) with per-parameter views, so ``state_dict`` is
two tensors and the hot path (``add_grad_``) is two ``torch._foreach_*`` kernels (a subtraction
and a fused multiply-add into ``p.grad``) with no Python loop over parameters doing arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Tensors = Sequence[torch.Tensor]


def flatten(tensors: Tensors) -> torch.Tensor:
    """One flat float vector from a list of tensors (detached)."""
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def views(flat: torch.Tensor, like: Tensors) -> list[torch.Tensor]:
    """Views into ``flat`` shaped like the tensors of ``like`` (no copy)."""
    sizes = [t.numel() for t in like]
    if sum(sizes) != flat.numel():
        raise ValueError(
            f"the penalty holds {flat.numel()} values but the parameters have {sum(sizes)}: "
            "the model's trainable parameters changed since the anchor was taken"
        )
    return [v.view(t.shape) for v, t in zip(torch.split(flat, sizes), like)]


class QuadraticPenalty:
    """``lam * (sum_i A_i (theta_i - m_i)^2 + c)``; see the module docstring for the constants.

    ``set(omega, anchor)`` replaces the penalty by one term (methods that accumulate their
    importance and re-anchor at the latest parameters: online EWC, SI, MAS, RWalk, SCP, L2);
    ``add(omega, anchor)`` adds a term with its own anchor (separate-penalty EWC). Omega and anchor
    are lists of tensors shaped like the parameters (or flat vectors). Omega must be >= 0.
    """

    def __init__(self, keep_terms: bool = False):
        self.keep_terms = keep_terms
        self.omega: torch.Tensor | None = None  # A, flat
        self.center: torch.Tensor | None = None  # m, flat
        self.const = torch.zeros((), dtype=torch.float64)  # c
        self.terms: list[tuple[torch.Tensor, torch.Tensor]] = []  # (omega_k, anchor_k) when keep_terms
        self._cache: tuple | None = None
        self._scratch: list[torch.Tensor] | None = None  # add_grad_'s buffers (not state)
        self._given: list[torch.Tensor] | None = None

    # ---- building -------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.omega is not None

    @staticmethod
    def _flat(x) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x.detach().reshape(-1).clone()
        return flatten(x)

    @staticmethod
    def _check(omega: torch.Tensor) -> None:
        if not bool(torch.isfinite(omega).all()):
            raise ValueError("the importance (Omega) has NaN or infinite values")
        if bool((omega < 0).any()):
            raise ValueError(
                "the importance (Omega) must be >= 0: a quadratic penalty with negative weights has no minimum"
            )

    def set(self, omega, anchor) -> None:
        """Replace everything by the single term ``Omega (theta - anchor)^2``."""
        omega = self._flat(omega)
        anchor = self._flat(anchor).to(omega.dtype)
        self._check(omega)
        self.omega, self.center = omega, anchor
        self.const = torch.zeros((), dtype=torch.float64)
        self.terms = [(omega.clone(), anchor.clone())] if self.keep_terms else []
        self._cache = None

    def add(self, omega, anchor) -> None:
        """Add the term ``Omega (theta - anchor)^2`` to the ones already there (exact merge)."""
        omega = self._flat(omega)
        anchor = self._flat(anchor).to(omega.dtype)
        self._check(omega)
        if self.omega is None:
            self.set(omega, anchor)
            return
        A, m = self.omega, self.center
        A_new = A + omega
        m_new = torch.where(A_new > 0, (A * m + omega * anchor) / A_new.clamp_min(torch.finfo(A.dtype).tiny), anchor)
        d_old, d_add = (m - m_new).double(), (anchor - m_new).double()
        self.const = self.const + (A.double() * d_old * d_old).sum() + (omega.double() * d_add * d_add).sum()
        self.omega, self.center = A_new, m_new
        if self.keep_terms:
            self.terms.append((omega.clone(), anchor.clone()))
        self._cache = None

    # ---- using ----------------------------------------------------------------------------
    def _views(self, params: Tensors) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        key = (id(self.omega), id(self.center), len(params))
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, views(self.omega, params), views(self.center, params))
        return self._cache[1], self._cache[2]

    def value(self, params: Tensors, lam: float) -> torch.Tensor:
        """``lam * sum Omega (theta - theta*)^2`` as a differentiable scalar (0 when inactive)."""
        if self.omega is None:
            return torch.zeros(
                (), dtype=params[0].dtype if params else torch.float32, device=params[0].device if params else None
            )
        A, m = self._views(params)
        d = torch._foreach_sub(list(params), m)
        sq = torch._foreach_mul(d, d)
        weighted = torch._foreach_mul(sq, A)
        # every entry is >= 0, so the 1-norm of each tensor is its sum (one kernel, no loop)
        total = torch.stack(torch._foreach_norm(weighted, 1)).sum()
        return lam * (total + self.const.to(total.dtype))

    def grad(self, params: Tensors, lam: float) -> list[torch.Tensor]:
        """The closed-form gradient ``2 lam Omega (theta - theta*)`` as new tensors."""
        A, m = self._views(params)
        with torch.no_grad():
            d = torch._foreach_sub([p.detach() for p in params], m)
            torch._foreach_mul_(d, A)
            torch._foreach_mul_(d, 2.0 * lam)
        return d

    def add_grad_(self, params: Tensors, lam: float, inplace: bool = True) -> None:
        """Add ``2 lam Omega (theta - theta*)`` to every ``p.grad`` (creating zero grads).

        ``inplace=False`` gives each parameter a new grad tensor instead of writing into the old
        one (same cost), so a strategy may keep the old tensors (the task-loss gradient) without
        copying them: SI and RWalk do.
        """
        if self.omega is None or lam == 0:
            return
        params = list(params)
        for p in params:  # rare: a parameter the loss did not reach still feels the penalty
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        A, m = self._views(params)
        c = 2.0 * lam
        with torch.no_grad():
            d = self._scratch_for(params)
            for p, di, mi in zip(params, d, m):  # theta - theta* into reused buffers: no allocation
                torch.sub(p.detach(), mi, out=di)
            if inplace:
                torch._foreach_addcmul_([p.grad for p in params], d, A, value=c)
            else:  # g + c A d, written over d (element-wise, so the aliasing is safe); d becomes p.grad
                for p, di, ai in zip(params, d, A):
                    torch.addcmul(p.grad, di, ai, value=c, out=di)
                    p.grad = di
                self._scratch = None  # now owned by p.grad; the next call takes it back if it is free

    def _scratch_for(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """Parameter-shaped buffers reused from step to step (a fresh tensor per step costs page faults).
        Buffers given away as p.grad are taken back once p.grad has been reset to None."""
        s = self._scratch
        if (
            s is None
            and self._given is not None
            and all(p.grad is None or p.grad.data_ptr() != g.data_ptr() for p, g in zip(params, self._given))
        ):
            s = self._given
        if s is None or len(s) != len(params) or any(a.shape != p.shape for a, p in zip(s, params)):
            s = [torch.empty_like(p) for p in params]
        self._scratch, self._given = s, s
        return s

    # ---- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "omega": self.omega,
            "center": self.center,
            "const": self.const,
            "terms_omega": [o for o, _ in self.terms],
            "terms_anchor": [a for _, a in self.terms],
        }

    def load_state_dict(self, state: dict) -> None:
        self.omega, self.center = state["omega"], state["center"]
        self.const = state["const"]
        self.terms = list(zip(state.get("terms_omega", []), state.get("terms_anchor", [])))
        self._cache = None

    def nbytes(self) -> int:
        """Memory held by the penalty, separate terms included."""
        tensors = [t for t in (self.omega, self.center) if t is not None]
        tensors += [t for pair in self.terms for t in pair]
        return sum(t.numel() * t.element_size() for t in tensors)

"""Gradient Episodic Memory (GEM) and the exact solver of its small dual quadratic program."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import devices
from ..errors import UsageError
from .base import ALL_SCENARIOS, Param, Strategy
from .replay import MEMORY, flat_grad, local_memory_grad, set_flat_grad

EPS = 1e-3  # added to the diagonal of G G^T, as in the paper's code


def solve_nonneg_qp(P, c, max_iter: int | None = None) -> np.ndarray:
    """Exact minimiser of 1/2 u^T P u + c^T u subject to u >= 0, for symmetric positive definite P.

    A primal active-set method (the Lawson-Hanson scheme, written for a QP instead of a least-squares
    problem): u starts at 0; the bound variable whose objective decreases fastest (most negative
    gradient P u + c) is freed; the problem restricted to the free variables is solved exactly with a
    linear solve; if that solution leaves the feasible region, u moves towards it until a variable
    hits its bound, which is fixed again. It ends when no bound variable has a negative gradient:
    then the KKT conditions (u >= 0, P u + c >= 0, u_i (P u + c)_i = 0) hold up to rounding, and the
    answer is the exact solution of a linear system on the final free set. Finite for positive
    definite P; at most a few dozen variables here (one per past task).
    """
    P, c = np.asarray(P, dtype=np.float64), np.asarray(c, dtype=np.float64)
    n = len(c)
    if n == 0:
        return np.zeros(0)
    scale = max(np.abs(P).max(), np.abs(c).max(), 1e-300)
    tol = 1e-13 * scale * n
    u = np.zeros(n)
    free = np.zeros(n, dtype=bool)
    max_iter = max_iter or 10 * n + 10
    for _ in range(max_iter):
        w = -(P @ u + c)  # minus the gradient: positive where increasing u_i lowers the objective
        candidates = np.where(~free & (w > tol))[0]
        if len(candidates) == 0:
            break
        j = candidates[np.argmax(w[candidates])]
        free[j] = True
        for inner in range(n + 1):
            idx = np.where(free)[0]
            z = np.zeros(n)
            z[idx] = np.linalg.solve(P[np.ix_(idx, idx)], -c[idx])
            if np.all(z[idx] > 0):
                u = z
                break
            if inner == 0 and z[j] <= 0:  # rounding: freeing j does not help after all
                free[j] = False
                return _finish(P, c, u, free)
            bad = idx[z[idx] <= 0]  # u[bad] > 0 >= z[bad]: step from u towards z until one hits 0
            ratios = u[bad] / (u[bad] - z[bad])
            k = int(np.argmin(ratios))
            u = u + ratios[k] * (z - u)
            u[bad[k]] = 0.0
            free &= u > 0
            u[~free] = 0.0
    return _finish(P, c, u, free)


def _finish(P, c, u, free) -> np.ndarray:
    u = np.where(free, u, 0.0)
    return np.maximum(u, 0.0)


def gem_dual(G, g, margin: float = 0.5, eps: float = EPS) -> np.ndarray:
    """GEM's dual (Lopez-Paz & Ranzato 2017, Eq. 11, with the code's margin and eps):

        min_v 1/2 v^T (G G^T + eps I) v + (G g)^T v   s.t.  v >= margin

    (the paper has v >= 0; its code bounds v by the "memory strength" margin instead, which
    pushes the update into the cone of the past tasks' gradients). Solved exactly by substituting
    v = u + margin and calling ``solve_nonneg_qp``.
    """
    G = np.asarray(G, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    P = G @ G.T
    P = 0.5 * (P + P.T) + eps * np.eye(len(P))
    q = G @ g
    lower = np.full(len(q), float(margin))
    u = solve_nonneg_qp(P, P @ lower + q)
    return u + lower


def gem_project(g: torch.Tensor, G: torch.Tensor, margin: float = 0.5, eps: float = EPS) -> torch.Tensor:
    """The GEM update: g if G g >= 0 (no past task's loss increases), else g~ = G^T v + g with v
    from ``gem_dual``; then G g~ >= 0 (up to the eps regularisation)."""
    if G.numel() == 0 or bool((G @ g >= 0).all()):  # (GEM asks the host every step: the QP is solved there)
        return g
    v = gem_dual(G.double().cpu().numpy(), g.double().cpu().numpy(), margin, eps)
    return (G.double().T @ torch.from_numpy(v).to(G.device) + g.double()).to(g.dtype)


class GEM(Strategy):
    """Gradient Episodic Memory (Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for Continual Learning").

    Episodic memory: the paper's total budget of M examples split evenly over the T tasks when T is
    known ("m = M / T"): ``memory // number of tasks`` examples per task, drawn uniformly at random
    from each task's training data at the end of the task. While training task k, every step
    computes one gradient g_j per earlier task j < k (the loss on its memory, masked as the loop masks
    that task's samples), stacked as rows of G. If some constraint is violated (g . g_j < 0), the
    gradient g is replaced by the closest gradient that keeps every past loss from increasing, found
    through the dual QP (``gem_dual``, solved exactly):

        min_v 1/2 v^T (G G^T + eps I) v + g^T G^T v   s.t.  v >= margin,    g~ = G^T v + g

    ``margin`` is the "memory strength" of the paper's code (0.5); eps = 1e-3 as there.
    """

    name = "gem"
    family = "replay"
    params = {"memory": MEMORY, "margin": Param(0.5, ">=0", "memory strength: lower bound of the dual variables")}
    scenarios = ALL_SCENARIOS
    help = "GEM: keep every past task's memory loss from increasing (exact QP projection)"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.mem_x_: dict[int, torch.Tensor] = {}
        self.mem_y_: dict[int, torch.Tensor] = {}

    def per_task(self, ctx) -> int:
        n_tasks = len(ctx.benchmark.tasks)
        m = self.memory // n_tasks
        if m < 1:
            raise UsageError(
                f"gem: memory={self.memory} leaves no example for each of the {n_tasks} tasks; use memory >= {n_tasks}"
            )
        return m

    def after_backward(self, ctx):
        past = [k for k in sorted(self.mem_x_) if k < ctx.task_id]
        if not past:
            return
        params = ctx.params()
        g = flat_grad(params)
        G = self.constraints(ctx, past)
        new = gem_project(g, G, self.margin)
        if new is not g:
            set_flat_grad(params, new)

    def constraints(self, ctx, past: list[int]) -> torch.Tensor:
        """G: one row per past task k, the flat gradient of the loss on k's memory, masked as the
        loop masks task k's samples (task-IL: task k's head; class-IL: every class seen so far).
        Several processes: each computes its part of every memory, and all rows are summed over
        the processes in one collective (the same G everywhere, so the same projection)."""
        G = torch.stack(
            [
                local_memory_grad(ctx, self.mem_x_[k], self.mem_y_[k], ctx.benchmark.tasks[k].ids(len(self.mem_y_[k])))
                for k in past
            ]
        )
        devices.all_reduce_([G])
        return G

    def after_task(self, ctx, task):
        m = self.per_task(ctx)
        idx = ctx.put(torch.randperm(len(task.train), generator=ctx.generator, device="cpu")[:m])
        self.mem_x_[task.id] = task.train.take(idx).clone()
        self.mem_y_[task.id] = task.train.y[idx].clone()


__all__ = ["GEM", "gem_dual", "gem_project", "solve_nonneg_qp"]

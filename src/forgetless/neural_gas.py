"""Neural gas with competitive Hebbian learning: the topology model TOPIC keeps over its features.

Sources
-------
- T. Martinetz, K. Schulten, "A 'neural-gas' network learns topologies", Artificial Neural
  Networks (ICANN) 1991, 397-402: the rank-based ("neural gas") update.
- T. Martinetz, K. Schulten, "Topology representing networks", Neural Networks 7(3), 1994,
  507-522: the same update joined with competitive Hebbian learning (CHL) and edge ages; the
  annealing schedules and the default parameters below (lambda 10 -> 0.01, epsilon 0.5 -> 0.005,
  lifetime 20 -> 200) are the ones of that paper's experiments.
- X. Tao et al., "Few-Shot Class-Incremental Learning", CVPR 2020 (TOPIC): nodes carry a class
  label and a per-dimension variance (its anchor loss weights each node's drift by it), and new
  classes grow the gas by inserting nodes.

The algorithm
-------------
State: centroids m_j (n x d), labels c_j (class of node j, -1 for none), a symmetric boolean
adjacency ``edges`` (n x n, empty diagonal) and the ages t_ij of the edges (``ages``, n x n, 0
wherever there is no edge).

One step on an input x, with step size eps, neighbourhood range lam and edge lifetime T
(``step``):

1. k_j = rank of node j by squared Euclidean distance ||x - m_j||^2 (0 for the nearest; ties go
   to the lower index), computed with the centroids *before* the update;
2. m_j <- m_j + eps * exp(-k_j / lam) * (x - m_j) for every node j (vectorised over the nodes);
3. CHL with i0, i1 the nodes of rank 0 and 1: every edge of the winner i0 except (i0, i1) ages
   by one; (i0, i1) is created (or refreshed) with age 0; the winner's edges older than T (age
   > T) are removed.

Martinetz & Schulten age all edges of i0 after refreshing (i0, i1), which leaves the refreshed
edge at age 1; here it stays at age 0 (the age counts the winner's inputs since the edge was last
confirmed). Only the winner's edges age, so only those can pass the lifetime, as in the paper.

``fit`` presents the rows of x in a fresh seeded random order each epoch, t = 0 .. t_max - 1
(t_max = epochs * len(x)), and anneals every parameter p exponentially:
p(t) = p_i * (p_f / p_i) ** (t / t_max). If the gas is empty, its n nodes start at n distinct
rows of x drawn with the seed. Everything is deterministic for a given seed (the order comes from
a CPU ``torch.Generator``).

Variance (for TOPIC's anchor loss)
----------------------------------
``observe(x)`` accumulates, for each node j, the count of inputs whose nearest node is j and the
per-dimension sum of (x - m_j)^2 over them; ``variance`` is that sum divided by the count: the
mean squared deviation of the node's Voronoi cell from its centroid, per dimension (with a small
learning rate at the end of the schedule the centroid is the cell's mean, so this is the cell's
variance). It can be fed batch by batch (a streaming estimate), ``reset_variance`` clears it, and
``fit`` ends with one ``reset_variance`` + ``observe(x)`` pass with the final centroids. A node
whose cell holds no input gets the mean variance of the nodes that have one (1 everywhere if
none has); ``min_var`` floors every entry, so 1 / variance stays finite.

Other definitions: ``quantization_error(x)`` = mean over the rows of min_j ||x - m_j||^2 (squared
Euclidean, not its root); ``nearest(x)`` the index of the nearest node; ``predict(x)`` its label;
``assign_labels(x, y)`` labels each node by the majority class of its Voronoi cell (ties to the
smallest class, -1 for an empty cell); ``add_nodes`` appends nodes without edges;
``learn_edges(x, T)`` runs CHL alone (centroids fixed), which is how inserted nodes get their
edges.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .errors import UsageError

# Martinetz & Schulten (1994): their experiments' parameters.
EPS_I, EPS_F = 0.5, 0.005
LAM_I, LAM_F = 10.0, 0.01
T_I, T_F = 20.0, 200.0


def anneal(p_i: float, p_f: float, t: int, t_max: int) -> float:
    """p_i * (p_f / p_i) ** (t / t_max); constant when p_i == p_f (which may then be 0)."""
    if p_i == p_f:
        return float(p_i)
    return p_i * (p_f / p_i) ** (t / t_max)


def _positive(name: str, value: Any, allow_zero: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        bound = ">= 0" if allow_zero else "> 0"
        raise UsageError(f"NeuralGas: {name} must be a number {bound}, got {value!r}")
    return float(value)


class NeuralGas:
    """A neural gas of ``n_nodes`` nodes (Martinetz & Schulten 1991, 1994); see the module docstring.

    The state lives on the device (and in the floating dtype) of the first data it is fit on or
    of the first nodes added; later inputs are moved there.
    """

    def __init__(self, n_nodes: int, min_var: float = 1e-6):
        if isinstance(n_nodes, bool) or not isinstance(n_nodes, int) or n_nodes < 2:
            raise UsageError(f"NeuralGas: n_nodes must be an integer >= 2, got {n_nodes!r}")
        self.n_nodes = n_nodes
        self.min_var = _positive("min_var", min_var)
        self.centroids: torch.Tensor | None = None  # [n, d]
        self.labels: torch.Tensor | None = None  # [n] long, -1 = none
        self.edges: torch.Tensor | None = None  # [n, n] bool, symmetric, empty diagonal
        self.ages: torch.Tensor | None = None  # [n, n] long, symmetric, 0 where no edge
        self.var_sum: torch.Tensor | None = None  # [n, d]
        self.var_count: torch.Tensor | None = None  # [n]

    # ---------------------------------------------------------------- state
    @property
    def size(self) -> int:
        """Nodes in the gas (0 before the first fit or add_nodes)."""
        return 0 if self.centroids is None else self.centroids.shape[0]

    def _init_state(self, centroids: torch.Tensor) -> None:
        n, d = centroids.shape
        dev = centroids.device
        self.centroids = centroids.clone()
        self.labels = torch.full((n,), -1, dtype=torch.long, device=dev)
        self.edges = torch.zeros(n, n, dtype=torch.bool, device=dev)
        self.ages = torch.zeros(n, n, dtype=torch.long, device=dev)
        self.var_sum = torch.zeros(n, d, dtype=centroids.dtype, device=dev)
        self.var_count = torch.zeros(n, dtype=torch.long, device=dev)

    def _data(self, x: Any, who: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] == 0:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise UsageError(f"NeuralGas.{who}: x must be a 2-D tensor [examples, features], got {shape}")
        if not x.is_floating_point():
            x = x.float()
        if self.centroids is not None:
            if x.shape[1] != self.centroids.shape[1]:
                raise UsageError(
                    f"NeuralGas.{who}: x has {x.shape[1]} features, the gas "
                    f"{self.centroids.shape[1]}: give features of the same size"
                )
            x = x.to(self.centroids.device, self.centroids.dtype)
        return x

    def _need_nodes(self, who: str) -> None:
        if self.centroids is None:
            raise UsageError(f"NeuralGas.{who}: the gas has no nodes yet: call fit(x) or add_nodes first")

    # ---------------------------------------------------------------- distances
    def distances(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Squared Euclidean distances [len(x), n] from each row of x to each centroid."""
        self._need_nodes("distances")
        x = self._data(x, "distances")
        m = self.centroids
        m2 = (m * m).sum(1)
        out = [((xc * xc).sum(1, keepdim=True) + m2 - 2 * xc @ m.T).clamp_min_(0) for xc in x.split(chunk)]
        return torch.cat(out)

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest node of each row of x (long, [len(x)])."""
        return self.distances(x).argmin(1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Label of the nearest node of each row of x (-1 where that node has no label)."""
        return self.labels[self.nearest(x)]

    def quantization_error(self, x: torch.Tensor) -> float:
        """Mean over the rows of x of the squared distance to the nearest centroid."""
        return self.distances(x).min(1).values.mean().item()

    # ---------------------------------------------------------------- learning
    def step(self, x: torch.Tensor, eps: float, lam: float, T: float) -> None:
        """One neural-gas update and one CHL step on a single input x [d] (module docstring)."""
        m = self.centroids
        d = ((m - x) ** 2).sum(1)
        order = torch.argsort(d, stable=True)
        ranks = torch.empty_like(order)
        ranks[order] = torch.arange(len(order), device=order.device)
        h = torch.exp(-ranks.to(m.dtype) / lam)
        m.add_(eps * h.unsqueeze(1) * (x - m))
        self._hebbian(order[0], order[1], T)

    def _hebbian(self, i0: torch.Tensor, i1: torch.Tensor, T: float) -> None:
        self.ages[i0] += self.edges[i0].long()  # every edge of the winner ages by one ...
        self.edges[i0, i1] = self.edges[i1, i0] = True
        self.ages[i0, i1] = 0  # ... and the edge to the runner-up is (re)born
        old = self.edges[i0] & (self.ages[i0] > T)
        self.edges[i0] &= ~old
        self.ages[i0] *= self.edges[i0]
        self.edges[:, i0] = self.edges[i0]
        self.ages[:, i0] = self.ages[i0]

    def _schedule_args(self, epochs, eps_i, eps_f, lam_i, lam_f, T_i, T_f):
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise UsageError(f"NeuralGas.fit: epochs must be an integer >= 1, got {epochs!r}")
        eps_i, eps_f = _positive("eps_i", eps_i, True), _positive("eps_f", eps_f, True)
        if (eps_i == 0) != (eps_f == 0) or eps_i > 1 or eps_f > 1:
            raise UsageError(f"NeuralGas.fit: eps_i and eps_f must lie in (0, 1] (or both be 0), got {eps_i}, {eps_f}")
        return (
            epochs,
            eps_i,
            eps_f,
            _positive("lam_i", lam_i),
            _positive("lam_f", lam_f),
            _positive("T_i", T_i),
            _positive("T_f", T_f),
        )

    def fit(
        self,
        x: torch.Tensor,
        epochs: int = 10,
        eps_i: float = EPS_I,
        eps_f: float = EPS_F,
        lam_i: float = LAM_I,
        lam_f: float = LAM_F,
        T_i: float = T_I,
        T_f: float = T_F,
        seed: int = 0,
        labels: torch.Tensor | None = None,
        record: bool = False,
    ):
        """Train on the rows of x (module docstring); returns the list of quantisation errors
        after each epoch when ``record``, else self. ``labels`` (one class per row) labels the
        nodes afterwards (``assign_labels``)."""
        epochs, eps_i, eps_f, lam_i, lam_f, T_i, T_f = self._schedule_args(epochs, eps_i, eps_f, lam_i, lam_f, T_i, T_f)
        x = self._data(x, "fit")
        g = torch.Generator().manual_seed(int(seed))
        if self.centroids is None:
            if x.shape[0] < self.n_nodes:
                raise UsageError(
                    f"NeuralGas.fit: {self.n_nodes} nodes start at distinct inputs, but x "
                    f"has only {x.shape[0]} rows: give more data or fewer nodes"
                )
            start = torch.randperm(x.shape[0], generator=g, device="cpu")[: self.n_nodes].to(x.device)
            self._init_state(x[start])
        t, t_max = 0, epochs * x.shape[0]
        history = []
        for _ in range(epochs):
            for i in torch.randperm(x.shape[0], generator=g, device="cpu").tolist():
                self.step(
                    x[i], anneal(eps_i, eps_f, t, t_max), anneal(lam_i, lam_f, t, t_max), anneal(T_i, T_f, t, t_max)
                )
                t += 1
            if record:
                history.append(self.quantization_error(x))
        self.reset_variance()
        self.observe(x)
        if labels is not None:
            self.assign_labels(x, labels)
        return history if record else self

    def learn_edges(self, x: torch.Tensor, T: float = T_F) -> NeuralGas:
        """CHL alone over the rows of x in order (centroids fixed): connects each input's two
        nearest nodes, ages the winner's other edges, removes those older than T."""
        self._need_nodes("learn_edges")
        T = _positive("T", T)
        x = self._data(x, "learn_edges")
        two = self.distances(x).topk(2, dim=1, largest=False).indices
        for i0, i1 in two:
            self._hebbian(i0, i1, T)
        return self

    # ---------------------------------------------------------------- labels, variance, growth
    def assign_labels(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Label each node by the majority class among the rows of x nearest to it."""
        self._need_nodes("assign_labels")
        x = self._data(x, "assign_labels")
        if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],) or y.is_floating_point() or (y < 0).any():
            raise UsageError("NeuralGas.assign_labels: y must be a tensor of one class index >= 0 per row of x")
        y = y.to(self.centroids.device)
        n, k = self.size, int(y.max()) + 1
        votes = torch.zeros(n, k, dtype=torch.long, device=y.device)
        votes.index_put_((self.nearest(x), y), torch.ones_like(y), accumulate=True)
        self.labels = torch.where(votes.sum(1) > 0, votes.argmax(1), -1)
        return self.labels

    def reset_variance(self) -> None:
        self._need_nodes("reset_variance")
        self.var_sum.zero_()
        self.var_count.zero_()

    def observe(self, x: torch.Tensor) -> None:
        """Add the rows of x to the variance statistics of their nearest nodes."""
        x = self._data(x, "observe")
        j = self.nearest(x)
        self.var_sum.index_add_(0, j, (x - self.centroids[j]) ** 2)
        self.var_count.index_add_(0, j, torch.ones_like(j))

    @property
    def variance(self) -> torch.Tensor:
        """Per node and dimension, [n, d]: the mean squared deviation from the centroid of the
        inputs observed nearest to the node (module docstring for empty nodes and the floor)."""
        self._need_nodes("variance")
        has = self.var_count > 0
        var = self.var_sum / self.var_count.clamp_min(1).unsqueeze(1).to(self.var_sum.dtype)
        fill = var[has].mean(0) if has.any() else torch.ones_like(var[0])
        var = torch.where(has.unsqueeze(1), var, fill)
        return var.clamp_min(self.min_var)

    def add_nodes(
        self, centroids: torch.Tensor, labels: torch.Tensor | int, variance: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Append nodes (TOPIC's growth for new classes), with no edges; returns their indices.

        ``variance`` [k, d], if given, seeds the new nodes' variance as if observed once; else
        they take the mean variance of the nodes observed so far (see ``variance``).
        """
        if not isinstance(centroids, torch.Tensor) or centroids.dim() != 2 or centroids.shape[0] == 0:
            raise UsageError("NeuralGas.add_nodes: centroids must be a 2-D tensor [new nodes, features]")
        k = centroids.shape[0]
        if isinstance(labels, int) and not isinstance(labels, bool):
            labels = torch.full((k,), labels, dtype=torch.long, device="cpu")
        if not isinstance(labels, torch.Tensor) or labels.shape != (k,) or labels.is_floating_point():
            raise UsageError("NeuralGas.add_nodes: labels must be one integer class (or -1) per new node")
        if variance is not None and (not isinstance(variance, torch.Tensor) or variance.shape != centroids.shape):
            raise UsageError("NeuralGas.add_nodes: variance must have the shape of centroids")
        if self.centroids is None:
            c = centroids if centroids.is_floating_point() else centroids.float()
            self._init_state(c[:0])
        c = self._data(centroids, "add_nodes")
        dev, n = self.centroids.device, self.size
        self.centroids = torch.cat([self.centroids, c])
        self.labels = torch.cat([self.labels, labels.to(dev, torch.long)])
        grow = torch.zeros(n + k, n + k, dtype=torch.bool, device=dev)
        grow[:n, :n] = self.edges
        self.edges = grow
        ages = torch.zeros(n + k, n + k, dtype=torch.long, device=dev)
        ages[:n, :n] = self.ages
        self.ages = ages
        new_sum = torch.zeros_like(c) if variance is None else variance.to(dev, c.dtype)
        self.var_sum = torch.cat([self.var_sum, new_sum])
        new_count = torch.full((k,), 0 if variance is None else 1, dtype=torch.long, device=dev)
        self.var_count = torch.cat([self.var_count, new_count])
        self.n_nodes = n + k
        return torch.arange(n, n + k, device=dev)

    # ---------------------------------------------------------------- (de)serialisation
    KEYS = ("centroids", "labels", "edges", "ages", "var_sum", "var_count")

    def state_dict(self) -> dict[str, Any]:
        self._need_nodes("state_dict")
        out: dict[str, Any] = {k: getattr(self, k).clone() for k in self.KEYS}
        out["min_var"] = self.min_var
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [k for k in self.KEYS if k not in state]
        if missing:
            raise UsageError(
                f"NeuralGas.load_state_dict: the state lacks {', '.join(missing)}: "
                "give a dict from NeuralGas.state_dict()"
            )
        c = state["centroids"]
        if not isinstance(c, torch.Tensor) or c.dim() != 2:
            raise UsageError("NeuralGas.load_state_dict: centroids must be a 2-D tensor")
        n, d = c.shape
        shapes = {"labels": (n,), "edges": (n, n), "ages": (n, n), "var_sum": (n, d), "var_count": (n,)}
        for k, shape in shapes.items():
            if not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != shape:
                raise UsageError(
                    f"NeuralGas.load_state_dict: {k} must have shape {shape} for {n} "
                    f"nodes of {d} features: the state is corrupt"
                )
        for k in self.KEYS:
            setattr(self, k, state[k].clone())
        self.edges = self.edges.bool()
        self.n_nodes = n
        self.min_var = float(state.get("min_var", self.min_var))

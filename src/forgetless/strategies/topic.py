"""TOPIC: the topology-preserving knowledge incrementer of few-shot class-incremental learning.

X. Tao, X. Hong, X. Chang, S. Dong, X. Wei, Y. Gong, "Few-Shot Class-Incremental Learning",
CVPR 2020. The knowledge of the classes seen so far is a neural gas (NG, ``forgetless.neural_gas``)
over the backbone's features f(x; theta) (here: the input of the model's last nn.Linear). Each node
j is v_j = (m_j, Lambda_j, z_j, c_j): centroid m_j, diagonal variance Lambda_j, an anchor image z_j
(the training example nearest to m_j) and its label c_j.

Base session (task 0)
    The loop trains backbone and output layer with the cross-entropy. Then the NG is fit on the
    base features (``nodes_per_class`` x base classes nodes, the rank-based update with competitive
    Hebbian edges, Martinetz & Schulten's annealing); for each node, z_j is the training example of
    its Voronoi cell nearest to the NG centroid, c_j that example's label, Lambda_j the
    per-dimension variance of the cell (``NeuralGas.variance``). A base class left without a node
    (possible with a small gas) gets one, anchored at its example nearest to its mean feature.

Later sessions (the K shots of N new classes)
    Growth: one node per new class, anchored at its shot nearest to the mean feature of its K
    shots, with Lambda = the per-dimension variance of those shots (the mean variance of the old
    nodes when K = 1); CHL then connects the new nodes to the gas (``learn_edges``). The loss is

        loss = CE(shots) + lam_al * l_AL + lam_mml * l_MML

    NG stabilization, the anchor loss, over the nodes from earlier sessions (m_j^{t-1}: their
    centroids at the start of the session):

        l_AL = mean_j mean_k (f_k(z_j; theta) - m_jk^{t-1})^2 / lambda_jk

    (a Mahalanobis distance with the node's variance: a feature dimension along which the node's
    cell is spread may move more than one along which it is tight).

    NG adaptation, the min-max loss, over the new examples (x, y) of the batch, with d the Euclidean
    distance, j+ the node of class y nearest to f(x) and xi the margin:

        l_MML = mean_(x,y) [ d(f(x), m_j+) + sum_{i: c_i != y} max(0, xi - d(f(x), m_i)) ]

    the "min" part pulls a new example onto its class's node, the "max" part pushes it out of the
    margin of every node of another class.

Centroids
    Every node's centroid is the feature of its anchor image, m_j = f(z_j; theta), set at the end of
    each session with the trained network (so the anchor loss is exactly 0 when a session starts,
    and measures the drift of the old nodes; the nodes move only as far as it lets them).

Prediction
    The label of the nearest node: score_c(x) = -min_{j: c_j = c} d(f(x), m_j) (-inf for classes
    without a node); before the NG exists (the untrained row and the base session), the logits.

Where the paper leaves details open (our choices)
    - The anchor loss and the min-max loss are *means* (over nodes and dimensions; over examples),
      so lam_al and lam_mml do not depend on the number of nodes or the feature width; the paper
      writes sums.
    - m_j = f(z_j; theta) rather than the NG's own centroid (see Centroids): the NG chooses the
      representatives (where the paper's Figure 1 contrasts NG with randomly sampled exemplars) and
      their topology; keeping the gas's centroid would make the anchor loss start above 0.
    - One new node per new class; centroids are fixed while their session trains.
    - xi is set from the data: ``margin`` times the mean distance from each base node to its
      nearest other node (the NG's typical edge length), since the paper gives no scale for it.
    - The NG is fit on at most ``ng_samples`` base features (drawn with the run's generator) for
      ``ng_epochs`` passes.
    - The anchor images z_j are a small memory (one training example per node), as in the paper.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UsageError
from ..neural_gas import NeuralGas
from .base import Param, Strategy
from .icarl import features, last_linear


def anchor_loss(f_anchor: torch.Tensor, centroids: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """mean_j mean_k (f_jk - m_jk)^2 / lambda_jk: the NG stabilization term (module docstring)."""
    return ((f_anchor - centroids) ** 2 / variance).mean()


def node_means(f: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """[n, d]: the mean of the rows of f owned by each node (``owner``: node index of each row)."""
    total = f.new_zeros(n, f.shape[1]).index_add(0, owner, f)
    count = f.new_zeros(n).index_add(0, owner, f.new_ones(len(owner)))
    return total / count.clamp_min(1)[:, None]


def min_max_loss(
    f: torch.Tensor, y: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor, xi: float
) -> torch.Tensor:
    """mean over rows of [ d(f, m_j+) + sum_{i: c_i != y} max(0, xi - d(f, m_i)) ] (module docstring),
    d Euclidean, j+ the nearest node with the row's label (every row's class must have a node)."""
    d = torch.cdist(f, centroids)  # [B, n]
    same = labels[None, :] == y[:, None]
    pull = d.masked_fill(~same, float("inf")).min(1).values
    push = ((xi - d).clamp_min(0) * (~same)).sum(1)
    return (pull + push).mean()


def nearest_node_scores(f: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor, n_outputs: int) -> torch.Tensor:
    """[B, n_outputs]: -min over the nodes of class c of d(f, m_j); -inf for classes with no node."""
    d = torch.cdist(f, centroids)
    out = torch.full((f.shape[0], n_outputs), float("-inf"), device=f.device, dtype=d.dtype)
    return out.scatter_reduce(1, labels[None, :].expand_as(d), -d, reduce="amax", include_self=True)


VAR_FLOOR = 0.01  # lambda_jk >= 1 % of the gas's mean variance (a dead ReLU unit has variance 0)


class Topic(Strategy):
    """TOPIC (Tao et al. 2020); see the module docstring."""

    name = "topic"
    family = "fscil"
    scenarios = ("class",)
    help = (
        "TOPIC (FSCIL): neural gas over the features, anchor loss on old nodes + min-max loss on new "
        "ones, nearest-node prediction (class-IL)"
    )
    params = {
        "nodes_per_class": Param(10, ">=1", "NG nodes per base class (the base gas has this x base classes)"),
        "lam_al": Param(1.0, ">=0", "weight of the anchor loss (NG stabilization)"),
        "lam_mml": Param(0.1, ">=0", "weight of the min-max loss (NG adaptation)"),
        "margin": Param(1.0, ">=0", "xi of the min-max loss, in units of the base NG's mean nearest-node distance"),
        "ng_epochs": Param(2, ">=1", "passes of the NG over the base features"),
        "ng_samples": Param(5000, ">=2", "at most this many base features fit the NG"),
    }

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.ng_: dict[str, torch.Tensor] | None = None  # NeuralGas.state_dict()
        self.anchors_: torch.Tensor | None = None  # [A, ...] the anchor images
        self.owner_: torch.Tensor | None = None  # [A] the node of each anchor image
        self.xi_: float | None = None
        self._gas: NeuralGas | None = None
        self._hook = None
        self._caught: list[torch.Tensor] = []
        self._old = 0  # nodes from earlier sessions (anchored in the current one)
        self._old_anchors = 0  # their anchor images (the first ones)

    # ---- the gas --------------------------------------------------------------------------
    @property
    def gas(self) -> NeuralGas | None:
        if self._gas is None and self.ng_ is not None:
            self._gas = NeuralGas(max(2, self.ng_["centroids"].shape[0]))
            self._gas.load_state_dict(self.ng_)
        return self._gas

    def _store(self, gas: NeuralGas) -> None:
        self._gas, self.ng_ = gas, gas.state_dict()

    def _fit_base(self, ctx, task) -> None:
        data = task.train
        n_nodes = self.nodes_per_class * len(task.classes)
        if len(data) < n_nodes:
            raise UsageError(
                f"topic: the base session has {len(data)} training examples, fewer than its "
                f"{n_nodes} NG nodes; lower nodes_per_class"
            )
        x = data.x
        phi = features(ctx.model, x).float()
        y = data.y.to(phi.device)
        pick = ctx.put(torch.randperm(len(data), generator=ctx.generator, device="cpu")[: self.ng_samples])
        seed = int(torch.randint(2**31 - 1, (1,), generator=ctx.generator, device="cpu"))
        gas = NeuralGas(n_nodes)
        gas.fit(phi[pick], epochs=self.ng_epochs, seed=seed)
        gas.reset_variance()
        gas.observe(phi)
        # z_j: the example of node j's Voronoi cell nearest to its centroid
        d = gas.distances(phi)  # [N, n]
        own = d.argmin(1)[:, None] == torch.arange(n_nodes, device=d.device)[None, :]
        d = d.masked_fill(~own, float("inf"))
        keep = torch.isfinite(d.min(0).values)  # nodes whose cell is not empty
        z = d.argmin(0)[keep]
        variance = gas.variance[keep]
        for c in task.classes:  # a class the gas left without a node gets one, at its example nearest its mean
            if not bool((y[z] == c).any()):
                rows = (y == c).nonzero().flatten()
                j = rows[torch.cdist(phi[rows], phi[rows].mean(0, keepdim=True)).argmin()]
                z = torch.cat([z, j[None]])
                variance = torch.cat([variance, phi[rows].var(0, unbiased=False).clamp_min(gas.min_var)[None]])
        base = NeuralGas(max(2, len(z)))
        base.add_nodes(phi[z], y[z], variance)
        base.learn_edges(phi[pick])
        dc = torch.cdist(phi[z], phi[z])
        dc.fill_diagonal_(float("inf"))
        self.xi_ = float(self.margin * dc.min(1).values.mean())
        self.anchors_, self.owner_ = x[z].clone(), torch.arange(len(z), device=z.device)
        self._store(base)

    def _grow(self, ctx, task) -> None:
        """One node per new class, anchored at its K shots: m = their mean feature."""
        gas = self.gas
        data = task.train
        phi = features(ctx.model, data.x).float()
        y = data.y.to(phi.device)
        fill = gas.variance.mean(0)
        classes = y.unique()
        owner = gas.size + torch.searchsorted(classes, y)
        means = torch.stack([phi[y == c].mean(0) for c in classes])
        var = torch.stack(
            [
                (phi[y == c].var(0, unbiased=False) if int((y == c).sum()) > 1 else fill).clamp_min(gas.min_var)
                for c in classes
            ]
        )
        gas.add_nodes(means, classes, var)
        gas.learn_edges(phi)
        self.anchors_ = torch.cat([self.anchors_, data.x.to(self.anchors_.device)])
        self.owner_ = torch.cat([self.owner_, owner.to(self.owner_.device)])
        self._store(gas)

    def _reembed(self, ctx) -> None:
        """m_j = mean f(z; theta) over node j's anchor images, for every node (after a session)."""
        gas = self.gas
        gas.centroids = node_means(features(ctx.model, self.anchors_).float(), self.owner_, gas.size)
        self._store(gas)

    # ---- hooks ------------------------------------------------------------------------------
    def before_task(self, ctx, task):
        if task.id > 0 and self.ng_ is not None and len(task.train):
            self._old, self._old_anchors = self.gas.size, len(self.anchors_)
            var = self.gas.variance
            self._var = var.clamp_min(VAR_FLOOR * float(var.mean()))
            self._grow(ctx, task)
            self._attach(ctx)

    def _attach(self, ctx) -> None:
        self._detach()
        self._caught.clear()
        self._hook = last_linear(ctx.model).register_forward_hook(
            lambda mod, inputs, output: self._caught.append(inputs[0])
        )

    def _detach(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._caught.clear()

    def penalty(self, ctx, batch, out):
        if self._hook is None or not self._caught:
            return None
        f = self._caught[-1].flatten(1).float()
        self._caught.clear()
        gas = self.gas
        loss = f.new_zeros(())
        if self.lam_mml > 0:
            loss = loss + self.lam_mml * min_max_loss(f, batch.y, gas.centroids, gas.labels, self.xi_)
        if self.lam_al > 0 and self._old > 0:
            ctx.model(self.anchors_[: self._old_anchors])
            fz = node_means(self._caught[-1].flatten(1).float(), self.owner_[: self._old_anchors], self._old)
            self._caught.clear()
            loss = loss + self.lam_al * anchor_loss(fz, gas.centroids[: self._old], self._var[: self._old])
        return loss

    def after_task(self, ctx, task):
        self._detach()
        if not len(task.train):
            return
        if task.id == 0 or self.ng_ is None:
            self._fit_base(ctx, task)
        else:
            self._reembed(ctx)

    def predict(self, ctx, x):
        gas = self.gas
        if gas is None:
            return ctx.model(x)
        f = features(ctx.model, x).float()
        return nearest_node_scores(f, gas.centroids, gas.labels, ctx.benchmark.n_outputs)

    def state_dict(self) -> dict[str, Any]:
        return {"ng_": self.ng_, "anchors_": self.anchors_, "owner_": self.owner_, "xi_": self.xi_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ng_, self.anchors_, self.owner_, self.xi_ = (
            state["ng_"],
            state["anchors_"],
            state["owner_"],
            state["xi_"],
        )
        self._gas = None


__all__ = ["Topic", "anchor_loss", "min_max_loss", "nearest_node_scores", "node_means"]

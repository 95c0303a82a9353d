"""Replay memory: a fixed-capacity buffer of (x, y, t), exemplar sets, and herding selection.

- ``ReplayBuffer(capacity, policy)`` keeps at most ``capacity`` examples with their label ``y`` and
  task index ``t``:

  * ``"reservoir"``: Vitter's algorithm R. The n-th example of the stream is stored while the
    buffer is not full; afterwards it replaces a uniformly chosen slot with probability
    ``capacity / n``. Every example of the stream is then in the buffer with the same probability
    ``capacity / n`` (uniform over the stream, whatever its order).
  * ``"balanced"``: equal slots for every class seen. When the buffer is full, an example of a
    class that is not among the largest evicts a random example of the largest class (ties between
    largest classes broken at random); an example of a largest class enters by reservoir sampling
    within its class (probability ``slots of its class / examples of its class seen``). Class sizes
    then differ by at most one, and each class keeps a uniform sample of its own examples.

  * ``"greedy"``: GDumb's greedy class-balancing sampler (Prabhu et al. 2020): like ``"balanced"``
    while the buffer fills and when an example of a smaller class evicts one of the largest class,
    but an example of a largest class is simply not stored (no reservoir within the class).

  ``sample(n, generator)`` draws a batch without replacement. All randomness comes from the
  ``torch.Generator`` passed in (the run's ``ctx.generator``), so runs are reproducible.

  Optional extra per-example tensors (``add(..., logits=z)``: DER's stored logits) travel with
  their example: stored in the same slot, in ``buffer.extra[name]`` ([capacity, ...] on the data's
  device), kept through ``state_dict``. ``draw(n, generator)`` gives the slots of a sample (CPU
  indices, for methods that read or rewrite extras of the examples they replay).
- ``ExemplarSet``: per-class exemplars in priority order (iCaRL's sets P_y): ``reduce(m)`` keeps the
  first m of every class, as iCaRL's ReduceExemplarSet does.
- ``herding(features, m)``: iCaRL's exemplar selection (Rebuffi et al. 2017, Algorithm 4).

Each class has ``state_dict`` / ``load_state_dict`` over plain tensors and numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .devices import put
from .errors import UsageError

POLICIES = ("reservoir", "balanced")
BUFFER_POLICIES = POLICIES + ("greedy",)  # greedy: GDumb's sampler (not offered to ER's ``sampling``)


def check_memory(memory: Any, who: str) -> int:
    """``memory`` as a positive integer, or a one-line UsageError naming the strategy."""
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < 1:
        raise UsageError(f"{who}: memory must be an integer >= 1 (examples kept in total), got {memory!r}")
    return memory


def _randint(high: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(high, (1,), generator=generator, device="cpu"))


def _unique_counts(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sorted distinct values of ``v`` and how often each occurs (``v.unique(return_counts=True)``)."""
    values, counts = torch.unique(v, return_counts=True)  # (torch.unique is typed as Any)
    return values, counts


class ReplayBuffer:
    """A fixed-capacity memory of examples ``(x, y, t)`` (see the module docstring for the policies)."""

    def __init__(self, capacity: int, policy: str = "reservoir"):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise UsageError(f"the replay memory must hold at least 1 example, got {capacity!r}")
        if policy not in BUFFER_POLICIES:
            raise UsageError(f"unknown memory policy {policy!r}; choose one of: {', '.join(BUFFER_POLICIES)}")
        self.capacity, self.policy = capacity, policy
        self.x: torch.Tensor | None = None  # [capacity, ...] once the first example arrives (on its device)
        self.y = torch.zeros(capacity, dtype=torch.long, device="cpu")
        self.t = torch.zeros(capacity, dtype=torch.long, device="cpu")
        # a CPU copy of y: the balanced policy's bookkeeping
        self.labels = torch.zeros(capacity, dtype=torch.long, device="cpu")
        self.size = 0
        self.seen = 0  # examples offered so far (the stream length n)
        self.class_seen: dict[int, int] = {}  # balanced: examples offered per class
        self.extra: dict[str, torch.Tensor] = {}  # optional per-example tensors (e.g. logits), [capacity, ...]

    def __len__(self) -> int:
        return self.size

    # ---- filling ----------------------------------------------------------------------------
    def _allocate(self, x: torch.Tensor) -> None:
        self.x = torch.zeros((self.capacity, *x.shape[1:]), dtype=x.dtype, device=x.device)
        self.y, self.t = self.y.to(x.device), self.t.to(x.device)

    def _store(
        self,
        slot: int,
        x: torch.Tensor,
        y: int,
        t: int,
        label: int | None = None,
        extra: dict[str, torch.Tensor] | None = None,
    ) -> None:
        assert self.x is not None  # add() allocates before storing
        self.x[slot], self.y[slot], self.t[slot] = x, y, t
        for name, value in (extra or {}).items():
            self.extra[name][slot] = value
        if label is not None:
            self.labels[slot] = label

    def _copy(
        self,
        dst: torch.Tensor,
        src: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        extra: dict[str, torch.Tensor],
    ) -> None:
        assert self.x is not None  # add() allocates before copying
        self.x[dst], self.y[dst], self.t[dst] = x[src], y[src], t[src]
        for name, value in extra.items():
            self.extra[name][dst] = value[src]

    def _check_extra(self, extra: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
        if set(extra) != set(self.extra) and (self.size or self.extra):
            raise ValueError(f"this buffer stores the extras {sorted(self.extra)}, got {sorted(extra)}")
        out: dict[str, torch.Tensor] = {}
        for name, value in extra.items():
            value = value.detach()
            if len(value) != n:
                raise ValueError(f"extra {name!r} has {len(value)} rows for {n} examples")
            if name not in self.extra:
                assert self.x is not None  # add() allocates before checking the extras
                self.extra[name] = torch.zeros(
                    (self.capacity, *value.shape[1:]), dtype=value.dtype, device=self.x.device
                )
            out[name] = value.to(self.extra[name].dtype)
        return out

    def add(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        generator: torch.Generator | None = None,
        **extra: torch.Tensor,
    ) -> None:
        """Offer a batch of examples to the buffer, in order (a stream); ``extra``: per-example
        tensors stored with them (the same names at every call)."""
        x, y, t = x.detach(), y.detach().long(), t.detach().long()
        if len(x) == 0:
            return
        if self.x is None:
            self._allocate(x)
        extra = self._check_extra(extra, len(x))
        if self.policy == "reservoir":
            self._add_reservoir(x, y, t, generator, extra)
        else:
            ys, ts = y.tolist(), t.tolist()  # (the balanced policy decides example by example on the host)
            for i in range(len(x)):
                self._add_balanced(x[i], ys[i], ts[i], generator, {k: v[i] for k, v in extra.items()})

    def _add_reservoir(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        generator: torch.Generator | None,
        extra: dict[str, torch.Tensor],
    ) -> None:
        n = len(x)
        position = self.seen + torch.arange(1, n + 1, device="cpu")  # each example's 1-based place in the stream
        # algorithm R: the k-th example draws j uniform in [0, k) and replaces slot j if j < capacity
        # (the draws are independent of earlier replacements, so they can be made at once). All of
        # this is decided on the host with CPU tensors; only the copies touch the device.
        j = (torch.rand(n, generator=generator, dtype=torch.float64, device="cpu") * position.double()).long()
        j = torch.minimum(j, position - 1)  # guards the (measure-zero) rounding up to k
        self.seen += n
        fill = position <= self.capacity  # the buffer is not full yet: the k-th example goes to slot k-1
        if fill.any():
            src = put(fill.nonzero().flatten(), x.device)
            slots = put(position[fill] - 1, x.device)
            self._copy(slots, src, x, y, t, extra)
            self.size = int(position[fill].max())
        replace = ((~fill) & (j < self.capacity)).nonzero().flatten()  # in stream order
        if len(replace):
            # a later example overwrites an earlier one that drew the same slot: keep the last writer
            slots = j[replace]
            last = {int(s): i for i, s in zip(replace.tolist(), slots.tolist())}
            src = put(torch.tensor(list(last.values()), dtype=torch.long, device="cpu"), x.device)
            dst = put(torch.tensor(list(last.keys()), dtype=torch.long, device="cpu"), x.device)
            self._copy(dst, src, x, y, t, extra)

    def _add_balanced(
        self, x: torch.Tensor, y: int, t: int, generator: torch.Generator | None, extra: dict[str, torch.Tensor]
    ) -> None:
        self.seen += 1
        self.class_seen[y] = self.class_seen.get(y, 0) + 1
        if self.size < self.capacity:
            self._store(self.size, x, y, t, y, extra)
            self.size += 1
            return
        labels = self.labels[: self.size]
        classes, counts = _unique_counts(labels)
        largest = int(counts.max())
        own = int((labels == y).sum())
        if own < largest:  # evict a random example of (one of) the largest class(es)
            big = classes[counts == largest]
            victim = int(big[_randint(len(big), generator)])
            slots = (labels == victim).nonzero().flatten()
            self._store(int(slots[_randint(len(slots), generator)]), x, y, t, y, extra)
        elif self.policy == "balanced":  # reservoir sampling within its own class (greedy: not stored)
            j = _randint(self.class_seen[y], generator)
            if j < own:
                slots = (labels == y).nonzero().flatten()
                self._store(int(slots[j]), x, y, t, y, extra)

    # ---- reading ----------------------------------------------------------------------------
    def draw(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The slots (CPU indices) of min(n, size) distinct stored examples, uniformly at random."""
        if self.size == 0:
            raise ValueError("the replay buffer is empty")
        return torch.randperm(self.size, generator=generator, device="cpu")[: min(n, self.size)]

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A batch of min(n, size) distinct stored examples, uniformly at random: (x, y, t)."""
        slots = self.draw(n, generator)  # (raises on an empty buffer; a non-empty one has its x)
        assert self.x is not None
        idx = put(slots, self.x.device)
        return self.x[idx], self.y[idx], self.t[idx]

    def tensors(self) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Everything stored: (x, y, t); x is None before the first example arrives."""
        if self.x is None:
            return None, self.y[:0], self.t[:0]
        return self.x[: self.size], self.y[: self.size], self.t[: self.size]

    def class_counts(self) -> dict[int, int]:
        classes, counts = _unique_counts(self.y[: self.size])
        return {int(c): int(k) for c, k in zip(classes, counts)}

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        x, y, t = self.tensors()
        return {
            "capacity": self.capacity,
            "policy": self.policy,
            "seen": self.seen,
            "x": None if x is None else x.clone(),
            "y": y.clone(),
            "t": t.clone(),
            "extra": {k: v[: self.size].clone() for k, v in self.extra.items()},
            "class_seen": torch.tensor(sorted(self.class_seen.items()), dtype=torch.long, device="cpu").reshape(-1, 2),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        type(self).__init__(self, int(state["capacity"]), state["policy"])
        self.seen = int(state["seen"])
        self.class_seen = {int(c): int(k) for c, k in state["class_seen"].tolist()}
        if state["x"] is not None:
            n = len(state["y"])
            self._allocate(state["x"])
            assert self.x is not None
            self.x[:n], self.y[:n], self.t[:n] = state["x"], state["y"].to(self.x.device), state["t"].to(self.x.device)
            self.labels[:n] = state["y"].cpu()
            self.size = n
            for name, value in state.get("extra", {}).items():
                self.extra[name] = torch.zeros(
                    (self.capacity, *value.shape[1:]), dtype=value.dtype, device=self.x.device
                )
                self.extra[name][:n] = value.to(self.x.device)


def herding(features: torch.Tensor, m: int) -> torch.Tensor:
    """iCaRL's herding (Rebuffi et al. 2017, Alg. 4): indices of ``m`` exemplars in priority order.

    With phi(x) the L2-normalised features and mu = (1/n) sum_x phi(x) the class mean,

        p_k = argmin_{x not yet chosen} || mu - (1/k) (phi(x) + sum_{j<k} phi(p_j)) ||,  k = 1..m,

    so every prefix p_1..p_k approximates the class mean as well as greedily possible. Ties go to the
    lowest index; ``m`` larger than n returns all n indices.
    """
    phi = torch.nn.functional.normalize(features.detach().double().flatten(1), dim=1)
    n = len(phi)
    m = min(int(m), n)
    mu = phi.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(mu)  # sum of the chosen features
    available = torch.ones(n, dtype=torch.bool, device=phi.device)
    for k in range(1, m + 1):
        dist = ((mu - (running + phi) / k) ** 2).sum(1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        available[i] = False
        running += phi[i]
    return torch.tensor(chosen, dtype=torch.long, device=features.device)


class ExemplarSet:
    """Exemplars per class in priority order (iCaRL's P_1..P_s), each with its task index."""

    def __init__(self) -> None:
        self.x: dict[int, torch.Tensor] = {}
        self.t: dict[int, int] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self.x.values())

    @property
    def classes(self) -> list[int]:
        return sorted(self.x)

    def set(self, cls: int, x: torch.Tensor, task: int) -> None:
        self.x[int(cls)], self.t[int(cls)] = x.detach().clone(), int(task)

    def reduce(self, m: int) -> None:
        """Keep the first ``m`` exemplars of every class (ReduceExemplarSet)."""
        for c in self.x:
            self.x[c] = self.x[c][:m]

    def tensors(self, classes: Iterable[int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(x, y, t) of the exemplars of ``classes`` (default: all), class by class; None if there are none."""
        classes = self.classes if classes is None else [c for c in classes if c in self.x]
        if not classes:
            return None
        x = torch.cat([self.x[c] for c in classes])
        y = torch.cat([torch.full((len(self.x[c]),), c, dtype=torch.long, device=x.device) for c in classes])
        t = torch.cat([torch.full((len(self.x[c]),), self.t[c], dtype=torch.long, device=x.device) for c in classes])
        return x, y, t

    def state_dict(self) -> dict[str, Any]:
        return {"x": {c: v.clone() for c, v in self.x.items()}, "t": dict(self.t)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.x = {int(c): v.clone() for c, v in state["x"].items()}
        self.t = {int(c): int(v) for c, v in state["t"].items()}

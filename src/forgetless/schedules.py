"""Learning-rate schedules within a task, restarting at every task.

Continual-learning protocols train every task as a fresh optimisation problem with the same
schedule: DER / Mammoth's ResNet-18 protocol on Split CIFAR-10 (Buzzega et al. 2020) is SGD for
50 epochs per task with the rate divided by 10 at epochs 35 and 45; iCaRL's (Rebuffi et al. 2017)
70 epochs with /5 at 49 and 63; cosine annealing is PyCIL's and many later works' choice. With
``lr`` the configured rate (``--lr``), k the position within the current task and K its length:

- ``none``: lr (the optimizer's rate is never touched: today's behaviour).
- ``milestones`` (``--milestones m1,m2,...``, ``--lr-decay gamma``, default 0.1):
  ``lr * gamma ** #{i : m_i <= k}``; k counts **epochs** of the task with ``--epochs`` (the rate
  changes at the start of epoch m_i, numbered from 0: PyTorch's MultiStepLR stepped once per
  epoch) and **optimizer steps** of the task with ``--iterations``.
- ``cosine``: ``lr * (1 + cos(pi * k / K)) / 2`` with k the optimizer steps done in the task and K
  the task's steps (per step with ``--epochs`` too: a smooth decay even over one epoch), from lr at
  the first step towards 0 (SGDR's annealing without restarts within a task, Loshchilov & Hutter 2017).

The rate is a pure function of the position (the loop's ``ctx.step`` and epoch, restored on
resume), so a resumed run sees the same rates; ``state_dict`` records the schedule and its last
position for the checkpoint and is checked on load.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from .errors import UsageError

SCHEDULES = ("none", "milestones", "cosine")
DEFAULT_DECAY = 0.1


def lr_at(
    kind: str, lr: float, k: int, total: int, milestones: list[int] | None = None, decay: float = DEFAULT_DECAY
) -> float:
    """The rate at position ``k`` of ``total`` (see the module docstring)."""
    if kind == "none":
        return lr
    if kind == "milestones":
        return lr * decay ** sum(1 for m in milestones or () if m <= k)
    if kind == "cosine":
        return lr * (1 + math.cos(math.pi * k / max(total, 1))) / 2
    raise UsageError(f"unknown learning-rate schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")


class TaskSchedule:
    """Sets the optimizer's rate before every step of a task (``set``).

    ``unit``: "epoch" or "step", the clock of the milestones (cosine always counts steps)."""

    def __init__(
        self, kind: str, lr: float, milestones: list[int] | None = None, decay: float | None = None, unit: str = "epoch"
    ):
        if kind not in SCHEDULES:
            raise UsageError(f"unknown learning-rate schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
        if unit not in ("epoch", "step"):
            raise ValueError(f"unit must be 'epoch' or 'step', got {unit!r}")
        self.kind, self.lr, self.unit = kind, float(lr), unit
        self.milestones = list(milestones or [])
        self.decay = DEFAULT_DECAY if decay is None else float(decay)
        self.position = (0, 0, 0)  # (task, step, epoch) of the last rate set

    def rate(self, step: int, epoch: int, total_steps: int) -> float:
        """The rate before step ``step`` (steps done in the task) of epoch ``epoch``."""
        k = epoch if self.kind == "milestones" and self.unit == "epoch" else step
        return lr_at(self.kind, self.lr, k, total_steps, self.milestones, self.decay)

    def set(self, optimizer: torch.optim.Optimizer, step: int, epoch: int, total_steps: int, task: int = 0) -> float:
        value = self.rate(step, epoch, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = value
        self.position = (task, step, epoch)
        return value

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "lr": self.lr,
            "milestones": list(self.milestones),
            "decay": self.decay,
            "unit": self.unit,
            "position": list(self.position),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        differ = [k for k in ("kind", "lr", "milestones", "decay", "unit") if state.get(k) != mine[k]]
        if differ:
            raise UsageError(
                f"the checkpoint's learning-rate schedule differs in {', '.join(differ)}; resume with the same options"
            )
        self.position = tuple(state["position"])


def make_schedule(
    kind: str, lr: float, milestones: list[int] | None, decay: float | None, iterations: int | None
) -> TaskSchedule | None:
    """The run's schedule, or None for ``none`` (the loop then never touches the rate)."""
    if kind == "none":
        return None
    return TaskSchedule(kind, lr, milestones, decay, unit="step" if iterations else "epoch")


def parse_milestones(value) -> list[int] | None:
    """``"35,45"``, ``[35, 45]`` or ``35`` -> [35, 45]; None stays None; anything else a UsageError."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    out = []
    for p in parts:
        try:
            if isinstance(p, bool) or (isinstance(p, float) and not p.is_integer()):
                raise ValueError
            out.append(int(p))
        except (TypeError, ValueError):
            raise UsageError(f"--milestones {value!r}: write increasing positive integers, e.g. 35,45") from None
    if not out or any(m < 1 for m in out) or any(b <= a for a, b in itertools.pairwise(out)):
        raise UsageError(f"--milestones {value!r}: write increasing positive integers, e.g. 35,45")
    return out


__all__ = ["SCHEDULES", "TaskSchedule", "lr_at", "make_schedule", "parse_milestones"]

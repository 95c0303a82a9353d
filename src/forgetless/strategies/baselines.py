"""Baselines: naive fine-tuning (``Strategy`` itself), joint training and cumulative training."""

from __future__ import annotations

import torch

from ..data.base import TensorData
from .base import Strategy


def union(tasks) -> tuple[TensorData, torch.Tensor]:
    """All training data of ``tasks`` in one set, with each sample's task index."""
    return TensorData.cat([t.train for t in tasks]), torch.cat([t.ids() for t in tasks])


class Naive(Strategy):
    """Fine-tuning: train on each task in turn with nothing against forgetting (the lower bound)."""

    task_free = True


class Joint(Strategy):
    """Joint (multi-task) training: one model trained on every task's data at once.

    It trains at the first task on the union of all tasks and keeps that model afterwards, so every
    row of its accuracy matrix is the same: the usual upper bound. With ``iterations`` N per task it
    trains T·N steps (the compute of the T-task runs it bounds; epochs already do this). With
    ``first_tasks=k`` it trains on tasks 1..k only: the reference a*_k of intransigence.
    """

    name = "joint"
    help = "all tasks' data at once (the upper bound; needs every task in advance)"

    def trains_upto(self, ctx, task):
        return len(ctx.benchmark.tasks) - 1

    def train_data(self, ctx, task):
        return union(ctx.benchmark.tasks) if task.id == 0 else None


class Cumulative(Strategy):
    """Cumulative training: task k trains on the data of tasks 1..k (starting from the current model)."""

    name = "cumulative"
    help = "each task trains on all the data seen so far (stores everything)"

    def train_data(self, ctx, task):
        return union(ctx.benchmark.tasks[: task.id + 1])

"""The prototype classifier of few-shot class-incremental learning: a frozen backbone and cosine
nearest-class-mean prediction."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import Strategy
from .icarl import features


def add_class_means(table: torch.Tensor | None, phi: torch.Tensor, y: torch.Tensor, classes, n_outputs: int):
    """``table`` [n_outputs, d] (NaN rows: no prototype yet; made on the first call) with row c set to
    the mean of the rows of ``phi`` labelled c, for every c in ``classes`` that has one."""
    if table is None:
        table = torch.full((n_outputs, phi.shape[1]), float("nan"), device=phi.device)
    for c in classes:
        rows = y == c
        if bool(rows.any()):
            table[c] = phi[rows].mean(0)
    return table


class Prototype(Strategy):
    """Prototype (nearest class mean) classifier over a backbone frozen after the base session.

    Sources: prototypical networks (Snell, Swersky & Zemel 2017, "Prototypical Networks for
    Few-shot Learning": a class is represented by the mean embedding of its examples), the cosine
    classifier with normalised prototypes of few-shot learning (Chen et al. 2019, "A Closer Look at
    Few-shot Classification", Baseline++), and for FSCIL the "decoupled" prototype baselines that
    beat the earlier incremental methods: Zhang et al. 2021 (CEC, "Few-Shot Incremental Learning with
    Continually Evolved Classifiers": its decoupled baselines, a frozen backbone with a cosine
    prototype classifier, already above TOPIC on CIFAR-100, miniImageNet and CUB-200) and Zhou et al.
    2022 ("Forward Compatible Few-Shot Class-Incremental Learning", the ProtoNet baseline).

    - Session 1 (task 0): the model trains as usual (the loop's cross-entropy over the base classes).
    - Later sessions: no training at all (``train_data`` returns None): the backbone and its
      output layer stay as they were after the base session.
    - After every session, each of its classes c gets the prototype
          p_c = (1/|D_c|) sum_{x in D_c} phi(x) / ||phi(x)||
      over its training examples D_c (all of them in the base session, the K shots later), where
      phi(x) is the input of the model's last nn.Linear (``icarl.features``: the penultimate layer).
    - Prediction: score_c(x) = cos(phi(x), p_c) = phi(x).p_c / (||phi(x)|| ||p_c||) for every class
      that has a prototype; -inf for the others (unseen classes). Before the first prototype exists
      (evaluation during the base session) it predicts with the model's logits.
    """

    name = "prototype"
    family = "fscil"
    scenarios = ("class",)
    help = (
        "prototype classifier (FSCIL): train on the base session, then freeze the backbone; cosine "
        "similarity to each class's mean normalised feature (class-IL)"
    )

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.prototypes_: torch.Tensor | None = None  # [n_outputs, d]; NaN rows: classes without one

    def train_data(self, ctx, task):
        return super().train_data(ctx, task) if task.id == 0 else None

    def after_task(self, ctx, task):
        data = task.train
        if not len(data):
            return
        phi = F.normalize(features(ctx.model, data.x), dim=1)
        self.prototypes_ = add_class_means(self.prototypes_, phi, data.y, task.classes, ctx.benchmark.n_outputs)

    def predict(self, ctx, x):
        if self.prototypes_ is None:
            return ctx.model(x)
        phi = features(ctx.model, x)
        protos = self.prototypes_
        missing = protos.isnan().any(1)
        cos = F.normalize(phi, dim=1) @ F.normalize(protos.nan_to_num(0.0), dim=1).T
        return cos.masked_fill(missing[None, :], float("-inf"))


__all__ = ["Prototype"]

"""Input normalisation with a dataset's channel mean and standard deviation, as a model's first layer.

Built into the model (not into the data pipeline) so that everything that calls the model sees the
same input: training, evaluation, importance estimation (Fisher, MAS, ...), exemplar features, the
old model of distillation methods and generated samples (DGR) alike. The statistics are buffers:
they travel in the model's state dict and never receive gradients.

The values are the published per-channel statistics of each training set, for pixels in [0, 1]:

- CIFAR-10: mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616): the population std over
  the 50,000 training images (the often-quoted (0.2023, 0.1994, 0.2010) is a per-image std
  averaged, not the dataset's; kuangliu/pytorch-cifar issue 19).
- CIFAR-100: mean (0.5071, 0.4865, 0.4409), std (0.2673, 0.2564, 0.2762).
- MNIST: mean 0.1307, std 0.3081 (the values of the PyTorch MNIST example).
- Fashion-MNIST: mean 0.2860, std 0.3530.
- scikit-learn digits (forgetless's 1,437-image training split, pixels / 16): mean 0.3054, std 0.3761,
  computed here (no published value).

A sequence of datasets (``mnist-fashion-mnist``) uses the pooled statistics of its datasets (equal
weights: each has 60,000 training images): mean = the average of the means, variance = the average
of the variances plus the variance of the means.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import UsageError

STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "digits": ((0.3054,), (0.3761,)),
}


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; ``mean`` and ``std`` are buffers of shape [1, C, 1, 1]."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        if len(mean) != len(std) or not mean:
            raise UsageError(f"normalisation needs one mean and one std per channel, got {mean} and {std}")
        if any(not s > 0 for s in std):
            raise UsageError(f"normalisation: every std must be positive, got {std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        if x.dim() == 4 and x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"Normalize holds {self.mean.shape[1]} channel(s), the input has {x.shape[1]}")
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def pooled(names: list[str]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The statistics of several equally large datasets taken together (see the module docstring)."""
    stats = [STATS[n] for n in names]
    channels = {len(m) for m, _ in stats}
    if len(channels) != 1:
        raise UsageError(
            f"datasets {', '.join(names)} have different channel counts; they cannot be normalised together"
        )
    mean, std = [], []
    for c in range(channels.pop()):
        ms = [m[c] for m, _ in stats]
        vs = [s[c] ** 2 for _, s in stats]
        mu = sum(ms) / len(ms)
        mean.append(mu)
        std.append(math.sqrt(sum(vs) / len(vs) + sum((m - mu) ** 2 for m in ms) / len(ms)))
    return tuple(mean), tuple(std)


def dataset_stats(datasets: str | list[str]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel of a dataset name (a key of ``STATS``) or of several pooled."""
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    unknown = [n for n in names if n not in STATS]
    if unknown:
        raise UsageError(
            f"no normalisation statistics for dataset {unknown[0]!r}; known: {', '.join(STATS)}; use --normalize off"
        )
    return STATS[names[0]] if len(names) == 1 else pooled(names)

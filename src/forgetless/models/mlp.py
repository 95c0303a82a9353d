"""The MLP: the lecture's 784-1024-512-256-10 network (any hidden widths)."""

from __future__ import annotations

from torch import nn


class MLP(nn.Module):
    """Flatten, then Linear+ReLU for every hidden width, then a Linear to the logits.

    ``normalize``: an optional first layer (``Normalize``) applied before flattening; None (the
    default, today's behaviour) feeds the pixels in [0, 1] unchanged.
    """

    def __init__(self, in_features: int, hidden: list[int], n_outputs: int, normalize: nn.Module | None = None):
        super().__init__()
        if normalize is not None:
            self.normalize = normalize
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            in_features = width
        layers.append(nn.Linear(in_features, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        if "normalize" in self._modules:
            x = self.normalize(x)
        return self.net(x)

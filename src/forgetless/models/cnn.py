"""A small CNN: two conv blocks and a 256-unit layer."""

from __future__ import annotations

from torch import nn

from ..errors import UsageError


class CNN(nn.Module):
    """Two 3x3 conv blocks (32, 64 channels, ReLU, 2x2 max-pool), a 256-unit layer, the logits.

    ``normalize``: an optional first layer (``Normalize``); None (the default) keeps the pixels as they are.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        n_outputs: int,
        channels=(32, 64),
        hidden=256,
        normalize: nn.Module | None = None,
    ):
        super().__init__()
        if normalize is not None:
            self.normalize = normalize
        c, h, w = input_shape
        blocks: list[nn.Module] = []
        for out_c in channels:
            blocks += [nn.Conv2d(c, out_c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = out_c, h // 2, w // 2
        if h < 1 or w < 1:
            raise UsageError(
                f"cnn: images of {input_shape[1]}x{input_shape[2]} are too small for "
                f"{len(channels)} pooling layers; use --model mlp"
            )
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, n_outputs))

    def forward(self, x):
        if "normalize" in self._modules:
            x = self.normalize(x)
        return self.head(self.features(x))

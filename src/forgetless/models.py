"""Models: an MLP (the lecture's 1024-512-256 by default) and a small CNN.

Input and output sizes come from the benchmark. Any ``nn.Module`` that maps a batch of images
[N, C, H, W] to logits [N, n_outputs] works: scenario masking is done by the loop, not the model.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .errors import UsageError

DEFAULT_MODEL = "mlp:1024,512,256"


class MLP(nn.Module):
    """Flatten, then Linear+ReLU for every hidden width, then a Linear to the logits."""

    def __init__(self, in_features: int, hidden: list[int], n_outputs: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            in_features = width
        layers.append(nn.Linear(in_features, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    """Two 3x3 conv blocks (32, 64 channels, ReLU, 2x2 max-pool), a 256-unit layer, the logits."""

    def __init__(self, input_shape: tuple[int, ...], n_outputs: int, channels=(32, 64), hidden=256):
        super().__init__()
        c, h, w = input_shape
        blocks: list[nn.Module] = []
        for out_c in channels:
            blocks += [nn.Conv2d(c, out_c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = out_c, h // 2, w // 2
        if h < 1 or w < 1:
            raise UsageError(f"cnn: images of {input_shape[1]}x{input_shape[2]} are too small for "
                             f"{len(channels)} pooling layers; use --model mlp")
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(),
                                  nn.Linear(hidden, n_outputs))

    def forward(self, x):
        return self.head(self.features(x))


def build_model(spec: str, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """``mlp:1024,512,256`` (hidden widths; ``mlp:`` for none) or ``cnn``."""
    kind, _, rest = spec.partition(":")
    if kind == "mlp":
        try:
            hidden = [int(w) for w in rest.split(",") if w.strip()] if rest else [1024, 512, 256]
        except ValueError:
            raise UsageError(f"--model {spec!r}: hidden widths must be integers, e.g. mlp:1024,512,256") from None
        if any(w < 1 for w in hidden):
            raise UsageError(f"--model {spec!r}: hidden widths must be positive")
        return MLP(math.prod(input_shape), hidden, n_outputs)
    if kind == "cnn":
        if rest:
            raise UsageError(f"--model {spec!r}: cnn takes no options; use --model cnn")
        if len(input_shape) != 3:
            raise UsageError(f"cnn needs images [C, H, W], the benchmark gives {input_shape}")
        return CNN(tuple(input_shape), n_outputs)
    raise UsageError(f"unknown model {spec!r}; use mlp:W1,W2,... (e.g. {DEFAULT_MODEL}) or cnn")


def check_model(model: nn.Module, input_shape: tuple[int, ...], n_outputs: int) -> None:
    """One forward pass on a zero batch: the input must fit and the output must be [2, n_outputs]."""
    try:
        with torch.no_grad():
            first = next(iter(model.parameters()), None)
            out = model(torch.zeros(2, *input_shape, device=first.device if first is not None else None))
    except Exception as e:  # noqa: BLE001 - any failure means the model does not fit
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"the model does not accept the benchmark's input {tuple(input_shape)}: {first}") from None
    if not isinstance(out, torch.Tensor) or out.shape != (2, n_outputs):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(f"the model must return logits of shape [N, {n_outputs}] for this benchmark, "
                         f"it returns {got} for a batch of 2")

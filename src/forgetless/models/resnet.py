"""CIFAR-style residual networks: ResNet-18 (GEM / DER / Mammoth) and ResNet-20/32 (He et al. 2016).

Both keep the image's resolution in a 3x3 stride-1 first convolution (no 7x7 stride-2 stem, no
max-pool: ImageNet's stem would shrink a 32x32 image to 8x8 before the first block), then stages of
BasicBlocks (two 3x3 convolutions with batch norm; ``out = relu(bn2(conv2(relu(bn1(conv1(x))))) +
shortcut(x))``, He et al. 2016, "Deep Residual Learning for Image Recognition", Fig. 2), a global
average pool (``AdaptiveAvgPool2d(1)``, so any input of [C, H, W] with 1 or 3 channels and 28x28 to
64x64 pixels works) and one linear layer to the logits.

Every model exposes ``normalize`` (when built with one: ``Normalize``, the first layer),
``features`` (everything up to the pooled, flattened feature vector) and ``head`` (the output
``nn.Linear``, the last ``nn.Linear`` of the model: iCaRL and BiC take its input as the feature
vector, ``strategies/icarl.py``). Convolutions have no bias (batch norm follows each); their weights
are initialised as He et al. 2015 ("Delving Deep into Rectifiers": normal, std sqrt(2 / fan_out)),
batch norm with weight 1 and bias 0, the linear head with PyTorch's default.

**ResNet-18** (``resnet18``, ``resnet18:nf=N``): the CIFAR ResNet-18 of GEM (Lopez-Paz & Ranzato
2017, its ``model/common.py``), DER (Buzzega et al. 2020) and Mammoth: BasicBlocks [2, 2, 2, 2] of
widths nf, 2nf, 4nf, 8nf (strides 1, 2, 2, 2), nf = 64 by default; the shortcut of a block that
changes width or resolution is a 1x1 convolution with stride and batch norm (He et al.'s option B),
as in those implementations. ``nf=20`` is GEM's reduced ResNet-18. Parameter counts (3 input
channels; tested in tests/test_models.py):

    resnet18 (nf=64), 10 classes:   11,173,962   (the published 11.17M of this network)
    resnet18 (nf=64), 100 classes:  11,220,132
    resnet18:nf=20, 10 classes:      1,094,750
    resnet18:nf=20, 100 classes:     1,109,240   (GEM's reduced ResNet-18 on CIFAR-100)

**ResNet-20 / ResNet-32** (``resnet20``, ``resnet32``, width option ``nf`` = 16 by default): He et
al. 2016, Section 4.2: a 3x3 convolution to 16 channels, then 3 stages of n BasicBlocks each
(n = 3 for ResNet-20, n = 5 for ResNet-32; depth 6n + 2) with 16, 32, 64 channels (strides 1, 2, 2),
global average pool, the linear head. Shortcuts are identities; where a stage halves the resolution
and doubles the width, the shortcut subsamples with stride 2 and pads the new channels with zeros
(He et al.'s **option A**, parameter-free). Option A because it is what He et al. used for their
CIFAR networks ("we use identity shortcuts in all cases (i.e., option A)"), so the parameter counts
match their Table 6 (0.27M, 0.46M), and it is the ResNet-32 of the iCaRL/PyCIL reproductions
(PyCIL's ``resnet32``); some code bases (LUCIR, FACIL) use a 1x1 projection instead (+2,752
parameters). ResNet-32 is the network of iCaRL, BiC and LUCIR on CIFAR-100; ResNet-20 that of
few-shot class-incremental work (TOPIC, CEC). Parameter counts (3 input channels):

    resnet20, 10 classes:   269,722    resnet20, 100 classes:   275,572   (He et al.: 0.27M)
    resnet32, 10 classes:   464,154    resnet32, 100 classes:   470,004   (He et al.: 0.46M)

(One input channel instead of three: 2 * 9 * nf weights fewer in the first convolution.)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class ShortcutA(nn.Module):
    """He et al.'s option A: ``x[:, :, ::s, ::s]`` with ``extra`` zero channels appended (split
    evenly before and after the existing ones); no parameters."""

    def __init__(self, extra: int, stride: int):
        super().__init__()
        self.extra, self.stride = extra, stride

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        lo = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, lo, self.extra - lo))


class BasicBlock(nn.Module):
    """Two 3x3 conv + batch norm, ReLU between and after the sum with the shortcut.

    ``shortcut``: "B" (1x1 conv + batch norm where the shape changes) or "A" (``ShortcutA``)."""

    def __init__(self, in_c: int, out_c: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, out_c, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_c)
        self.conv2 = nn.Conv2d(out_c, out_c, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_c)
        if stride == 1 and in_c == out_c:
            self.shortcut = nn.Identity()
        elif shortcut == "B":
            self.shortcut = nn.Sequential(nn.Conv2d(in_c, out_c, 1, stride=stride, bias=False), nn.BatchNorm2d(out_c))
        else:
            self.shortcut = ShortcutA(out_c - in_c, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet: 3x3 stem, stages of BasicBlocks, global average pool, linear head.

    ``blocks``: blocks per stage; ``widths``: channels per stage (the stem has ``widths[0]``); the
    first stage keeps the resolution, every later one halves it (stride 2 in its first block).
    """

    def __init__(
        self,
        in_channels: int,
        blocks: list[int],
        widths: list[int],
        n_outputs: int,
        shortcut: str,
        normalize: nn.Module | None = None,
    ):
        super().__init__()
        if normalize is not None:
            self.normalize = normalize
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        ]
        c = widths[0]
        for stage, (n, width) in enumerate(zip(blocks, widths)):
            for i in range(n):
                layers.append(BasicBlock(c, width, 2 if stage > 0 and i == 0 else 1, shortcut))
                c = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.feature_dim = c
        self.head = nn.Linear(c, n_outputs)
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        if "normalize" in self._modules:
            x = self.normalize(x)
        return self.head(self.features(x))


def resnet18(in_channels: int, n_outputs: int, nf: int = 64, normalize: nn.Module | None = None) -> ResNet:
    """The CIFAR ResNet-18 of GEM / DER / Mammoth (option-B shortcuts), widths nf, 2nf, 4nf, 8nf."""
    return ResNet(in_channels, [2, 2, 2, 2], [nf, 2 * nf, 4 * nf, 8 * nf], n_outputs, "B", normalize)


def cifar_resnet(
    depth: int, in_channels: int, n_outputs: int, nf: int = 16, normalize: nn.Module | None = None
) -> ResNet:
    """He et al. 2016's CIFAR ResNet of ``depth`` = 6n + 2 layers (20: n = 3, 32: n = 5), option-A shortcuts."""
    n = (depth - 2) // 6
    return ResNet(in_channels, [n, n, n], [nf, 2 * nf, 4 * nf], n_outputs, "A", normalize)

"""In-memory datasets: two tensors, never a per-sample __getitem__ on the hot path.

Images are kept as they are stored (``raw``): uint8 pixels with their divisor ``scale`` (255 for
IDX and CIFAR files, 16 for scikit-learn's digits), so a dataset resident on a GPU takes a quarter
of the memory of float32, and each batch is scaled when it is taken (``take``). Data that is float
to begin with (rotated images, a user's tensors) has ``scale`` None and is used as it is.
"""
from __future__ import annotations

import torch


class TensorData:
    """Images (``take(index)`` / ``x``: float32 [N, C, H, W] in [0, 1]) and labels ``y`` (int64, [N])."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, scale: float | None = None):
        if len(x) != len(y):
            raise ValueError(f"{len(x)} inputs but {len(y)} labels")
        if scale is None and not x.is_floating_point():
            raise ValueError("integer images need their divisor: TensorData(x, y, scale=255)")
        self.raw, self.y, self.scale = x, y, (float(scale) if scale is not None else None)

    def __len__(self) -> int:
        return len(self.y)

    def _float(self, raw: torch.Tensor) -> torch.Tensor:
        return raw if self.scale is None else raw.to(torch.float32).div_(self.scale)

    def take(self, index) -> torch.Tensor:
        """The images at ``index`` (a LongTensor or slice on the data's device), as float32."""
        return self._float(self.raw[index])

    @property
    def x(self) -> torch.Tensor:
        """All images as float32 (a new tensor for uint8 data: off the hot path, prefer ``take``)."""
        return self._float(self.raw)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.raw.shape)

    @property
    def device(self) -> torch.device:
        return self.raw.device

    def subset(self, index: torch.Tensor) -> "TensorData":
        return TensorData(self.raw[index], self.y[index], self.scale)

    def with_labels(self, y: torch.Tensor) -> "TensorData":
        return TensorData(self.raw, y, self.scale)

    @staticmethod
    def cat(parts: list["TensorData"]) -> "TensorData":
        """One set from several (kept uint8 when every part has the same divisor, else float32)."""
        scales = {p.scale for p in parts}
        if len(scales) == 1:
            return TensorData(torch.cat([p.raw for p in parts]), torch.cat([p.y for p in parts]), scales.pop())
        return TensorData(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))

    def to(self, device) -> "TensorData":
        """The same data on ``device`` (itself when it is already there)."""
        device = torch.device(device)
        if self.raw.device == device and self.y.device == device:
            return self
        return TensorData(self.raw.to(device), self.y.to(device), self.scale)

"""Training augmentation on the batch's device: random crop with zero padding and horizontal flip.

The protocol of the CIFAR literature (He et al. 2016, Section 4.2: "4 pixels are padded on each
side, and a 32x32 crop is randomly sampled from the padded image or its horizontal flip"; the same
in iCaRL, DER/Mammoth, PyCIL, FACIL): for every sample independently,

    padded = x with ``padding`` zero pixels on every side          (size (H + 2p) x (W + 2p))
    (dy, dx) uniform in {0, ..., 2p}^2                              (the crop's offset: -p..p)
    crop[i, j] = padded[dy + i, dx + j]                            (an H x W crop)
    with probability 1/2: out[i, j] = crop[i, W - 1 - j]           (horizontal flip), else out = crop

done for the whole batch at once (one ``gather``; no Python loop over samples), in the batch's
dtype (float or uint8: the zero padding is black either way) and on its device. The random draws
come from the augmentation's own ``torch.Generator``, created on the batch's device when first used
and seeded from the run's seed (``seed + SEED_OFFSET``, so that it is not the same stream as the
run's batch order), three draws per batch (dy, dx, flip); its state goes into every checkpoint
(``state_dict``), so a resumed run continues with the same crops and flips.

The loop applies it (``ctx.augment``) to the training batch after ``adapt_batch``, so replayed
samples are augmented like the current ones; never at evaluation, nor where a method computes
importances or exemplar features. ``--augment auto`` (the default) is ``crop-flip`` for the CIFAR
datasets and ``none`` for MNIST-like data and digits (whose protocols do not augment, and where a
flip changes the meaning of a digit).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .errors import UsageError

AUGMENTS = ("auto", "none", "crop-flip")
CROP_FLIP_DATASETS = ("cifar10", "cifar100")
SEED_OFFSET = 0x9E3779B9  # (the golden-ratio constant: any fixed value apart from small seeds)


def resolve(choice: str, datasets: list[str] | None) -> str:
    """``none`` or ``crop-flip`` for ``--augment choice`` on a benchmark over ``datasets`` (None:
    unknown, e.g. a benchmark object of the user's, for which ``auto`` means ``none``)."""
    if choice not in AUGMENTS:
        raise UsageError(f"--augment must be one of {', '.join(AUGMENTS)}, got {choice!r}")
    if choice != "auto":
        return choice
    return "crop-flip" if datasets and all(d in CROP_FLIP_DATASETS for d in datasets) else "none"


class CropFlip:
    """Random crop with ``padding`` zero pixels and a horizontal flip with probability 1/2, per
    sample (see the module docstring); ``flip=False`` crops only. Call it on a batch [N, C, H, W]."""

    def __init__(self, seed: int, padding: int = 4, flip: bool = True):
        if padding < 0:
            raise UsageError(f"crop padding must be >= 0, got {padding}")
        self.seed, self.padding, self.flip = int(seed), int(padding), bool(flip)
        self.generator: torch.Generator | None = None
        self._saved: dict[str, Any] | None = None  # a loaded state, applied when the generator is made

    def _generator(self, device: torch.device) -> torch.Generator:
        g = self.generator
        if g is not None and g.device == device:
            return g
        g = torch.Generator(device=device)
        g.manual_seed((self.seed + SEED_OFFSET) % (1 << 63))
        saved, self._saved = self._saved, None
        if saved is not None and saved.get("device_type") == device.type and saved.get("state") is not None:
            g.set_state(saved["state"])
        self.generator = g
        return g

    def draw(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The random choices for ``n`` samples: row offsets, column offsets (0..2p) and flips (bool)."""
        g = self._generator(torch.device(device))
        span = 2 * self.padding + 1
        dy = torch.randint(0, span, (n,), generator=g, device=device)
        dx = torch.randint(0, span, (n,), generator=g, device=device)
        flip = torch.randint(0, 2, (n,), generator=g, device=device).bool()
        if not self.flip:
            flip = torch.zeros_like(flip)
        return dy, dx, flip

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise UsageError(
                f"crop-flip augmentation needs image batches [N, C, H, W], got shape {tuple(x.shape)}; "
                f"use --augment none"
            )
        n, _c, _h, _w = x.shape
        dy, dx, flip = self.draw(n, x.device)
        return apply(x, dy, dx, flip, self.padding)

    def state_dict(self) -> dict[str, Any]:
        """The generator's state (None before the first batch) and the device type it belongs to."""
        if self.generator is None:
            return dict(self._saved) if self._saved is not None else {"state": None, "device_type": None}
        return {"state": self.generator.get_state(), "device_type": self.generator.device.type}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (on the same device type; on another one the stream restarts from the seed)."""
        self.generator, self._saved = None, dict(state)


def apply(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, padding: int) -> torch.Tensor:
    """Crop every sample of ``x`` at offsets (dy, dx) of its ``padding``-zero-padded image, then
    flip those with ``flip``: one ``gather`` over the flattened padded images."""
    n, c, h, w = x.shape
    p = padding
    padded = F.pad(x, (p, p, p, p)) if p else x
    wp = w + 2 * p
    rows = dy[:, None] + torch.arange(h, device=x.device)  # [N, H]
    j = torch.arange(w, device=x.device)
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - j, j)  # [N, W]
    index = (rows[:, :, None] * wp + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, index).reshape(n, c, h, w)


def make_augment(choice: str, datasets: list[str] | None, seed: int) -> CropFlip | None:
    """The augmentation of a run (``ctx.augment``), or None for ``none``."""
    return CropFlip(seed) if resolve(choice, datasets) == "crop-flip" else None


__all__ = ["AUGMENTS", "CropFlip", "apply", "make_augment", "resolve"]

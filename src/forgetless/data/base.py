"""In-memory datasets: two tensors, never a per-sample __getitem__ on the hot path.

Images are kept as they are stored (``raw``): uint8 pixels with their divisor ``scale`` (255 for
IDX and CIFAR files, 16 for scikit-learn's digits), so a dataset resident on a GPU takes a quarter
of the memory of float32, and each batch is scaled when it is taken (``take``). Data that is float
to begin with (rotated images, a user's tensors) has ``scale`` None and is used as it is.

A TensorData can be a *view* of images held elsewhere (issue 17: one uint8 copy of a dataset for
all its tasks): ``rows`` picks rows of the stored images (a class subset, a validation split) and
``perm`` permutes the pixels of every image (a permuted task: the flattened C*H*W values, image
``i`` is ``stored[i].flatten()[perm]``; or, with ``perm_ids``, a table of permutations and each
row's entry in it: joint training over the tasks of a permuted benchmark). ``take(index)`` gathers
the batch's rows, then its pixels, then scales: the values are exactly those of a materialised copy, so results do not
change. ``raw`` (and ``x``) of a view materialise it (a new tensor: off the hot path).
"""

from __future__ import annotations

import torch


class TensorData:
    """Images (``take(index)`` / ``x``: float32 [N, C, H, W] in [0, 1]) and labels ``y`` (int64, [N]).

    ``TensorData(x, y, scale)`` holds ``x`` itself; ``rows`` (LongTensor: which rows of ``x``) and
    ``perm`` (LongTensor over the flattened pixels) make it a view of ``x`` instead (module docstring).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        scale: float | None = None,
        *,
        rows: torch.Tensor | None = None,
        perm: torch.Tensor | None = None,
        perm_ids: torch.Tensor | None = None,
    ):
        if len(x if rows is None else rows) != len(y):
            raise ValueError(f"{len(x if rows is None else rows)} inputs but {len(y)} labels")
        if scale is None and not x.is_floating_point():
            raise ValueError("integer images need their divisor: TensorData(x, y, scale=255)")
        if perm is not None and len(x) and perm.shape[-1] != x[0].numel():
            raise ValueError(f"a permutation of {perm.shape[-1]} pixels for images of {tuple(x.shape[1:])}")
        if (perm_ids is not None) != (perm is not None and perm.dim() == 2):
            raise ValueError("a table of permutations (2-D perm) goes with perm_ids, one per row")
        self.stored, self.y, self.scale = x, y, (float(scale) if scale is not None else None)
        self.rows, self.perm, self.perm_ids = rows, perm, perm_ids

    def __len__(self) -> int:
        return len(self.y)

    def _float(self, raw: torch.Tensor) -> torch.Tensor:
        return raw if self.scale is None else raw.to(torch.float32).div_(self.scale)

    def _gather(self, index) -> torch.Tensor:
        """The stored values of this view at ``index`` (rows, then pixels), not yet scaled."""
        raw = self.stored[index] if self.rows is None else self.stored[self.rows[index]]
        if self.perm is not None:
            n, flat = len(raw), raw.reshape(len(raw), -1)
            if self.perm_ids is None:
                flat = flat.index_select(1, self.perm)
            else:  # (in chunks: the index of a gather is int64, 8 bytes a pixel)
                ids, out = self.perm_ids[index], torch.empty_like(flat)
                for i in range(0, n, 8192):
                    torch.gather(flat[i : i + 8192], 1, self.perm[ids[i : i + 8192]], out=out[i : i + 8192])
                flat = out
            raw = flat.reshape(n, *self.stored.shape[1:])
        return raw

    def take(self, index) -> torch.Tensor:
        """The images at ``index`` (a LongTensor, bool mask or slice on the data's device), as float32."""
        return self._float(self._gather(index))

    @property
    def is_view(self) -> bool:
        return self.rows is not None or self.perm is not None

    @property
    def raw(self) -> torch.Tensor:
        """The images as stored (uint8 where the source is); a new tensor for a view."""
        return self._gather(slice(None)) if self.is_view else self.stored

    @property
    def x(self) -> torch.Tensor:
        """All images as float32 (a new tensor for uint8 data: off the hot path, prefer ``take``)."""
        return self._float(self.raw)

    def images(self) -> Images:
        """All images as a float32 *sequence* that converts only what is indexed (``take``): for
        code that reads chunks or a sample of them (importance estimation), without the float32
        copy of the whole set that ``x`` makes."""
        return Images(self)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.stored.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.stored.device

    @property
    def nbytes(self) -> int:
        """Bytes this object holds of its own (a view's rows and labels; the stored images if not a view)."""
        own = (
            [self.y]
            + [t for t in (self.rows, self.perm, self.perm_ids) if t is not None]
            + ([] if self.is_view else [self.stored])
        )
        return sum(t.numel() * t.element_size() for t in own)

    def _view(self, y: torch.Tensor, rows: torch.Tensor | None, pick=None) -> TensorData:
        ids = self.perm_ids if pick is None or self.perm_ids is None else self.perm_ids[pick]
        return TensorData(self.stored, y, self.scale, rows=rows, perm=self.perm, perm_ids=ids)

    def subset(self, index) -> TensorData:
        """The samples at ``index`` (LongTensor, bool mask or slice): a view, no images copied."""
        if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
            index = index.nonzero().flatten()
        elif not isinstance(index, torch.Tensor):
            index = torch.arange(len(self), device=self.y.device)[index]
        index = index.to(self.y.device)
        return self._view(self.y[index], index if self.rows is None else self.rows[index], index)

    def with_labels(self, y: torch.Tensor) -> TensorData:
        return self._view(y, self.rows)

    def permuted(self, perm: torch.Tensor) -> TensorData:
        """Every image's pixels permuted by ``perm`` (over the flattened C*H*W values): a view."""
        perm = perm.to(self.stored.device)
        if self.perm is not None:
            perm = self.perm[..., perm]
        return TensorData(self.stored, self.y, self.scale, rows=self.rows, perm=perm, perm_ids=self.perm_ids)

    @staticmethod
    def cat(parts: list[TensorData]) -> TensorData:
        """One set from several: a view when they are views of the same images (with one pixel
        order, or each part its own: a table of permutations); otherwise a new tensor (uint8 when
        every part has the same divisor, else float32)."""
        first = parts[0]
        if all(p.stored is first.stored and p.scale == first.scale for p in parts):
            rows = torch.cat([p.rows if p.rows is not None else torch.arange(len(p), device=p.y.device) for p in parts])
            y = torch.cat([p.y for p in parts])
            if all(
                (p.perm is None and first.perm is None)
                or (
                    p.perm is not None
                    and first.perm is not None
                    and p.perm_ids is None
                    and first.perm_ids is None
                    and torch.equal(p.perm, first.perm)
                )
                for p in parts
            ):
                return TensorData(first.stored, y, first.scale, rows=rows, perm=first.perm)
            pixels = first.stored[0].numel()
            table, ids = [], []
            for p in parts:  # each part's permutations appended to one table; its rows point into it
                own = (
                    torch.arange(pixels, device=first.stored.device)[None]
                    if p.perm is None
                    else p.perm
                    if p.perm.dim() == 2
                    else p.perm[None]
                )
                local = torch.zeros(len(p), dtype=torch.long, device=p.y.device) if p.perm_ids is None else p.perm_ids
                ids.append(local + sum(len(t) for t in table))
                table.append(own)
            return TensorData(first.stored, y, first.scale, rows=rows, perm=torch.cat(table), perm_ids=torch.cat(ids))
        scales = {p.scale for p in parts}
        if len(scales) == 1:
            return TensorData(torch.cat([p.raw for p in parts]), torch.cat([p.y for p in parts]), scales.pop())
        return TensorData(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))

    def to(self, device, moved: dict | None = None) -> TensorData:
        """The same data on ``device`` (itself when it is already there). ``moved`` (id -> tensor),
        shared between calls, moves images that several views share only once."""
        device = torch.device(device)
        tensors = [t for t in (self.stored, self.y, self.rows, self.perm, self.perm_ids) if t is not None]
        if all(t.device == device for t in tensors):
            return self
        moved = {} if moved is None else moved

        def put(t):
            if t is None:
                return None
            if id(t) not in moved:
                moved[id(t)] = (t, t.to(device))  # (the source is kept, so its id is not reused)
            return moved[id(t)][1]

        return TensorData(
            put(self.stored),
            put(self.y),
            self.scale,
            rows=put(self.rows),
            perm=put(self.perm),
            perm_ids=put(self.perm_ids),
        )


class Images:
    """``TensorData.images()``: ``len``, ``shape``, ``device``, ``dtype`` (float32) and indexing by a
    slice, LongTensor or bool mask, which returns ``data.take(index)`` (a float32 tensor)."""

    dtype = torch.float32

    def __init__(self, data: TensorData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index) -> torch.Tensor:
        return self.data.take(index)

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.data.shape)

    @property
    def ndim(self) -> int:
        return len(self.data.shape)

    @property
    def device(self) -> torch.device:
        return self.data.device
